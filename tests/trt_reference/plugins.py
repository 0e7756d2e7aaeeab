"""Plugin fields, a plugin registry, and reference implementations of the project's plugins (MstLayerNorm, MstL2Norm, MstGelu, MstFfn, MstMsa)."""
from __future__ import annotations

import math
from typing import Any, ClassVar, Iterable, Sequence, TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .dtypes import _coerce_enum, DataType, LayerType, PluginFieldType, TensorRTPhase
from .core import InvalidNetworkError, _Meta, ReferenceLayer, ReferenceTensor, StrongTypingError
from .layers_activation import _A, _activation

if TYPE_CHECKING:  # annotations only: the network imports every layer module
    from .network import ReferenceNetwork


PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""

# --------------------------------------------------------------------------------------------------------------
# Plugins: PluginField(Collection), a registry, and reference implementations of the project's plugins
# --------------------------------------------------------------------------------------------------------------

_FIELD_NUMPY = {
    PluginFieldType.FLOAT16: np.float16, PluginFieldType.FLOAT32: np.float32, PluginFieldType.FLOAT64: np.float64,
    PluginFieldType.INT8: np.int8, PluginFieldType.INT16: np.int16, PluginFieldType.INT32: np.int32,
    PluginFieldType.INT64: np.int64, PluginFieldType.CHAR: np.int8,
}


class PluginField:
    """``trt.PluginField(name, data, type)``; ``data`` is a numpy array (kept as a copy)."""

    def __init__(self, name: str = "", data: Any = None, type: PluginFieldType = PluginFieldType.UNKNOWN) -> None:
        self.name = name
        self.data = None if data is None else np.array(data, copy=True)
        self.type = _coerce_enum(type, PluginFieldType)
        self.size = 0 if self.data is None else int(self.data.size)


class PluginFieldCollection(list):
    """``trt.PluginFieldCollection([fields])``: a list of :class:`PluginField`."""


class _ReferencePlugin:
    """Base of reference plugins: a field schema, build-time checks and a CPU forward."""

    plugin_name: ClassVar[str]
    plugin_version: ClassVar[str] = PLUGIN_VERSION
    plugin_namespace: ClassVar[str] = PLUGIN_NAMESPACE
    FIELDS: ClassVar[dict[str, tuple[PluginFieldType, float | int]]] = {}  # name -> (type, default)
    # Array fields: name -> type. Any length >= 1; required (no default); the value is a flat numpy copy.
    ARRAY_FIELDS: ClassVar[dict[str, PluginFieldType]] = {}
    NUM_INPUTS: ClassVar[int] = 1

    def __init__(self, name: str, fields: Iterable[PluginField]) -> None:
        self.name = name
        self.values: dict[str, Any] = {key: default for key, (_, default) in self.FIELDS.items()}
        for field in fields:
            if field.name not in self.FIELDS and field.name not in self.ARRAY_FIELDS:
                raise InvalidNetworkError(f"{self.plugin_name}: unknown plugin field {field.name!r}")
            is_array = field.name in self.ARRAY_FIELDS
            kind = self.ARRAY_FIELDS[field.name] if is_array else self.FIELDS[field.name][0]
            if field.type != kind or field.data is None or field.data.dtype != np.dtype(_FIELD_NUMPY[kind]):
                got = None if field.data is None else field.data.dtype
                raise StrongTypingError(f"{self.plugin_name}: field {field.name!r} must be {kind.name} "
                                        f"data of numpy {np.dtype(_FIELD_NUMPY[kind])}, got {field.type.name}/{got}")
            if is_array:
                if field.data.size < 1:
                    raise InvalidNetworkError(f"{self.plugin_name}: field {field.name!r} is empty")
                self.values[field.name] = field.data.reshape(-1).copy()
                continue
            if field.data.size != 1:
                raise InvalidNetworkError(f"{self.plugin_name}: field {field.name!r} must hold one value")
            self.values[field.name] = field.data.reshape(-1)[0].item()
        missing = [key for key in self.ARRAY_FIELDS if key not in self.values]
        if missing:
            raise InvalidNetworkError(f"{self.plugin_name}: missing field(s) {', '.join(map(repr, missing))}")
        self.check_fields()

    def check_fields(self) -> None:
        """Creation-time checks of the field values (the C++ creator's); raise InvalidNetworkError."""

    def infer(self, layer: ReferenceLayer, inputs: list[_Meta]) -> list[_Meta]:
        if len(inputs) != self.NUM_INPUTS:
            raise InvalidNetworkError(
                f"{layer.name}: {self.plugin_name} takes {self.NUM_INPUTS} inputs, got {len(inputs)}")
        layer._require(inputs[0].dtype, [DataType.FLOAT, DataType.HALF], f"{self.plugin_name} input x")
        return [_Meta(inputs[0].shape, inputs[0].dtype)]

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError


class _MstLayerNorm(_ReferencePlugin):
    """Inputs x, gamma[C] fp32, beta[C] fp32. layout 0: normalise over the last dim; 1: over dim 1 of NCHW."""

    plugin_name = "MstLayerNorm"
    FIELDS = {"epsilon": (PluginFieldType.FLOAT32, 1e-5), "layout": (PluginFieldType.INT32, 0)}
    NUM_INPUTS = 3

    def infer(self, layer: ReferenceLayer, inputs: list[_Meta]) -> list[_Meta]:
        out = super().infer(layer, inputs)
        x = inputs[0]
        if self.values["layout"] not in (0, 1):
            raise InvalidNetworkError(f"{layer.name}: MstLayerNorm layout must be 0 or 1")
        if self.values["layout"] == 1 and len(x.shape) != 4:
            raise InvalidNetworkError(f"{layer.name}: MstLayerNorm layout 1 needs a 4-D NCHW input, got {x.shape}")
        channels = x.shape[1] if self.values["layout"] == 1 else x.shape[-1]
        for what, m in (("gamma", inputs[1]), ("beta", inputs[2])):
            layer._require(m.dtype, [DataType.FLOAT], f"MstLayerNorm {what}")
            if m.shape != (channels,):
                raise InvalidNetworkError(
                    f"{layer.name}: MstLayerNorm {what} must have shape ({channels},), got {m.shape}")
        return out

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        x, gamma, beta = xs
        dim = 1 if self.values["layout"] == 1 else -1
        view = [1] * x.dim()
        view[dim] = -1
        v = x.float()
        mean = v.mean(dim=dim, keepdim=True)
        var = ((v - mean) ** 2).mean(dim=dim, keepdim=True)
        y = (v - mean) / torch.sqrt(var + self.values["epsilon"]) * gamma.reshape(view) + beta.reshape(view)
        return [y.to(x.dtype)]


class _MstL2Norm(_ReferencePlugin):
    """``y = x / max(||x||_2, eps)`` along the last dim, FP32 accumulation (``F.normalize(dim=-1)``)."""

    plugin_name = "MstL2Norm"
    FIELDS = {"epsilon": (PluginFieldType.FLOAT32, 1e-12)}

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        v = xs[0].float()
        norm = torch.sqrt((v * v).sum(dim=-1, keepdim=True)).clamp_min(self.values["epsilon"])
        return [(v / norm).to(xs[0].dtype)]


class _MstGelu(_ReferencePlugin):
    """Exact GELU ``0.5 x (1 + erf(x / sqrt 2))`` computed in FP32."""

    plugin_name = "MstGelu"

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [_activation(_A.GELU_ERF, xs[0].float(), 0.0, 0.0).to(xs[0].dtype)]


class _MstFfn(_ReferencePlugin):
    """MST++ feed-forward half with its residual on NCHW x: ``x + W2 GELU(DW3x3(GELU(W1 LN(x))))``.

    Weights are FP32 array fields (``ln_gamma``/``ln_beta`` [C], ``w1`` [4C, C], ``wdw`` [4C, 3, 3], ``w2``
    [C, 4C]); C = len(ln_gamma) must be 31, 62 or 124 and every other size must match, checked at creation as
    the C++ creator does. Build time: x is 4-D FLOAT/HALF with C channels. Forward: FP32 arithmetic throughout
    (LayerNorm with biased variance, exact GELU, zero-padded depthwise 3x3, residual from x), rounded once to x's
    dtype - the contract of ``mstpp_ffn_nchw``.
    """

    plugin_name = "MstFfn"
    FIELDS = {"epsilon": (PluginFieldType.FLOAT32, 1e-5)}
    ARRAY_FIELDS = {key: PluginFieldType.FLOAT32 for key in ("ln_gamma", "ln_beta", "w1", "wdw", "w2")}
    CHANNELS: ClassVar[tuple[int, ...]] = (31, 62, 124)

    def check_fields(self) -> None:
        eps = self.values["epsilon"]
        if not (math.isfinite(eps) and eps >= 0):
            raise InvalidNetworkError(f"MstFfn: epsilon must be finite and >= 0, got {eps}")
        c = self.values["ln_gamma"].size
        if c not in self.CHANNELS:
            raise InvalidNetworkError(f"MstFfn: C (the length of ln_gamma) must be 31, 62 or 124, got {c}")
        for key, formula, n in (("ln_beta", "C", c), ("w1", "4*C*C", 4 * c * c), ("wdw", "4*C*9", 4 * c * 9),
                                ("w2", "C*4*C", 4 * c * c)):
            if self.values[key].size != n:
                raise InvalidNetworkError(f"MstFfn: field {key!r} must hold {formula} = {n} values for C = {c}, "
                                          f"got {self.values[key].size}")

    @property
    def channels(self) -> int:
        return int(self.values["ln_gamma"].size)

    def infer(self, layer: ReferenceLayer, inputs: list[_Meta]) -> list[_Meta]:
        out = super().infer(layer, inputs)
        x = inputs[0]
        if len(x.shape) != 4 or x.shape[1] != self.channels:
            raise InvalidNetworkError(f"{layer.name}: MstFfn needs a 4-D NCHW x with {self.channels} channels "
                                      f"(the length of ln_gamma), got {x.shape}")
        return out

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        x = xs[0]
        c, v = self.channels, x.float()
        w = {key: torch.from_numpy(self.values[key]) for key in self.ARRAY_FIELDS}
        mean = v.mean(dim=1, keepdim=True)
        var = ((v - mean) ** 2).mean(dim=1, keepdim=True)
        h = (v - mean) / torch.sqrt(var + self.values["epsilon"])
        h = h * w["ln_gamma"].view(1, c, 1, 1) + w["ln_beta"].view(1, c, 1, 1)
        h = _activation(_A.GELU_ERF, F.conv2d(h, w["w1"].view(4 * c, c, 1, 1)), 0.0, 0.0)
        h = _activation(_A.GELU_ERF, F.conv2d(h, w["wdw"].view(4 * c, 1, 3, 3), padding=1, groups=4 * c), 0.0, 0.0)
        y = v + F.conv2d(h, w["w2"].view(c, 4 * c, 1, 1))
        return [y.to(x.dtype)]


class _MstMsa(_ReferencePlugin):
    """MST++ spectral attention half with its residual on NCHW x: ``x + SpectralMSA(x)`` (official ``MS_MSA``).

    Weights are FP32 array fields in the argument order of ``mstpp_msa_nchw``: ``wq``, ``wk``, ``wv`` [C, C]
    (``to_q/to_k/to_v.weight``), ``rescale`` [C/31], ``wproj`` [C, C], ``bproj`` [C], ``wpos1``, ``wpos2``
    [C, 3, 3] (``pos_emb.0/.2.weight``); C = len(bproj) must be 31, 62 or 124 and every other size must match,
    checked at creation as the C++ creator does. No epsilon field (the q/k norms clamp at 1e-12, as
    ``F.normalize``). Build time: x is 4-D FLOAT/HALF with C channels. Forward: FP32 arithmetic, the operations
    of ``architecture.mst_plus_plus.SpectralMSA.forward`` in its order (q/k/v as 1x1 convolutions, per-head rows
    over the H*W pixels L2-normalised, ``softmax(rescale * k q^T)``, ``attn v``, proj with bias, depthwise
    3x3 -> GELU -> depthwise 3x3 on v), plus x, rounded once to x's dtype - the contract of ``mstpp_msa_nchw``
    (whose FP16/BF16 path rounds some operands to 16 bits on tensor cores; this reference does not).
    """

    plugin_name = "MstMsa"
    ARRAY_FIELDS = {key: PluginFieldType.FLOAT32
                    for key in ("wq", "wk", "wv", "rescale", "wproj", "bproj", "wpos1", "wpos2")}
    CHANNELS: ClassVar[tuple[int, ...]] = (31, 62, 124)
    HEAD_DIM: ClassVar[int] = 31

    def check_fields(self) -> None:
        c = self.values["bproj"].size
        if c not in self.CHANNELS:
            raise InvalidNetworkError(f"MstMsa: C (the length of bproj) must be 31, 62 or 124, got {c}")
        for key, formula, n in (("wq", "C*C", c * c), ("wk", "C*C", c * c), ("wv", "C*C", c * c),
                                ("rescale", "C/31", c // self.HEAD_DIM), ("wproj", "C*C", c * c),
                                ("wpos1", "C*9", c * 9), ("wpos2", "C*9", c * 9)):
            if self.values[key].size != n:
                raise InvalidNetworkError(f"MstMsa: field {key!r} must hold {formula} = {n} values for C = {c}, "
                                          f"got {self.values[key].size}")

    @property
    def channels(self) -> int:
        return int(self.values["bproj"].size)

    def infer(self, layer: ReferenceLayer, inputs: list[_Meta]) -> list[_Meta]:
        out = super().infer(layer, inputs)
        x = inputs[0]
        if len(x.shape) != 4 or x.shape[1] != self.channels:
            raise InvalidNetworkError(f"{layer.name}: MstMsa needs a 4-D NCHW x with {self.channels} channels "
                                      f"(the length of bproj), got {x.shape}")
        return out

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        x = xs[0]
        c, v32 = self.channels, x.float()
        b, _, h, w = v32.shape
        heads, d = c // self.HEAD_DIM, self.HEAD_DIM
        wt = {key: torch.from_numpy(self.values[key]) for key in self.ARRAY_FIELDS}

        def pointwise(t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
            return F.conv2d(t, weight.view(c, c, 1, 1), bias)

        def per_head(t: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, heads, 31, N]
            return t.reshape(b, heads, d, h * w)

        def l2_normalize(t: torch.Tensor) -> torch.Tensor:
            return t / torch.linalg.vector_norm(t, ord=2, dim=-1, keepdim=True).clamp_min(1e-12)

        v_img = pointwise(v32, wt["wv"])
        q = l2_normalize(per_head(pointwise(v32, wt["wq"])))
        k = l2_normalize(per_head(pointwise(v32, wt["wk"])))
        attn = ((k @ q.transpose(-2, -1)) * wt["rescale"].view(1, heads, 1, 1)).softmax(dim=-1)  # [B, h, d, d]
        out = (attn @ per_head(v_img)).reshape(b, c, h, w)
        pos = F.conv2d(v_img, wt["wpos1"].view(c, 1, 3, 3), padding=1, groups=c)
        pos = F.conv2d(_activation(_A.GELU_ERF, pos, 0.0, 0.0), wt["wpos2"].view(c, 1, 3, 3), padding=1, groups=c)
        y = v32 + pointwise(out, wt["wproj"], wt["bproj"]) + pos
        return [y.to(x.dtype)]


class _PluginCreator:
    """``IPluginCreatorV3One`` subset: ``name``, ``plugin_version``, ``field_names``, ``create_plugin``."""

    def __init__(self, plugin_cls: type[_ReferencePlugin]) -> None:
        self._cls = plugin_cls
        self.name = plugin_cls.plugin_name
        self.plugin_version = plugin_cls.plugin_version
        self.plugin_namespace = plugin_cls.plugin_namespace
        self.field_names = PluginFieldCollection(
            [PluginField(key, None, kind) for key, (kind, _) in plugin_cls.FIELDS.items()]
            + [PluginField(key, None, kind) for key, kind in plugin_cls.ARRAY_FIELDS.items()])

    def create_plugin(self, name: str, field_collection: Iterable[PluginField],
                      phase: TensorRTPhase = TensorRTPhase.BUILD) -> _ReferencePlugin:
        _coerce_enum(phase, TensorRTPhase)
        return self._cls(name, field_collection)


class _PluginRegistry:
    """``IPluginRegistry`` subset; ``get_creator`` returns None for unknown (name, version, namespace)."""

    def __init__(self, plugins: Iterable[type[_ReferencePlugin]]) -> None:
        self._creators = {(p.plugin_name, p.plugin_version, p.plugin_namespace): _PluginCreator(p) for p in plugins}

    @property
    def all_creators(self) -> list[_PluginCreator]:
        return list(self._creators.values())

    def get_creator(self, name: str, version: str, namespace: str = "") -> _PluginCreator | None:
        return self._creators.get((name, str(version), namespace))


_REGISTRY = _PluginRegistry([_MstLayerNorm, _MstL2Norm, _MstGelu, _MstFfn, _MstMsa])


def get_plugin_registry() -> _PluginRegistry:
    return _REGISTRY


class PluginV3Layer(ReferenceLayer):
    type = LayerType.PLUGIN_V3
    _KIND = "PluginV3"

    def __init__(self, network: ReferenceNetwork, inputs: Sequence[ReferenceTensor], plugin: _ReferencePlugin) -> None:
        if not isinstance(plugin, _ReferencePlugin):
            raise TypeError(f"add_plugin_v3 needs a plugin from ref_trt.get_plugin_registry(), got {plugin!r}")
        super().__init__(network, list(inputs))
        self._plugin = plugin
        self._finish_init()

    @property
    def plugin(self) -> _ReferencePlugin:
        return self._plugin

    @property
    def _MAX_INPUTS(self) -> int:  # type: ignore[override]
        return len(self._inputs)

    def _infer(self) -> list[_Meta]:
        metas = self._plugin.infer(self, [self._in(i) for i in range(len(self._inputs))])
        return [self._meta(m.shape, m.dtype, const=False) for m in metas]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        return self._plugin.forward(list(xs))

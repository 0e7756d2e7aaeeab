"""MST++ written layer by layer with TensorRT's network API (strongly typed).

``build_mstpp_network(trt, network, weights, ...)`` only calls ``network.add_*``, sets layer properties
and reads enums from ``trt``, so the same function fills a TensorRT 10/11 network, a TensorRT-RTX
network, or the reference executor the tests use to check its numerics on the CPU.

Layout: everything stays NCHW. The spectral attention's Linear layers are 1x1 convolutions, each
head's q/k/v is a free reshape to [B, h, 31, N], and k q^T uses the matrix layer's TRANSPOSE flag, so
the attention needs no transpose at all; the only shape tensor is the one that reshapes the attention
output back to [B, C, H, W] when H/W are dynamic.

Precision (strongly typed, docs/DESIGN.md section 6):
  fp32  everything FP32.
  fp16  FP16 activations and weights; FP32 for the L2 sums of squares over H*W (they overflow FP16),
        LayerNorm statistics and softmax, with casts around those regions. I/O stays FP32.
  int8  as fp16, plus explicit Q/DQ on the input and weights of every convolution (per-tensor
        activation scales from calibration, per-output-channel weight scales); LayerNorm, L2Norm,
        softmax and the residual adds never see INT8.
Plugins (need full TensorRT and ``plugins/build/libmstpp_plugins.so``):
  ours   MstLayerNorm, MstL2Norm and MstGelu replace the native layers.
  fused  every MSAB attention half (x + S-MSA(x): q/k/v 1x1, L2 norms, softmax attention, proj, pos_emb) is
         one MstMsa plugin layer and every feed-forward half (LayerNorm -> 1x1 -> GELU -> dw3x3 -> GELU -> 1x1
         -> + x) one MstFfn plugin layer (weights as plugin fields, FP32): 15 of each in MST++; the rest (input
         and output convolutions, down/up-sampling, skip concatenations, stage residuals) uses native layers as
         with ``none``. The plugins run in the activation dtype (FP32, or FP16 in an fp16 network: the
         surrounding FP16 tensor goes in as it is, output FP16, like the ``ours`` plugins). Not offered with
         int8: the attention and FFN convolutions would silently lose their Q/DQ (UserError).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from architecture import parts
from architecture.parts import HEAD_DIM, PAD_MULTIPLE

from ..errors import UserError

INPUT_NAME = "rgb"
OUTPUT_NAME = "cube"
PRECISIONS = ("fp32", "fp16", "int8")
PLUGIN_CHOICES = ("none", "ours", "fused")
INT8_MAX = 127.0


class _Builder:
    """Helpers over one network; every method returns the output ITensor of the layer it adds."""

    def __init__(self, trt, network, weights: Mapping[str, np.ndarray], precision: str, plugins: str,
                 act_amax: Mapping[str, float] | None, keep: list) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if plugins not in PLUGIN_CHOICES:
            raise ValueError(f"plugins must be one of {PLUGIN_CHOICES}, got {plugins!r}")
        if precision == "int8" and plugins == "fused":
            raise UserError("--plugins fused is not available with INT8: the MstMsa and MstFfn plugins compute the "
                            "attention and feed-forward convolutions from FP32 weights without INT8, so they would "
                            "lose their INT8 Q/DQ; use --plugins none or ours for INT8, or FP16/FP32 with fused")
        if precision == "int8" and not act_amax:
            raise ValueError("int8 needs activation ranges from calibration (act_amax)")
        self.trt, self.net, self.w = trt, network, weights
        self.precision, self.plugins = precision, plugins
        self.act_amax = dict(act_amax or {})
        self.half = precision in ("fp16", "int8")
        self.dtype = trt.float16 if self.half else trt.float32
        self.np_dtype = np.float16 if self.half else np.float32
        self.keep = keep  # TensorRT reads weight arrays during the build, not when they are added
        self._count = 0

    # --- basics -----------------------------------------------------------------------------
    def _out(self, layer, name: str):
        self._count += 1
        layer.name = f"{name}#{self._count}"
        return layer.get_output(0)

    def const(self, arr: np.ndarray, name: str):
        arr = np.ascontiguousarray(arr)
        self.keep.append(arr)
        return self._out(self.net.add_constant(arr.shape, arr), name)

    def weight(self, key: str, dtype=None) -> np.ndarray:
        arr = np.ascontiguousarray(self.w[key], dtype=dtype or self.np_dtype)
        self.keep.append(arr)
        return arr

    def cast(self, x, dtype, name: str):
        return x if x.dtype == dtype else self._out(self.net.add_cast(x, dtype), name)

    def ew(self, a, b, op, name: str):
        return self._out(self.net.add_elementwise(a, b, op), name)

    def add(self, a, b, name: str):
        return self.ew(a, b, self.trt.ElementWiseOperation.SUM, name)

    def scalar(self, value: float, rank: int, dtype, name: str):
        np_dtype = np.float16 if dtype == self.trt.float16 else np.float32
        return self.const(np.full((1,) * rank, value, dtype=np_dtype), name)

    # --- convolutions -------------------------------------------------------------------------
    def conv(self, x, key: str, kernel: int, stride: int = 1, pad: int = 0, groups: int = 1,
             bias_key: str | None = None, module: str | None = None, deconv: bool = False):
        """A (transposed) convolution with weights ``key`` (torch layout; Linear weights get 1x1)."""
        w = np.asarray(self.w[key], dtype=np.float32)
        if w.ndim == 2:
            w = w[:, :, None, None]
        out_maps = w.shape[1] * groups if deconv else w.shape[0]
        bias = self.weight(bias_key) if bias_key else None
        module = module or key.rsplit(".", 1)[0]
        add = self.net.add_deconvolution_nd if deconv else self.net.add_convolution_nd
        if self.precision == "int8":
            xq = self.qdq_activation(x, module)
            layer = add(xq, out_maps, (kernel, kernel), self.trt.Weights(), bias)
            layer.set_input(1, self.qdq_weight(w, module, deconv))
        else:
            kern = np.ascontiguousarray(w, dtype=self.np_dtype)
            self.keep.append(kern)
            layer = add(x, out_maps, (kernel, kernel), kern, bias)
        layer.stride_nd = (stride, stride)
        layer.padding_nd = (pad, pad)
        layer.num_groups = groups
        return self._out(layer, module)

    def qdq_activation(self, x, module: str):
        """Per-tensor symmetric INT8 Q/DQ of a convolution input, scale = amax / 127."""
        try:
            amax = float(self.act_amax[module])
        except KeyError:
            raise ValueError(f"no calibration range for {module!r}; recalibrate with calibrator.py") from None
        scale = self.const(np.array(max(amax, 1e-8) / INT8_MAX, dtype=np.float32), f"{module}.act_scale")
        q = self._out(self.net.add_quantize(x, scale, self.trt.int8), f"{module}.act_q")
        return self._out(self.net.add_dequantize(q, scale, self.dtype), f"{module}.act_dq")

    def qdq_weight(self, w: np.ndarray, module: str, deconv: bool):
        """INT8 weights with per-output-channel scales (axis 0 for conv, 1 for deconv), dequantized."""
        axis = 1 if deconv else 0
        reduce_axes = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.maximum(np.abs(w).max(axis=reduce_axes), 1e-8).astype(np.float32)
        scale = amax / INT8_MAX
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.rint(w / scale.reshape(shape)), -128, 127).astype(np.int8)
        qt = self.const(q, f"{module}.w_int8")
        layer = self.net.add_dequantize(qt, self.const(scale, f"{module}.w_scale"), self.dtype)
        layer.axis = axis
        return self._out(layer, f"{module}.w_dq")

    # --- pointwise and normalisation ----------------------------------------------------------
    def gelu(self, x, name: str):
        if self.plugins == "ours":
            return self.plugin("MstGelu", [x], {}, name)
        return self._out(self.net.add_activation(x, self.trt.ActivationType.GELU_ERF), name)

    def layer_norm_channels(self, x, prefix: str):
        """LayerNorm over C of [B, C, H, W] (eps 1e-5), statistics in FP32."""
        if self.plugins == "ours":
            gamma = self.const(self.weight(f"{prefix}.weight", np.float32), f"{prefix}.gamma")
            beta = self.const(self.weight(f"{prefix}.bias", np.float32), f"{prefix}.beta")
            return self.plugin("MstLayerNorm", [x, gamma, beta], {"epsilon": 1e-5, "layout": 1}, prefix)
        c = self.w[f"{prefix}.weight"].shape[0]
        gamma = self.const(self.weight(f"{prefix}.weight", np.float32).reshape(1, c, 1, 1), f"{prefix}.gamma")
        beta = self.const(self.weight(f"{prefix}.bias", np.float32).reshape(1, c, 1, 1), f"{prefix}.beta")
        x32 = self.cast(x, self.trt.float32, f"{prefix}.to_fp32")
        add_norm = getattr(self.net, "add_normalization_v2", None) or self.net.add_normalization
        layer = add_norm(x32, gamma, beta, 1 << 1)
        layer.epsilon = 1e-5
        return self.cast(self._out(layer, prefix), self.dtype, f"{prefix}.to_act")

    def l2_normalize_last(self, x, name: str):
        """x / max(||x||_2, 1e-12) along the last axis; the sum of squares is always FP32."""
        if self.plugins == "ours":
            return self.plugin("MstL2Norm", [x], {"epsilon": 1e-12}, name)
        trt = self.trt
        rank = len(x.shape)
        x32 = self.cast(x, trt.float32, f"{name}.to_fp32")
        sq = self.ew(x32, x32, trt.ElementWiseOperation.PROD, f"{name}.square")
        ssq = self._out(self.net.add_reduce(sq, trt.ReduceOperation.SUM, 1 << (rank - 1), True), f"{name}.sum")
        norm = self._out(self.net.add_unary(ssq, trt.UnaryOperation.SQRT), f"{name}.sqrt")
        norm = self.ew(norm, self.scalar(1e-12, rank, trt.float32, f"{name}.eps"), trt.ElementWiseOperation.MAX,
                       f"{name}.clamp")
        return self.cast(self.ew(x32, norm, trt.ElementWiseOperation.DIV, name), self.dtype, f"{name}.to_act")

    def softmax_last(self, x, name: str):
        x32 = self.cast(x, self.trt.float32, f"{name}.to_fp32")
        layer = self.net.add_softmax(x32)
        layer.axes = 1 << (len(x.shape) - 1)
        return self.cast(self._out(layer, name), self.dtype, f"{name}.to_act")

    def plugin(self, plugin_name: str, inputs: Sequence[Any], fields: Mapping[str, Any], name: str):
        """Our plugin ``plugin_name`` v1. Field values: int -> INT32, float -> FLOAT32, a numpy float32 array
        -> a FLOAT32 array field (kept alive in ``keep`` until the build)."""
        trt = self.trt
        creator = trt.get_plugin_registry().get_creator(plugin_name, "1", "")
        if creator is None:
            raise RuntimeError(f"plugin {plugin_name} v1 is not registered; build it with "
                               "`make -C plugins plugins TENSORRT_ROOT=...` and load libmstpp_plugins.so")
        collection = []
        for k, v in fields.items():
            if isinstance(v, np.ndarray):
                data = np.ascontiguousarray(v, dtype=np.float32).reshape(-1)
            else:
                data = np.array([v], dtype=np.int32 if isinstance(v, int) else np.float32)
            self.keep.append(data)
            kind = trt.PluginFieldType.INT32 if data.dtype == np.int32 else trt.PluginFieldType.FLOAT32
            collection.append(trt.PluginField(k, data, kind))
        plugin = creator.create_plugin(name, trt.PluginFieldCollection(collection), trt.TensorRTPhase.BUILD)
        return self._out(self.net.add_plugin_v3(list(inputs), [], plugin), name)

    # --- shapes -------------------------------------------------------------------------------
    def reshape(self, x, dims: Sequence[int], name: str):
        layer = self.net.add_shuffle(x)
        layer.reshape_dims = tuple(dims)
        return self._out(layer, name)

    def reshape_like(self, x, like, name: str):
        """Reshape ``x`` to the runtime shape of ``like`` (static dims when known)."""
        if all(d >= 0 for d in like.shape):
            return self.reshape(x, like.shape, name)
        layer = self.net.add_shuffle(x)
        layer.set_input(1, self._out(self.net.add_shape(like), f"{name}.shape"))
        return self._out(layer, name)

    # --- MST++ blocks (part names: architecture.parts) ----------------------------------------
    def spectral_msa(self, x, p: str):
        """S-MSA on [B, C, H, W]: returns proj(attn v) + pos_emb(v) (the block adds the residual)."""
        trt = self.trt
        k = parts.weight_keys(p, parts.ATTENTION_WEIGHTS)
        c = self.w[k["wq"]].shape[0]
        heads = c // HEAD_DIM
        q = self.conv(x, k["wq"], 1)
        kk = self.conv(x, k["wk"], 1)
        v = self.conv(x, k["wv"], 1)
        per_head = (0, heads, HEAD_DIM, -1)  # [B, h, d, N]: a reshape, no data movement
        qn = self.l2_normalize_last(self.reshape(q, per_head, f"{p}.q_heads"), f"{p}.q_norm")
        kn = self.l2_normalize_last(self.reshape(kk, per_head, f"{p}.k_heads"), f"{p}.k_norm")
        mm = self.net.add_matrix_multiply(kn, trt.MatrixOperation.NONE, qn, trt.MatrixOperation.TRANSPOSE)
        gram = self._out(mm, f"{p}.k_qT")  # [B, h, d, d]
        rescale = self.const(self.weight(k["rescale"]).reshape(1, heads, 1, 1), k["rescale"])
        attn = self.softmax_last(self.ew(gram, rescale, trt.ElementWiseOperation.PROD, f"{p}.scaled"),
                                 f"{p}.softmax")
        vh = self.reshape(v, per_head, f"{p}.v_heads")
        mm = self.net.add_matrix_multiply(attn, trt.MatrixOperation.NONE, vh, trt.MatrixOperation.NONE)
        out = self.reshape_like(self._out(mm, f"{p}.attn_v"), x, f"{p}.attn_out")
        out_c = self.conv(out, k["wproj"], 1, bias_key=k["bproj"])
        pos = self.conv(v, k["wpos1"], 3, pad=1, groups=c)
        pos = self.conv(self.gelu(pos, f"{p}.{parts.ATTENTION_POS_GELU}"), k["wpos2"], 3, pad=1, groups=c)
        return self.add(out_c, pos, f"{p}.out")

    def feed_forward(self, x, p: str):
        """PreNorm FFN on [B, C, H, W]: 1x1 -> GELU -> dw3x3 -> GELU -> 1x1 (no residual)."""
        k = parts.weight_keys(p, parts.FEED_FORWARD_WEIGHTS)
        gelu1, gelu2 = (f"{p}.{name}" for name in parts.FEED_FORWARD_GELUS)
        h = self.layer_norm_channels(x, f"{p}.{parts.FEED_FORWARD_NORM}")
        h = self.gelu(self.conv(h, k["w1"], 1), gelu1)
        hidden = self.w[k["wdw"]].shape[0]
        h = self.gelu(self.conv(h, k["wdw"], 3, pad=1, groups=hidden), gelu2)
        return self.conv(h, k["w2"], 1)

    def fused_feed_forward(self, x, p: str):
        """x + PreNorm FFN(x) as one MstFfn plugin layer, in x's dtype; weights go in as FP32 fields."""
        arrays = {name: np.asarray(self.w[key], dtype=np.float32)
                  for name, key in parts.weight_keys(p, parts.FEED_FORWARD_WEIGHTS).items()}
        c = arrays["ln_weight"].shape[0]
        hidden = parts.FFN_MULT * c
        expected = {"w1": (hidden, c, 1, 1), "wdw": (hidden, 1, 3, 3), "w2": (c, hidden, 1, 1)}
        got = {k: arrays[k].shape for k in expected}
        if c not in parts.LEVEL_CHANNELS or any(tuple(got[k]) != v for k, v in expected.items()):
            raise UserError(f"{p}: the MstFfn plugin needs C in {parts.LEVEL_CHANNELS} and a {parts.FFN_MULT}x "
                            f"hidden width, got C={c}, {got}; use --plugins none or ours")
        fields = {"epsilon": 1e-5, "ln_gamma": arrays["ln_weight"], "ln_beta": arrays["ln_bias"],
                  "w1": arrays["w1"], "wdw": arrays["wdw"], "w2": arrays["w2"]}
        return self.plugin("MstFfn", [x], fields, f"{p}.ffn")

    def fused_spectral_msa(self, x, p: str):
        """x + S-MSA(x) as one MstMsa plugin layer, in x's dtype; weights go in as FP32 fields."""
        fields = {name: np.asarray(self.w[key], dtype=np.float32)
                  for name, key in parts.weight_keys(p, parts.ATTENTION_WEIGHTS).items()}
        c = fields["wq"].shape[0]
        heads = c // HEAD_DIM
        square = (c, c)
        expected = {"wq": square, "wk": square, "wv": square, "rescale": (heads, 1, 1), "wproj": square,
                    "bproj": (c,), "wpos1": (c, 1, 3, 3), "wpos2": (c, 1, 3, 3)}
        got = {name: tuple(arr.shape) for name, arr in fields.items()}
        # Linear weights may come as [C, C] or as 1x1 convolutions [C, C, 1, 1].
        got = {k: v[:2] if expected[k] == square and v[2:] == (1, 1) else v for k, v in got.items()}
        if c not in parts.LEVEL_CHANNELS or got != expected:
            raise UserError(f"{p}: the MstMsa plugin needs C in {parts.LEVEL_CHANNELS}, heads of {HEAD_DIM} channels "
                            f"and the MST++ S-MSA weight shapes, got C={c}, {got}; use --plugins none or ours")
        return self.plugin("MstMsa", [x], fields, f"{p}.msa")

    def msab(self, x, p: str):
        for attn, ffn in parts.msab_blocks(p):
            if self.plugins == "fused":
                x = self.fused_feed_forward(self.fused_spectral_msa(x, attn), ffn)
            else:
                x = self.add(self.spectral_msa(x, attn), x, f"{p}.attn_residual")
                x = self.add(self.feed_forward(x, ffn), x, f"{p}.ffn_residual")
        return x

    def mst(self, x, stage: parts.StageParts):
        fea = self.conv(x, f"{stage.embedding}.weight", 3, pad=1)
        skips = []
        for i in range(parts.LEVELS):
            fea = self.msab(fea, stage.encoder_msab(i))
            skips.append(fea)
            fea = self.conv(fea, f"{stage.downsample(i)}.weight", 4, stride=2, pad=1)
        fea = self.msab(fea, stage.bottleneck)
        for i in range(parts.LEVELS):
            up = stage.upsample(i)
            fea = self.conv(fea, f"{up}.weight", 2, stride=2, bias_key=f"{up}.bias", deconv=True)
            cat = self.net.add_concatenation([fea, skips[parts.LEVELS - 1 - i]])
            cat.axis = 1
            fea = self.conv(self._out(cat, f"{stage.prefix}.decoder_layers.{i}.concat"), f"{stage.fusion(i)}.weight", 1)
            fea = self.msab(fea, stage.decoder_msab(i))
        return self.add(self.conv(fea, f"{stage.mapping}.weight", 3, pad=1), x, f"{stage.prefix}.residual")

    # --- padding and cropping ---------------------------------------------------------------
    def shape_vector(self, values: Sequence[int], name: str):
        return self.const(np.array(values, dtype=np.int64), name)

    def reflect_pad(self, x):
        """Reflect-pad H and W at the bottom/right up to a multiple of 8 (a REFLECT slice)."""
        trt = self.trt
        b, c, h, w = x.shape
        if h >= 0 and w >= 0:
            size = (b, c, h + (-h) % PAD_MULTIPLE, w + (-w) % PAD_MULTIPLE)
            layer = self.net.add_slice(x, (0, 0, 0, 0), size, (1, 1, 1, 1))
        else:
            # padded = ((shape + 7) // 8) * 8 on H and W, computed on the shape tensor at run time.
            shape = self._out(self.net.add_shape(x), "pad.shape")
            add = self.shape_vector([0, 0, PAD_MULTIPLE - 1, PAD_MULTIPLE - 1], "pad.round_up")
            mult = self.shape_vector([1, 1, PAD_MULTIPLE, PAD_MULTIPLE], "pad.multiple")
            size = self.ew(self.ew(self.ew(shape, add, trt.ElementWiseOperation.SUM, "pad.sum"), mult,
                                   trt.ElementWiseOperation.FLOOR_DIV, "pad.div"),
                           mult, trt.ElementWiseOperation.PROD, "pad.size")
            layer = self.net.add_slice(x, (0, 0, 0, 0), (1, 1, 1, 1), (1, 1, 1, 1))
            layer.set_input(2, size)
        layer.mode = trt.SampleMode.REFLECT
        return self._out(layer, "reflect_pad")

    def crop_like(self, y, rgb):
        """[B, 31, Hp, Wp] -> [B, 31, H, W] with H, W of the network input."""
        b, _, h, w = rgb.shape
        c = y.shape[1]
        if h >= 0 and w >= 0:
            return self._out(self.net.add_slice(y, (0, 0, 0, 0), (b, c, h, w), (1, 1, 1, 1)), "crop")
        shape = self._out(self.net.add_shape(rgb), "crop.in_shape")
        size = self.ew(shape, self.shape_vector([0, c - rgb.shape[1], 0, 0], "crop.channels"),
                       self.trt.ElementWiseOperation.SUM, "crop.size")
        layer = self.net.add_slice(y, (0, 0, 0, 0), (1, 1, 1, 1), (1, 1, 1, 1))
        layer.set_input(2, size)
        return self._out(layer, "crop")


def build_mstpp_network(trt, network, weights: Mapping[str, np.ndarray], input_shape: Sequence[int],
                        precision: str = "fp32", plugins: str = "none",
                        act_amax: Mapping[str, float] | None = None, keep: list | None = None) -> str:
    """Fill ``network`` with MST++: input ``rgb`` FP32 [B, 3, H, W] -> output ``cube`` FP32 [B, 31, H, W].

    Args:
        trt: the ``tensorrt`` / ``tensorrt_rtx`` module, or the reference executor's namespace.
        network: an empty strongly typed INetworkDefinition.
        weights: MST++ state dict as float32 numpy arrays (``get_weights.py`` output).
        input_shape: (B, 3, H, W); -1 marks a dynamic dimension (then the build needs a profile).
        precision: ``fp32``, ``fp16`` or ``int8``.
        plugins: ``none`` (native layers), ``ours`` (MstLayerNorm/MstL2Norm/MstGelu) or ``fused`` (one MstMsa
            per attention half and one MstFfn per feed-forward half, native layers elsewhere; not with ``int8``).
        act_amax: for ``int8``: calibrated max |x| at each convolution input, keyed by module name.
        keep: a list that receives every numpy array handed to TensorRT; keep it alive until the
            plan is built.

    Returns:
        the input tensor's name.
    """
    keep = keep if keep is not None else []
    b = _Builder(trt, network, weights, precision, plugins, act_amax, keep)
    rgb = network.add_input(INPUT_NAME, trt.float32, tuple(int(d) for d in input_shape))
    x = b.cast(rgb, b.dtype, "input.to_act")
    x = b.conv(b.reflect_pad(x), f"{parts.CONV_IN}.weight", 3, pad=1)
    h = x
    for stage in parts.stages():
        h = b.mst(h, stage)
    h = b.add(b.conv(h, f"{parts.CONV_OUT}.weight", 3, pad=1), x, "output.residual")
    out = b.cast(b.crop_like(h, rgb), trt.float32, "output.to_fp32")
    out.name = OUTPUT_NAME
    network.mark_output(out)
    return INPUT_NAME


def conv_module_names(weights: Mapping[str, np.ndarray]) -> list[str]:
    """Names of the modules whose inputs INT8 calibration must measure (every convolution)."""
    names = []
    for key, arr in weights.items():
        if key.endswith(".weight") and np.ndim(arr) in (2, 4) and ".norm." not in key:
            names.append(key.rsplit(".", 1)[0])
    return names

"""A CPU reference executor for the subset of TensorRT's ``INetworkDefinition`` that the MST++ builder uses.

The project builds MST++ layer by layer with one function ``build(trt_module, network, ...)`` that only calls
``network.add_*``, sets layer properties and reads enums from ``trt_module``. Tests hand that function either a
real TensorRT / TensorRT-RTX network, or :func:`create_reference_network` together with :data:`ref_trt`, then
run the reference network with PyTorch on CPU and compare it with the PyTorch model::

    net = create_reference_network()
    build(ref_trt, net, weights)                      # the same code that builds the TensorRT network
    out = net.execute({"input": rgb})["output"]       # torch tensors, CPU

What the executor does, and where each rule comes from
------------------------------------------------------
Rules marked **[rtx]** were cross-checked with the TensorRT-RTX 1.7.1 builder (``import tensorrt_rtx``): a tiny
network was built on CPU and we looked at whether ``build_serialized_network`` accepted it and at the
build-time shapes/dtypes/defaults it reported. The RTX builder cannot *run* engines here, so numerics
(rounding, reflect indexing, GELU, ...) come from documentation (**[docs]**: the Python docstrings shipped with
``tensorrt_rtx``, ``shared/docs/tensorrt_api_brief.md`` section 2, ONNX-parser lowering) and are marked so.

* **[rtx]** Strong typing: elementwise, matmul and concatenation operands need one dtype; conv/deconv kernel
  and bias need the input's dtype; normalization scale *and bias* need the input's dtype; conv, matmul,
  softmax, normalization and float unary ops (EXP...) reject INT32; AND/OR/XOR need BOOL; arithmetic
  elementwise and reduce reject BOOL; quantize needs a float input, dequantize an INT8 input; float64 numpy
  weights are refused. Quantize accepts an FP32 or FP16 scale for either FP32 or FP16 input, and dequantize
  accepts any float scale with any float ``output_type`` - so the reference accepts those combinations too.
* **[rtx]** Explicit INT8 conv/deconv (``add_convolution_nd(x, K, ks, Weights(), bias)`` then
  ``set_input(1, kernel)``, optionally ``set_input(2, bias)``): the kernel tensor - a dequantize output, a plain
  float constant or even a network input, all accepted - must have exactly the input's dtype (FP32 input needs
  an FP32 kernel, FP16 an FP16 one; an INT8 kernel without dequantize is refused) and exactly the shape
  ``(K, C/groups, *ks)`` (deconv ``(C, K/groups, *ks)``); a bias, numpy or tensor, must have the input's dtype;
  a bias tensor has shape ``(K,)`` or ``(1, K, 1, 1)``. Weights and a tensor for the same slot, or an empty
  kernel with no input 1, are refused at build. Quantize/dequantize scales: per-tensor ``()`` and ``(1,)`` are
  both accepted, a 2-D scale makes ``add_*`` fail; a ``(K,)`` weight scale needs ``axis = 0`` (the default
  axis -1 is refused); the scale dtype (FP32/FP16) is free of the input / ``output_type`` dtype.
* **[rtx]** Shapes: elementwise needs equal ranks and dims that are equal or 1; matmul needs equal ranks
  (one less for a VECTOR operand) and matching contraction dims, batch dims broadcast; normalization scale
  and bias need the input's rank; reduce masks with a bit >= rank, or mask 0, are rejected; a softmax mask
  with zero or two bits is rejected when it is set, a bit >= rank at build; STRICT_BOUNDS slices that leave
  the input are rejected; a ``-1`` in a reshape without an integer solution is rejected; conv/deconv/const
  weight counts must match.
* **[rtx]** Defaults: softmax ``axes`` = ``1 << (rank-3)`` for rank >= 3 else ``1`` (4-D gives 2); concat
  ``axis`` = ``rank-3`` for rank >= 3 else 0; normalization ``epsilon`` 1e-5, ``num_groups`` 1; quantize
  ``axis`` -1 (= last dim: a 1-D scale must match the last dim unless ``axis`` is set); activation
  ``alpha``/``beta`` 0; shuffle ``zero_is_placeholder`` True; slice ``mode`` STRICT_BOUNDS.
* **[rtx]** Build-time shapes use -1 for dims that depend on dynamic input dims (e.g. conv of
  ``(-1,4,-1,6)`` is ``(-1,8,-1,6)``; ``add_shape`` is INT64 of length rank; a reshape whose ``-1`` cancels
  a copied dynamic dim is still resolved, as TensorRT does).
* **[docs]** Numerics: conv/deconv/matmul/softmax/reduce/unary/activation on FP16/BF16 compute in FP32 and
  round the result once to the tensor dtype (TensorRT accumulates in FP32; reduce in FP32 is the optimistic
  choice - a real FP16 reduce may lose more). Elementwise on FP16 rounds each result to FP16. Normalization
  and the Mst* plugins take statistics in FP32 and round the output. Quantize: ``clamp(round_half_even(x /
  scale), -128, 127)`` (docstring of ``IQuantizeLayer``), dequantize ``x * scale``, INT8 only, symmetric.
  Slice REFLECT reflects without repeating the edge, like ``F.pad(mode="reflect")`` (the ONNX parser lowers
  ``Pad(reflect)`` to it), and keeps reflecting periodically when the pad exceeds the size; WRAP is modulo;
  CLAMP repeats the edge; FILL uses input 4 or zero.
* **[assumed]** Not documented and not checkable here: integer DIV truncates toward zero (FLOOR_DIV floors),
  integer AVG truncates, float-to-int casts truncate. MST++ uses none of them on data tensors.
* **[docs, not rtx]** The quantize/dequantize scale must come from a subgraph of constants ("The subgraph
  which terminates with the scale tensor must be a build-time constant", ``IQuantizeLayer`` docstring).
  The RTX builder did *not* reject a scale fed by a network input, so this check is stricter than RTX.
* **[project]** Plugins ``MstLayerNorm``, ``MstL2Norm``, ``MstGelu``, ``MstFfn``, ``MstMsa`` (version
  :data:`PLUGIN_VERSION`, namespace :data:`PLUGIN_NAMESPACE`) follow the project's plugin contract; TensorRT-RTX
  has no plugin layers, so nothing about them is cross-checked. Field data must have the numpy dtype its
  ``PluginFieldType`` names, and unknown field names are rejected (a C++ creator would ignore them silently).
  ``MstFfn`` and ``MstMsa`` take their weights as FLOAT32 array fields and check C and their sizes at creation,
  like their C++ creators.

Errors: strong-typing violations raise :class:`StrongTypingError` (a ``TypeError``) when the layer is added (a
conv kernel/bias tensor of the wrong dtype: at ``set_input``, where TensorRT reports it at build);
invalid axes/shapes raise :class:`InvalidNetworkError` (a ``ValueError``). Errors that depend on properties
set after ``add_*`` (conv padding, shuffle dims, slice bounds, concat axis, quantize axis) are kept until the
offending tensor's ``.shape``/``.dtype`` is read, or until :meth:`ReferenceNetwork.validate` / ``execute``,
as TensorRT reports them at build time. Setting an unknown layer attribute raises ``AttributeError`` (as
pybind objects do), which catches typos such as ``.padding`` for ``.padding_nd``.

Known gaps: only the layers listed in ``ReferenceNetwork``; no loops/conditionals, no ``axes`` input of slice,
no gather modes other than DEFAULT, no SAME padding for deconv, no FP8/INT4/FP4, no optimization profiles
(dynamic dims accept any size at execute time); INT8 constants are accepted anywhere (TensorRT only allows
them in front of a dequantize or plugin); a 0-D conv bias tensor (RTX accepts it) and ``set_input`` beyond the
last input (RTX logs and ignores it) are refused; activations other than RELU, SIGMOID, TANH, LEAKY_RELU, CLIP,
GELU_ERF, GELU_TANH raise.
"""

from __future__ import annotations

import enum
import math
import types
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ref_trt",
    "ReferenceNetwork",
    "Weights",
    "ReferenceTensor",
    "ReferenceLayer",
    "StrongTypingError",
    "InvalidNetworkError",
    "create_reference_network",
    "PLUGIN_VERSION",
    "PLUGIN_NAMESPACE",
]

PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""


# --------------------------------------------------------------------------------------------------------------
# Enums. Integer values mirror TensorRT's so that logs and ``int(x)`` read the same as with the real module.
# --------------------------------------------------------------------------------------------------------------


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    BF16 = 7
    INT64 = 8

    @property
    def itemsize(self) -> int:
        return torch.empty((), dtype=_TORCH_DTYPE[self]).element_size()


class ElementWiseOperation(enum.IntEnum):
    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    SUB = 4
    DIV = 5
    POW = 6
    FLOOR_DIV = 7
    AND = 8
    OR = 9
    XOR = 10
    EQUAL = 11
    GREATER = 12
    LESS = 13


class ReduceOperation(enum.IntEnum):
    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    AVG = 4


class UnaryOperation(enum.IntEnum):
    EXP = 0
    LOG = 1
    SQRT = 2
    RECIP = 3
    ABS = 4
    NEG = 5
    SIN = 6
    COS = 7
    TAN = 8
    SINH = 9
    COSH = 10
    ASIN = 11
    ACOS = 12
    ATAN = 13
    ASINH = 14
    ACOSH = 15
    ATANH = 16
    CEIL = 17
    FLOOR = 18
    ERF = 19
    NOT = 20
    SIGN = 21
    ROUND = 22
    ISINF = 23
    ISNAN = 24


class ActivationType(enum.IntEnum):
    RELU = 0
    SIGMOID = 1
    TANH = 2
    LEAKY_RELU = 3
    ELU = 4
    SELU = 5
    SOFTSIGN = 6
    SOFTPLUS = 7
    CLIP = 8
    HARD_SIGMOID = 9
    SCALED_TANH = 10
    THRESHOLDED_RELU = 11
    GELU_ERF = 12
    GELU_TANH = 13


class MatrixOperation(enum.IntEnum):
    NONE = 0
    TRANSPOSE = 1
    VECTOR = 2


class SampleMode(enum.IntEnum):
    STRICT_BOUNDS = 0
    WRAP = 1
    CLAMP = 2
    FILL = 3
    REFLECT = 4


class PaddingMode(enum.IntEnum):
    EXPLICIT_ROUND_DOWN = 0
    EXPLICIT_ROUND_UP = 1
    SAME_UPPER = 2
    SAME_LOWER = 3


class PluginFieldType(enum.IntEnum):
    FLOAT16 = 0
    FLOAT32 = 1
    FLOAT64 = 2
    INT8 = 3
    INT16 = 4
    INT32 = 5
    CHAR = 6
    DIMS = 7
    UNKNOWN = 8
    BF16 = 9
    INT64 = 10


class TensorRTPhase(enum.IntEnum):
    BUILD = 0
    RUNTIME = 1


class LayerType(enum.IntEnum):
    CONVOLUTION = 0
    CAST = 1
    ACTIVATION = 2
    SOFTMAX = 6
    DECONVOLUTION = 7
    CONCATENATION = 8
    ELEMENTWISE = 9
    UNARY = 11
    SHUFFLE = 13
    REDUCE = 14
    GATHER = 16
    MATRIX_MULTIPLY = 17
    CONSTANT = 19
    IDENTITY = 20
    SLICE = 22
    SHAPE = 23
    QUANTIZE = 32
    DEQUANTIZE = 33
    NORMALIZATION = 45
    PLUGIN_V3 = 46


_TORCH_DTYPE: dict[DataType, torch.dtype] = {
    DataType.FLOAT: torch.float32,
    DataType.HALF: torch.float16,
    DataType.BF16: torch.bfloat16,
    DataType.INT8: torch.int8,
    DataType.INT32: torch.int32,
    DataType.INT64: torch.int64,
    DataType.BOOL: torch.bool,
}
_FROM_TORCH = {v: k for k, v in _TORCH_DTYPE.items()}
_FROM_NUMPY: dict[np.dtype, DataType] = {
    np.dtype(np.float32): DataType.FLOAT,
    np.dtype(np.float16): DataType.HALF,
    np.dtype(np.int8): DataType.INT8,
    np.dtype(np.int32): DataType.INT32,
    np.dtype(np.int64): DataType.INT64,
    np.dtype(np.bool_): DataType.BOOL,
}
_FLOATS = frozenset({DataType.FLOAT, DataType.HALF, DataType.BF16})
_INTS = frozenset({DataType.INT8, DataType.INT32, DataType.INT64})
_SHAPE_INTS = frozenset({DataType.INT32, DataType.INT64})


def nptype(dtype: Any) -> type:
    """Numpy scalar type of a ``DataType`` (like ``trt.nptype``); BF16 has none in numpy."""
    dt = _coerce_enum(dtype, DataType)
    for np_dtype, ref in _FROM_NUMPY.items():
        if ref == dt:
            return np_dtype.type
    raise TypeError(f"{dt.name} has no numpy equivalent")


def _coerce_enum(value: Any, enum_cls: type[enum.IntEnum]) -> Any:
    """Accept our enum or another module's enum member of the same name (e.g. ``tensorrt.DataType.FLOAT``)."""
    if isinstance(value, enum_cls):
        return value
    name = getattr(value, "name", None)
    if isinstance(name, str) and name in enum_cls.__members__:
        return enum_cls[name]
    raise TypeError(f"expected a {enum_cls.__name__} member, got {value!r}")


# --------------------------------------------------------------------------------------------------------------
# Errors and small helpers
# --------------------------------------------------------------------------------------------------------------


class StrongTypingError(TypeError):
    """A layer's input dtypes break TensorRT's strong-typing rules (the builder would refuse the network)."""


class InvalidNetworkError(ValueError):
    """Bad axes, shapes or properties that TensorRT's builder would refuse."""


class _PropertyDependentError(InvalidNetworkError):
    """A check that a property set after ``add_*`` may still satisfy (reported when shapes are read)."""


class ReferenceRuntimeError(RuntimeError):
    """A layer failed while executing (e.g. runtime shapes that do not broadcast)."""


Shape = tuple[int, ...]
Value = tuple[int | None, ...]  # build-time elements of a small integer tensor; None = only known at runtime


def _as_dims(value: Any) -> Shape:
    """Tuple of Python ints from a tuple/list/np array/Dims-like sequence."""
    if isinstance(value, (int, np.integer)):
        return (int(value),)
    return tuple(int(v) for v in value)


def _is_static(shape: Shape) -> bool:
    return all(d >= 0 for d in shape)


def _volume(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


def _axes_from_mask(mask: int, rank: int, who: str) -> tuple[int, ...]:
    """Axes of a TensorRT bitmask (bit i = dim i); a zero mask or a bit >= rank is an error [rtx]."""
    mask = int(mask)
    if mask <= 0:
        raise InvalidNetworkError(f"{who}: axes bitmask {mask:#b} selects no dimension")
    if mask >> rank:
        raise InvalidNetworkError(f"{who}: axes bitmask {mask:#b} names a dimension >= rank {rank}")
    return tuple(i for i in range(rank) if mask >> i & 1)


def _broadcast(a: Shape, b: Shape, who: str) -> Shape:
    """TensorRT broadcast: equal ranks, each dim pair equal or one of them 1; -1 stays unknown."""
    if len(a) != len(b):
        raise InvalidNetworkError(f"{who}: inputs must have equal rank, got {a} and {b}")
    out = []
    for x, y in zip(a, b):
        if x == 1:
            out.append(y)
        elif y == 1 or x == y:
            out.append(x)
        elif x == -1 or y == -1:
            out.append(max(x, y))  # the static one wins; a mismatch is found at runtime
        else:
            raise InvalidNetworkError(f"{who}: dims {a} and {b} do not broadcast")
    return tuple(out)


def _in_f32(x: torch.Tensor) -> torch.Tensor:
    """Low-precision floats are computed in FP32 (TensorRT's accumulation type); others unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _torch_value(t: torch.Tensor) -> list[int]:
    return [int(v) for v in t.reshape(-1).tolist()]


@dataclass(frozen=True)
class _Meta:
    """What the builder knows about a tensor: shape (-1 = dynamic), dtype, small int values, constness."""

    shape: Shape
    dtype: DataType
    value: Value | None = None
    const: bool = False


# --------------------------------------------------------------------------------------------------------------
# Tensors and layers
# --------------------------------------------------------------------------------------------------------------


class ReferenceTensor:
    """The ``ITensor`` subset: ``name`` (settable), ``shape`` (tuple, -1 = dynamic), ``dtype``."""

    def __init__(self, network: ReferenceNetwork, name: str, producer: ReferenceLayer | None) -> None:
        self.name = name
        self._network = network
        self._producer = producer
        self._meta: _Meta | None = None
        self._consumers: list[ReferenceLayer] = []  # layers to re-infer when this tensor's meta changes

    def _m(self) -> _Meta:
        if self._meta is None:
            err = self._producer._error if self._producer is not None else None
            if err is None:
                raise InvalidNetworkError(f"tensor {self.name!r} has no inferred shape")
            raise type(err)(str(err))
        return self._meta

    @property
    def shape(self) -> Shape:
        return self._m().shape

    @property
    def dtype(self) -> DataType:
        return self._m().dtype

    @property
    def is_network_input(self) -> bool:
        return self._producer is None

    @property
    def is_network_output(self) -> bool:
        return any(t is self for t in self._network._outputs)

    @property
    def is_shape_tensor(self) -> bool:
        return self._meta is not None and self._meta.value is not None

    def __repr__(self) -> str:
        meta = f"{self._meta.shape}, {self._meta.dtype.name}" if self._meta else "pending"
        return f"ReferenceTensor({self.name!r}, {meta})"


class ReferenceLayer:
    """Base of all layers: the ``ILayer`` subset (``name``, ``type``, ``get_input/get_output``, ``set_input``).

    Subclasses declare ``_PROPERTIES`` (attribute -> normaliser; setting one re-runs shape inference),
    implement ``_infer() -> list[_Meta]`` (build-time checks) and ``_run(xs) -> list[Tensor]`` (CPU compute).
    """

    type: ClassVar[LayerType]
    _KIND: ClassVar[str] = "Layer"
    _PROPERTIES: ClassVar[dict[str, Callable[[Any], Any]]] = {}
    _MAX_INPUTS: ClassVar[int] = 1
    # True where TensorRT only judges the shapes after properties have been set (reported at build).
    _DEFER_SHAPE_ERRORS: ClassVar[bool] = False

    def __init__(self, network: ReferenceNetwork, inputs: Sequence[ReferenceTensor | None], num_outputs: int = 1):
        index = len(network._layers)
        object.__setattr__(self, "_ready", False)
        self._network = network
        self._inputs: list[ReferenceTensor | None] = list(inputs)
        self._error: Exception | None = None
        self.name = f"(Unnamed Layer* {index}) [{self._KIND}]"
        self.metadata = ""
        self._outputs = [
            ReferenceTensor(network, f"{self.name}_output" + (f"_{i}" if i else ""), self) for i in range(num_outputs)
        ]

    def _finish_init(self) -> None:
        object.__setattr__(self, "_ready", True)

    def __setattr__(self, key: str, value: Any) -> None:
        if key.startswith("_") or key in ("name", "metadata"):
            object.__setattr__(self, key, value)
            return
        if key not in self._PROPERTIES:
            raise AttributeError(f"{type(self).__name__} has no settable attribute {key!r}")
        value = self._PROPERTIES[key](value)
        self._check_property(key, value)
        object.__setattr__(self, key, value)
        if self._ready:
            self._network._refresh(self)

    def _check_property(self, key: str, value: Any) -> None:
        """Raise at once (before storing) for property values TensorRT refuses when they are set."""

    # -- ILayer API -------------------------------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_input(self, index: int) -> ReferenceTensor | None:
        return self._inputs[index]

    def get_output(self, index: int) -> ReferenceTensor:
        return self._outputs[index]

    def set_input(self, index: int, tensor: ReferenceTensor) -> None:
        if not isinstance(tensor, ReferenceTensor) or tensor._network is not self._network:
            raise TypeError(f"{self.name}: set_input needs a tensor of the same ReferenceNetwork")
        if not 0 <= index < self._MAX_INPUTS:
            raise InvalidNetworkError(f"{self.name}: input index {index} not supported (max {self._MAX_INPUTS - 1})")
        while len(self._inputs) <= index:
            self._inputs.append(None)
        self._inputs[index] = tensor
        tensor._consumers.append(self)
        self._network._refresh(self)

    # -- helpers for subclasses -------------------------------------------------------------------------------
    def _in(self, index: int) -> _Meta:
        tensor = self._inputs[index]
        if tensor is None:
            raise InvalidNetworkError(f"{self.name}: input {index} is missing")
        return tensor._m()

    def _meta(self, shape: Shape, dtype: DataType, value: Value | None = None, const: bool | None = None) -> _Meta:
        if const is None:  # a layer's output is a build-time constant when all its inputs are
            const = all(t is None or t._m().const for t in self._inputs)
        return _Meta(tuple(shape), dtype, value, const)

    def _require(self, dtype: DataType, allowed: Iterable[DataType], what: str = "input") -> None:
        allowed = tuple(allowed)
        if dtype not in allowed:
            names = ", ".join(d.name for d in allowed)
            raise StrongTypingError(f"{self.name}: {what} has type {dtype.name} but must be one of {names}")

    def _same_dtype(self, metas: Sequence[_Meta], what: str) -> None:
        kinds = {m.dtype for m in metas}
        if len(kinds) > 1:
            got = ", ".join(m.dtype.name for m in metas)
            raise StrongTypingError(f"{self.name}: {what} must have identical types, got {got}")

    def _infer(self) -> list[_Meta]:
        raise NotImplementedError

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _prop_int(v: Any) -> int:
    return int(v)


def _prop_float(v: Any) -> float:
    return float(v)


def _prop_bool(v: Any) -> bool:
    return bool(v)


def _prop_enum(enum_cls: type[enum.IntEnum]) -> Callable[[Any], Any]:
    return lambda v: _coerce_enum(v, enum_cls)


def _prop_dims_or_none(v: Any) -> Shape | None:
    return None if v is None else _as_dims(v)


class Weights:
    """``trt.Weights``: ``Weights()`` / ``Weights(dtype)`` are empty (0 values), ``Weights(array)`` wraps an array.

    Empty weights stand for "given as a tensor instead" (conv/deconv kernel and bias through ``set_input``).
    """

    def __init__(self, a: Any = DataType.FLOAT) -> None:
        if isinstance(a, (DataType, enum.Enum)) or type(a).__name__ == "DataType":
            self._array = np.empty(0, nptype(_coerce_enum(a, DataType)))
        else:
            self._array = _weights_array(a, "Weights")

    @property
    def dtype(self) -> DataType:
        return _FROM_NUMPY[self._array.dtype]

    @property
    def size(self) -> int:
        return int(self._array.size)

    @property
    def nbytes(self) -> int:
        return int(self._array.nbytes)

    def __len__(self) -> int:
        return self.size

    def numpy(self) -> np.ndarray:
        return self._array

    def __repr__(self) -> str:
        return f"Weights({self.dtype.name}, size={self.size})"


def _weights_array(weights: Any, who: str) -> np.ndarray:
    """Copy weights to a contiguous numpy array with a TensorRT dtype (float64 is refused, as in TRT [rtx])."""
    if isinstance(weights, Weights):
        return weights.numpy().copy()
    if isinstance(weights, torch.Tensor):
        raise TypeError(f"{who}: pass numpy arrays as weights, not torch tensors")
    array = np.array(weights, copy=True, order="C")
    if array.dtype not in _FROM_NUMPY:
        raise StrongTypingError(f"{who}: weights of numpy dtype {array.dtype} are not supported by TensorRT")
    return array


# -- constants, shape, identity, cast ---------------------------------------------------------------------------


class ConstantLayer(ReferenceLayer):
    type = LayerType.CONSTANT
    _KIND = "Constant"
    _MAX_INPUTS = 0
    _PROPERTIES = {"shape": _as_dims, "weights": lambda w: _weights_array(w, "IConstantLayer")}

    def __init__(self, network: ReferenceNetwork, shape: Shape, weights: np.ndarray) -> None:
        super().__init__(network, [])
        self.shape = _as_dims(shape)
        self.weights = weights  # copied by the normaliser: TensorRT keeps a pointer, we keep our own copy
        self._finish_init()

    def _infer(self) -> list[_Meta]:
        if not _is_static(self.shape):
            raise InvalidNetworkError(f"{self.name}: constant shape {self.shape} must be static")
        if self.weights.size != _volume(self.shape):
            raise InvalidNetworkError(
                f"{self.name}: weights have {self.weights.size} values, shape {self.shape} needs {_volume(self.shape)}")
        dtype = _FROM_NUMPY[self.weights.dtype]
        value = None
        if dtype in _SHAPE_INTS and len(self.shape) <= 1 and self.weights.size <= 64:
            value = tuple(int(v) for v in self.weights.reshape(-1))
        return [self._meta(self.shape, dtype, value, const=True)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        return [torch.from_numpy(self.weights.copy()).reshape(self.shape)]


class ShapeLayer(ReferenceLayer):
    type = LayerType.SHAPE
    _KIND = "Shape"

    def __init__(self, network: ReferenceNetwork, tensor: ReferenceTensor) -> None:
        super().__init__(network, [tensor])
        self._finish_init()

    def _infer(self) -> list[_Meta]:
        shape = self._in(0).shape
        value = tuple(d if d >= 0 else None for d in shape)
        return [self._meta((len(shape),), DataType.INT64, value, const=_is_static(shape))]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        return [torch.tensor(list(xs[0].shape), dtype=torch.int64)]


class IdentityLayer(ReferenceLayer):
    type = LayerType.IDENTITY
    _KIND = "Identity"

    def __init__(self, network: ReferenceNetwork, tensor: ReferenceTensor) -> None:
        super().__init__(network, [tensor])
        self._finish_init()

    def _infer(self) -> list[_Meta]:
        m = self._in(0)
        return [self._meta(m.shape, m.dtype, m.value)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        return [xs[0].clone()]


class CastLayer(ReferenceLayer):
    type = LayerType.CAST
    _KIND = "Cast"
    _PROPERTIES = {"to_type": _prop_enum(DataType)}

    def __init__(self, network: ReferenceNetwork, tensor: ReferenceTensor, to_type: DataType) -> None:
        super().__init__(network, [tensor])
        self.to_type = to_type
        self._finish_init()

    def _infer(self) -> list[_Meta]:
        m = self._in(0)
        value = m.value if self.to_type in _SHAPE_INTS else None
        return [self._meta(m.shape, self.to_type, value)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        # torch truncates float->int and maps nonzero->True for bool, the documented cast semantics.
        return [xs[0].to(_TORCH_DTYPE[self.to_type])]


# -- convolution / deconvolution ----------------------------------------------------------------------------------

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class _ConvBase(ReferenceLayer):
    """Shared state of ``IConvolutionLayer`` / ``IDeconvolutionLayer`` (N-D, N = len(kernel_shape))."""

    _DEFER_SHAPE_ERRORS = True
    _PROPERTIES = {
        "num_output_maps": _prop_int,
        "kernel_size_nd": _as_dims,
        "stride_nd": _as_dims,
        "pre_padding": _as_dims,
        "post_padding": _as_dims,
        "padding_nd": _as_dims,
        "dilation_nd": _as_dims,
        "num_groups": _prop_int,
        "padding_mode": _prop_enum(PaddingMode),
        "kernel": lambda w: _weights_array(w, "kernel"),
        "bias": lambda w: None if w is None or (a := _weights_array(w, "bias")).size == 0 else a,
    }
    _MAX_INPUTS = 3  # 0 data, 1 kernel tensor, 2 bias tensor (then the kernel/bias weights must be empty)

    def __init__(self, network: ReferenceNetwork, tensor: ReferenceTensor, num_output_maps: int,
                 kernel_shape: Sequence[int], kernel: Any, bias: Any) -> None:
        super().__init__(network, [tensor])
        self.num_output_maps = num_output_maps
        self.kernel_size_nd = kernel_shape
        nd = len(self.kernel_size_nd)
        self.stride_nd = (1,) * nd
        self.pre_padding = (0,) * nd
        self.post_padding = (0,) * nd
        self.dilation_nd = (1,) * nd
        self.num_groups = 1
        self.padding_mode = PaddingMode.EXPLICIT_ROUND_DOWN
        self.kernel = kernel
        self.bias = bias
        self._finish_init()

    # ``padding_nd`` is symmetric padding: setting it sets both sides; reading it returns the pre padding.
    @property
    def padding_nd(self) -> Shape:
        return self.pre_padding

    @padding_nd.setter
    def padding_nd(self, value: Shape) -> None:
        object.__setattr__(self, "pre_padding", value)
        object.__setattr__(self, "post_padding", value)

    def set_input(self, index: int, tensor: ReferenceTensor) -> None:
        """Input 1 = kernel tensor, 2 = bias tensor. A dtype other than the data input's is refused at once."""
        if index in (1, 2) and isinstance(tensor, ReferenceTensor) and tensor._meta is not None \
                and self._inputs[0] is not None and self._inputs[0]._meta is not None:
            self._check_dtype("kernel" if index == 1 else "bias", tensor._meta.dtype, self._inputs[0]._meta.dtype)
        super().set_input(index, tensor)

    def _check_dtype(self, what: str, got: DataType, want: DataType) -> None:
        if got != want:
            raise StrongTypingError(f"{self.name}: `input` and `{what}` must be of same type, input is "
                                    f"{want.name} but {what} is {got.name}")

    def _tensor_input(self, index: int) -> _Meta | None:
        return self._in(index) if len(self._inputs) > index and self._inputs[index] is not None else None

    def _common_checks(self, kernel_shape: Shape) -> tuple[_Meta, int]:
        """Checks shared by conv and deconv; ``kernel_shape`` is the expected one. Returns input meta, channels."""
        m = self._in(0)
        nd = len(self.kernel_size_nd)
        self._require(m.dtype, _FLOATS)
        k_t, b_t = self._tensor_input(1), self._tensor_input(2)
        for what, arr, t in (("kernel", self.kernel, k_t), ("bias", self.bias, b_t)):
            if arr is not None and arr.size:
                if t is not None:  # [rtx] setInput(1|2) needs empty kernel/bias weights
                    raise InvalidNetworkError(f"{self.name}: {what} given both as weights and as input tensor")
                self._check_dtype(what, _FROM_NUMPY[arr.dtype], m.dtype)
            if t is not None:
                self._check_dtype(what, t.dtype, m.dtype)
        if len(m.shape) != nd + 2 or nd not in _CONV:
            raise InvalidNetworkError(f"{self.name}: input rank {len(m.shape)} does not fit a {nd}-D kernel")
        for name in ("stride_nd", "pre_padding", "post_padding", "dilation_nd"):
            if len(getattr(self, name)) != nd:
                raise InvalidNetworkError(f"{self.name}: {name} {getattr(self, name)} must have {nd} values")
        channels, groups, maps = m.shape[1], self.num_groups, self.num_output_maps
        if channels < 0:
            raise InvalidNetworkError(f"{self.name}: the channel dim must be static")
        if groups < 1 or channels % groups or maps % groups:
            raise InvalidNetworkError(f"{self.name}: {channels} input channels and {maps} output maps "
                                      f"are not divisible into {groups} groups")
        if k_t is not None:
            if k_t.shape != tuple(kernel_shape):  # [rtx] exact shape; a flat or 3-D kernel tensor is refused
                raise InvalidNetworkError(f"{self.name}: kernel tensor has shape {k_t.shape}, expected {kernel_shape}")
        elif self.kernel.size == 0:
            raise InvalidNetworkError(f"{self.name}: empty kernel weights and no kernel tensor (set_input(1, ...))")
        elif self.kernel.size != _volume(kernel_shape):
            raise InvalidNetworkError(
                f"{self.name}: kernel has {self.kernel.size} weights, expected {_volume(kernel_shape)}")
        if b_t is not None:
            if b_t.shape not in ((maps,), (1, maps) + (1,) * nd):  # [rtx] rank 1 or rank-of-input only
                raise InvalidNetworkError(f"{self.name}: bias tensor has shape {b_t.shape}, expected ({maps},)")
        elif self.bias is not None and self.bias.size != maps:
            raise InvalidNetworkError(f"{self.name}: bias has {self.bias.size} values, expected {maps}")
        return m, channels

    def _weight(self, xs: list[torch.Tensor | None], shape: Shape, dtype: torch.dtype) -> torch.Tensor:
        k = xs[1] if len(xs) > 1 and xs[1] is not None else torch.from_numpy(self.kernel.copy())
        return k.reshape(shape).to(dtype)

    def _bias(self, xs: list[torch.Tensor | None], dtype: torch.dtype) -> torch.Tensor | None:
        if len(xs) > 2 and xs[2] is not None:
            return xs[2].reshape(-1).to(dtype)
        return None if self.bias is None else torch.from_numpy(self.bias.copy()).reshape(-1).to(dtype)


class ConvolutionLayer(_ConvBase):
    """``add_convolution_nd``: kernel GKCRS = torch ``(out, in/groups, *k)``; input ``(N, C, *spatial)``."""

    type = LayerType.CONVOLUTION
    _KIND = "Convolution"

    def _pads(self, size: int, axis: int) -> tuple[int, int]:
        """(pre, post) padding of one spatial axis for an input size (SAME modes depend on it)."""
        if self.padding_mode in (PaddingMode.SAME_UPPER, PaddingMode.SAME_LOWER):
            stride, eff_k = self.stride_nd[axis], self.dilation_nd[axis] * (self.kernel_size_nd[axis] - 1) + 1
            out = -(-size // stride)
            total = max(0, (out - 1) * stride + eff_k - size)
            small, big = total // 2, total - total // 2
            return (small, big) if self.padding_mode == PaddingMode.SAME_UPPER else (big, small)
        return self.pre_padding[axis], self.post_padding[axis]

    def _out_size(self, size: int, axis: int) -> int:
        if size < 0:
            return -1
        pre, post = self._pads(size, axis)
        span = size + pre + post - self.dilation_nd[axis] * (self.kernel_size_nd[axis] - 1) - 1
        stride = self.stride_nd[axis]
        steps = -(-span // stride) if self.padding_mode == PaddingMode.EXPLICIT_ROUND_UP else span // stride
        out = steps + 1
        if span < 0 or out <= 0:
            raise InvalidNetworkError(f"{self.name}: kernel does not fit the padded input along spatial axis {axis}")
        return out

    def _infer(self) -> list[_Meta]:
        ks, maps = self.kernel_size_nd, self.num_output_maps
        channels = self._in(0).shape[1] if len(self._in(0).shape) > 1 else 0
        m, channels = self._common_checks((maps, channels // max(self.num_groups, 1), *ks))
        spatial = tuple(self._out_size(d, i) for i, d in enumerate(m.shape[2:]))
        return [self._meta((m.shape[0], maps, *spatial), m.dtype)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        x = xs[0]
        nd, groups = len(self.kernel_size_nd), self.num_groups
        x32 = _in_f32(x)
        weight = self._weight(xs, (self.num_output_maps, x.shape[1] // groups, *self.kernel_size_nd), x32.dtype)
        pads: list[int] = []  # F.pad order: last dim first
        for axis in reversed(range(nd)):
            pads.extend(self._pads(x.shape[2 + axis], axis))
        if self.padding_mode == PaddingMode.EXPLICIT_ROUND_UP:
            # Round-up output sizes need extra post padding (zeros) for the last partial window.
            for axis in range(nd):
                need = (self._out_size(x.shape[2 + axis], axis) - 1) * self.stride_nd[axis] + \
                    self.dilation_nd[axis] * (self.kernel_size_nd[axis] - 1) + 1
                have = x.shape[2 + axis] + sum(self._pads(x.shape[2 + axis], axis))
                pads[2 * (nd - 1 - axis) + 1] += max(0, need - have)
        y = _CONV[nd](F.pad(x32, pads), weight, self._bias(xs, x32.dtype), stride=self.stride_nd,
                      dilation=self.dilation_nd, groups=groups)
        return [y.to(x.dtype)]


class DeconvolutionLayer(_ConvBase):
    """``add_deconvolution_nd``: kernel CKRS = torch ConvTranspose weight ``(in, out/groups, *k)``.

    Output size per axis: ``(in - 1) * stride + dilation * (k - 1) + 1 - pre - post``; padding crops.
    """

    type = LayerType.DECONVOLUTION
    _KIND = "Deconvolution"

    def _infer(self) -> list[_Meta]:
        if self.padding_mode not in (PaddingMode.EXPLICIT_ROUND_DOWN, PaddingMode.EXPLICIT_ROUND_UP):
            raise InvalidNetworkError(f"{self.name}: the reference supports explicit padding only for deconvolution")
        channels = self._in(0).shape[1] if len(self._in(0).shape) > 1 else 0
        m, channels = self._common_checks((channels, self.num_output_maps // max(self.num_groups, 1),
                                           *self.kernel_size_nd))
        spatial = []
        for i, d in enumerate(m.shape[2:]):
            full = (d - 1) * self.stride_nd[i] + self.dilation_nd[i] * (self.kernel_size_nd[i] - 1) + 1
            out = full - self.pre_padding[i] - self.post_padding[i]
            if d >= 0 and out <= 0:
                raise InvalidNetworkError(f"{self.name}: padding crops the whole output along axis {i}")
            spatial.append(out if d >= 0 else -1)
        return [self._meta((m.shape[0], self.num_output_maps, *spatial), m.dtype)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        x = xs[0]
        nd, groups = len(self.kernel_size_nd), self.num_groups
        x32 = _in_f32(x)
        weight = self._weight(xs, (x.shape[1], self.num_output_maps // groups, *self.kernel_size_nd), x32.dtype)
        y = _DECONV[nd](x32, weight, self._bias(xs, x32.dtype), stride=self.stride_nd, groups=groups,
                        dilation=self.dilation_nd)
        crop = tuple(slice(pre, y.shape[2 + i] - post)
                     for i, (pre, post) in enumerate(zip(self.pre_padding, self.post_padding)))
        return [y[(slice(None), slice(None), *crop)].to(x.dtype)]


# -- matrix multiply, elementwise ----------------------------------------------------------------------------------


class MatrixMultiplyLayer(ReferenceLayer):
    """``C = op0(A) @ op1(B)`` batched over leading dims (broadcast where one is 1)."""

    type = LayerType.MATRIX_MULTIPLY
    _KIND = "Matrix Multiply"
    _MAX_INPUTS = 2
    _PROPERTIES = {"op0": _prop_enum(MatrixOperation), "op1": _prop_enum(MatrixOperation)}

    def __init__(self, network: ReferenceNetwork, a: ReferenceTensor, op0: MatrixOperation,
                 b: ReferenceTensor, op1: MatrixOperation) -> None:
        super().__init__(network, [a, b])
        self.op0 = op0
        self.op1 = op1
        self._finish_init()

    def _split(self, shape: Shape, op: MatrixOperation, first: bool) -> tuple[Shape, int, int | None]:
        """(batch dims, contraction dim, kept dim or None for a vector) of one operand."""
        if op == MatrixOperation.VECTOR:
            if len(shape) < 1:
                raise InvalidNetworkError(f"{self.name}: a VECTOR operand needs rank >= 1")
            return shape[:-1], shape[-1], None
        if len(shape) < 2:
            raise InvalidNetworkError(f"{self.name}: a matrix operand needs rank >= 2, got {shape}")
        rows, cols = shape[-2:] if op == MatrixOperation.NONE else shape[:-3:-1]
        # A is (M, K) and contracts over its columns; B is (K, N) and contracts over its rows.
        return (shape[:-2], cols, rows) if first else (shape[:-2], rows, cols)

    def _infer(self) -> list[_Meta]:
        a, b = self._in(0), self._in(1)
        self._require(a.dtype, _FLOATS, "first input")
        self._same_dtype([a, b], "IMatrixMultiplyLayer inputs")
        batch_a, k_a, m = self._split(a.shape, self.op0, True)
        batch_b, k_b, n = self._split(b.shape, self.op1, False)
        if len(batch_a) != len(batch_b):
            raise InvalidNetworkError(f"{self.name}: inputs must have the same number of batch dims, got "
                                      f"{a.shape} and {b.shape}")
        if k_a >= 0 and k_b >= 0 and k_a != k_b:
            raise InvalidNetworkError(f"{self.name}: contraction dims differ ({k_a} vs {k_b})")
        batch = _broadcast(batch_a, batch_b, self.name)
        return [self._meta(batch + tuple(d for d in (m, n) if d is not None), a.dtype)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        a, b = _in_f32(xs[0]), _in_f32(xs[1])
        a = a.unsqueeze(-2) if self.op0 == MatrixOperation.VECTOR else a
        a = a.transpose(-1, -2) if self.op0 == MatrixOperation.TRANSPOSE else a
        b = b.unsqueeze(-1) if self.op1 == MatrixOperation.VECTOR else b
        b = b.transpose(-1, -2) if self.op1 == MatrixOperation.TRANSPOSE else b
        y = torch.matmul(a, b)
        if self.op1 == MatrixOperation.VECTOR:
            y = y.squeeze(-1)
        if self.op0 == MatrixOperation.VECTOR:
            y = y.squeeze(-1 if self.op1 == MatrixOperation.VECTOR else -2)
        return [y.to(xs[0].dtype)]


_EW = ElementWiseOperation
_EW_LOGIC = {_EW.AND: torch.logical_and, _EW.OR: torch.logical_or, _EW.XOR: torch.logical_xor}
_EW_COMPARE = {_EW.EQUAL: torch.eq, _EW.GREATER: torch.gt, _EW.LESS: torch.lt}


def _ew_int(op: ElementWiseOperation, a: int, b: int) -> int:
    """Scalar integer elementwise, used to propagate build-time shape-tensor values."""
    if op == _EW.DIV:
        return int(a / b)  # truncation toward zero
    return {_EW.SUM: a + b, _EW.PROD: a * b, _EW.MAX: max(a, b), _EW.MIN: min(a, b), _EW.SUB: a - b,
            _EW.FLOOR_DIV: a // b if b else 0, _EW.POW: a ** b if b >= 0 else 0}[op]


class ElementWiseLayer(ReferenceLayer):
    type = LayerType.ELEMENTWISE
    _KIND = "ElementWise"
    _MAX_INPUTS = 2
    _PROPERTIES = {"op": _prop_enum(ElementWiseOperation)}

    def __init__(self, network: ReferenceNetwork, a: ReferenceTensor, b: ReferenceTensor,
                 op: ElementWiseOperation) -> None:
        super().__init__(network, [a, b])
        self.op = op
        self._finish_init()

    def _infer(self) -> list[_Meta]:
        a, b = self._in(0), self._in(1)
        self._same_dtype([a, b], f"ElementWiseOperation {self.op.name} inputs")
        if self.op in _EW_LOGIC:
            self._require(a.dtype, [DataType.BOOL])
        elif self.op not in _EW_COMPARE:
            self._require(a.dtype, [*_FLOATS, *_INTS])
        shape = _broadcast(a.shape, b.shape, self.name)
        out_dtype = DataType.BOOL if self.op in _EW_COMPARE else a.dtype
        value = None
        if a.value is not None and b.value is not None and out_dtype in _SHAPE_INTS and len(shape) <= 1:
            n = max(len(a.value), len(b.value))
            va = a.value * n if len(a.value) == 1 else a.value
            vb = b.value * n if len(b.value) == 1 else b.value
            value = tuple(None if x is None or y is None or (y == 0 and self.op in (_EW.DIV, _EW.FLOOR_DIV))
                          else _ew_int(self.op, x, y) for x, y in zip(va, vb))
        return [self._meta(shape, out_dtype, value)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        a, b = xs
        if self.op in _EW_LOGIC:
            return [_EW_LOGIC[self.op](a, b)]
        if self.op in _EW_COMPARE:
            return [_EW_COMPARE[self.op](a, b)]
        # FP16/BF16: compute in FP32 and round each result to the tensor type.
        x, y = _in_f32(a), _in_f32(b)
        floating = x.is_floating_point()
        if self.op == _EW.DIV:
            out = x / y if floating else torch.div(x, y, rounding_mode="trunc")
        elif self.op == _EW.FLOOR_DIV:
            out = torch.floor(x / y) if floating else torch.div(x, y, rounding_mode="floor")
        else:
            fn = {_EW.SUM: torch.add, _EW.PROD: torch.mul, _EW.MAX: torch.maximum, _EW.MIN: torch.minimum,
                  _EW.SUB: torch.sub, _EW.POW: torch.pow}[self.op]
            out = fn(x, y)
        return [out.to(a.dtype)]


# -- reduce, softmax, normalization --------------------------------------------------------------------------------


class ReduceLayer(ReferenceLayer):
    type = LayerType.REDUCE
    _KIND = "Reduce"
    _PROPERTIES = {"op": _prop_enum(ReduceOperation), "axes": _prop_int, "keep_dims": _prop_bool}

    def __init__(self, network: ReferenceNetwork, tensor: ReferenceTensor, op: ReduceOperation, axes: int,
                 keep_dims: bool) -> None:
        super().__init__(network, [tensor])
        self.op = op
        self.axes = axes
        self.keep_dims = keep_dims
        self._finish_init()

    def _infer(self) -> list[_Meta]:
        m = self._in(0)
        self._require(m.dtype, [*_FLOATS, *_INTS])
        axes = _axes_from_mask(self.axes, len(m.shape), self.name)
        if self.keep_dims:
            shape = tuple(1 if i in axes else d for i, d in enumerate(m.shape))
        else:
            shape = tuple(d for i, d in enumerate(m.shape) if i not in axes)
        return [self._meta(shape, m.dtype)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        x = xs[0]
        axes = _axes_from_mask(self.axes, x.dim(), self.name)
        v = _in_f32(x)
        if self.op == ReduceOperation.SUM:
            y = v.sum(dim=axes, keepdim=True)
        elif self.op == ReduceOperation.MAX:
            y = v.amax(dim=axes, keepdim=True)
        elif self.op == ReduceOperation.MIN:
            y = v.amin(dim=axes, keepdim=True)
        elif self.op == ReduceOperation.PROD:
            y = v
            for axis in axes:  # torch.prod takes one dim at a time
                y = y.prod(dim=axis, keepdim=True)
        else:  # AVG; integers truncate toward zero
            count = _volume([x.shape[a] for a in axes])
            total = v.sum(dim=axes, keepdim=True)
            y = total / count if v.is_floating_point() else torch.div(total, count, rounding_mode="trunc")
        if not self.keep_dims:
            y = y.reshape([d for i, d in enumerate(y.shape) if i not in axes])
        return [y.to(x.dtype)]


class SoftMaxLayer(ReferenceLayer):
    """Softmax along the single axis in ``axes``; default ``1 << (rank-3)`` for rank >= 3, else ``1`` [rtx]."""

    type = LayerType.SOFTMAX
    _KIND = "Softmax"
    _PROPERTIES = {"axes": _prop_int}

    def __init__(self, network: ReferenceNetwork, tensor: ReferenceTensor) -> None:
        super().__init__(network, [tensor])
        rank = len(tensor.shape)
        self.axes = 1 << (rank - 3 if rank >= 3 else 0)
        self._finish_init()

    def _check_property(self, key: str, value: Any) -> None:
        # TensorRT refuses a mask without exactly one bit in setAxes itself and keeps the old value [rtx].
        if value <= 0 or value & (value - 1):
            raise InvalidNetworkError(f"{self.name}: softmax axes {value:#b} must have exactly one bit set")

    def _infer(self) -> list[_Meta]:
        m = self._in(0)
        self._require(m.dtype, _FLOATS)
        _axes_from_mask(self.axes, len(m.shape), self.name)
        return [self._meta(m.shape, m.dtype)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        axis = self.axes.bit_length() - 1
        return [torch.softmax(_in_f32(xs[0]), dim=axis).to(xs[0].dtype)]


class NormalizationLayer(ReferenceLayer):
    """``Y = (X - mean) / sqrt(var + eps) * S + B`` over the masked axes; statistics in FP32.

    ``scale``/``bias``: same rank as X, broadcastable (e.g. ``(1, 1, C)`` for a ``(N, L, C)`` LayerNorm).
    ``num_groups > 1``: channel dim 1 is split into groups and each group is normalised over its channels and
    the masked axes (GroupNorm); scale/bias stay per channel ``(1, C, 1, 1)``.
    """

    type = LayerType.NORMALIZATION
    _KIND = "Normalization"
    _MAX_INPUTS = 3
    _PROPERTIES = {"epsilon": _prop_float, "axes": _prop_int, "num_groups": _prop_int}

    def __init__(self, network: ReferenceNetwork, x: ReferenceTensor, scale: ReferenceTensor,
                 bias: ReferenceTensor, axes: int, is_v2: bool) -> None:
        super().__init__(network, [x, scale, bias])
        self.epsilon = 1e-5
        self.axes = axes
        self.num_groups = 1
        self._is_v2 = is_v2
        self._finish_init()

    @property
    def is_v2(self) -> bool:
        return self._is_v2

    def _infer(self) -> list[_Meta]:
        x, s, b = self._in(0), self._in(1), self._in(2)
        self._require(x.dtype, _FLOATS)
        for what, m in (("scale", s), ("bias", b)):
            if m.dtype != x.dtype:
                raise StrongTypingError(f"{self.name}: `input` and `{what}` must have identical types, input is "
                                        f"{x.dtype.name} and {what} is {m.dtype.name}")
            if len(m.shape) != len(x.shape):
                raise InvalidNetworkError(
                    f"{self.name}: {what} rank {len(m.shape)} must equal input rank {len(x.shape)}")
            if _broadcast(m.shape, x.shape, self.name) != x.shape and _is_static(x.shape):
                raise InvalidNetworkError(f"{self.name}: {what} {m.shape} does not broadcast to input {x.shape}")
        _axes_from_mask(self.axes, len(x.shape), self.name)
        if self.num_groups < 1 or (self.num_groups > 1 and (len(x.shape) < 2 or x.shape[1] % self.num_groups)):
            raise InvalidNetworkError(
                f"{self.name}: {self.num_groups} groups do not divide the channel dim of {x.shape}")
        return [self._meta(x.shape, x.dtype)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        x, scale, bias = xs
        v = x.float()
        axes = _axes_from_mask(self.axes, x.dim(), self.name)
        if self.num_groups > 1:
            grouped = v.reshape(v.shape[0], self.num_groups, -1, *v.shape[2:])
            dims = tuple(sorted({2} | {a + 1 for a in axes if a >= 1} | ({0} if 0 in axes else set())))
            mean = grouped.mean(dim=dims, keepdim=True)
            var = ((grouped - mean) ** 2).mean(dim=dims, keepdim=True)
            normed = ((grouped - mean) / torch.sqrt(var + self.epsilon)).reshape(v.shape)
        else:
            mean = v.mean(dim=axes, keepdim=True)
            var = ((v - mean) ** 2).mean(dim=axes, keepdim=True)  # biased variance, as documented
            normed = (v - mean) / torch.sqrt(var + self.epsilon)
        return [(normed * scale.float() + bias.float()).to(x.dtype)]


# -- shuffle, slice, concat, gather ----------------------------------------------------------------------------------


def _check_perm(perm: Shape, rank: int, who: str) -> Shape:
    """First ``rank`` entries of a TensorRT Permutation (its default is the 8-entry identity)."""
    perm = tuple(perm[:rank])
    if sorted(perm) != list(range(rank)):
        raise InvalidNetworkError(f"{who}: {perm} is not a permutation of {rank} dims")
    return perm


_IDENTITY_PERM = tuple(range(8))


class ShuffleLayer(ReferenceLayer):
    """Transpose -> reshape -> transpose. In ``reshape_dims`` 0 copies the input dim (``zero_is_placeholder``)
    and -1 is inferred; ``set_input(1, shape_tensor)`` gives the reshape dims at runtime."""

    type = LayerType.SHUFFLE
    _KIND = "Shuffle"
    _MAX_INPUTS = 2
    _DEFER_SHAPE_ERRORS = True
    _PROPERTIES = {"first_transpose": _as_dims, "reshape_dims": _prop_dims_or_none,
                   "second_transpose": _as_dims, "zero_is_placeholder": _prop_bool}

    def __init__(self, network: ReferenceNetwork, tensor: ReferenceTensor) -> None:
        super().__init__(network, [tensor])
        self.first_transpose = _IDENTITY_PERM
        self.reshape_dims = None
        self.second_transpose = _IDENTITY_PERM
        self.zero_is_placeholder = True
        self._finish_init()

    def _target(self, in_shape: Shape, dims: Sequence[int | None], symbols: Sequence[object], runtime: bool) -> Shape:
        """Reshape target. ``dims`` entries: int, or None = unknown until runtime.

        ``symbols[i]`` names input dim i when it is dynamic so a ``-1`` can still be solved when the dynamic
        dims are copied through by 0 placeholders (TensorRT resolves ``(2,-1,4) -> (0,0,2,-1)`` to ``(2,-1,2,2)``).
        """
        out: list[int] = []
        out_symbols: list[object] = []
        wildcard = None
        for i, d in enumerate(dims):
            if d == 0 and self.zero_is_placeholder:
                if i >= len(in_shape):
                    raise InvalidNetworkError(
                        f"{self.name}: placeholder 0 at position {i} but input rank is {len(in_shape)}")
                out.append(in_shape[i])
                if in_shape[i] < 0:
                    out_symbols.append(symbols[i])
            elif d == -1:
                if wildcard is not None:
                    raise InvalidNetworkError(f"{self.name}: reshape dims {tuple(dims)} have more than one -1")
                wildcard = i
                out.append(-1)
            elif d is None:
                out.append(-1)
                out_symbols.append(object())  # unknown, matches nothing
            elif d < -1:
                raise InvalidNetworkError(f"{self.name}: invalid reshape dim {d}")
            else:
                out.append(d)
        known_out = _volume(d for i, d in enumerate(out) if i != wildcard and d >= 0)
        known_in = _volume(d for d in in_shape if d >= 0)
        in_symbols = [symbols[i] for i, d in enumerate(in_shape) if d < 0]
        solvable = sorted(map(id, in_symbols)) == sorted(map(id, out_symbols))
        if wildcard is not None:
            if solvable:
                if known_out == 0 or known_in % known_out:
                    raise InvalidNetworkError(
                        f"{self.name}: reshape -1 in {tuple(dims)} has no integer solution for {in_shape}")
                out[wildcard] = known_in // known_out
        elif solvable and known_in != known_out:
            raise InvalidNetworkError(f"{self.name}: cannot reshape {in_shape} to {tuple(out)} (volumes differ)")
        if runtime and min(out, default=0) < 0:
            raise InvalidNetworkError(f"{self.name}: reshape to {tuple(dims)} unresolved at runtime")
        return tuple(out)

    def _infer(self) -> list[_Meta]:
        m = self._in(0)
        perm = _check_perm(self.first_transpose, len(m.shape), self.name)
        shape = tuple(m.shape[p] for p in perm)
        symbols = [object() for _ in shape]
        value = m.value if len(m.shape) <= 1 else None
        dims: Sequence[int | None] | None = self.reshape_dims
        if len(self._inputs) > 1 and self._inputs[1] is not None:
            shape_in = self._in(1)
            self._require(shape_in.dtype, _SHAPE_INTS, "reshape shape tensor")
            if len(shape_in.shape) != 1 or shape_in.shape[0] < 0:
                raise InvalidNetworkError(f"{self.name}: the reshape shape tensor must be 1-D with a static length")
            dims = shape_in.value if shape_in.value is not None else (None,) * shape_in.shape[0]
        if dims is not None:
            shape = self._target(shape, dims, symbols, runtime=False)
        perm2 = _check_perm(self.second_transpose, len(shape), self.name)
        shape = tuple(shape[p] for p in perm2)
        if value is not None and (len(shape) > 1 or not _is_static(shape)):
            value = None
        return [self._meta(shape, m.dtype, value)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        x = xs[0].permute(_check_perm(self.first_transpose, xs[0].dim(), self.name))
        dims = self.reshape_dims
        if len(xs) > 1 and xs[1] is not None:
            dims = _torch_value(xs[1])
        if dims is not None:
            x = x.reshape(self._target(tuple(x.shape), dims, [None] * x.dim(), runtime=True))
        return [x.permute(_check_perm(self.second_transpose, x.dim(), self.name)).contiguous()]


def _sample_indices(start: int, size: int, stride: int, n: int, mode: SampleMode,
                    who: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Source indices of one sliced dim and, for FILL, the in-bounds mask."""
    idx = start + stride * torch.arange(size, dtype=torch.int64)
    inside = (idx >= 0) & (idx < n)
    if mode == SampleMode.STRICT_BOUNDS:
        if not bool(inside.all()):
            raise InvalidNetworkError(
                f"{who}: out of bounds slice (start {start}, size {size}, stride {stride}, dim {n})")
        return idx, None
    if n == 0:
        if size:
            raise InvalidNetworkError(f"{who}: cannot sample a non-empty slice from an empty dim in mode {mode.name}")
        return idx, None
    if mode == SampleMode.WRAP:
        return torch.remainder(idx, n), None
    if mode == SampleMode.CLAMP:
        return idx.clamp(0, n - 1), None
    if mode == SampleMode.REFLECT:
        if n == 1:
            return torch.zeros_like(idx), None
        period = 2 * (n - 1)  # reflect without repeating the edge: 0 1 .. n-1 n-2 .. 1 0 1 ..
        r = torch.remainder(idx, period)
        return torch.where(r >= n, period - r, r), None
    return idx.clamp(0, n - 1), inside  # FILL


class SliceLayer(ReferenceLayer):
    """``output[i] = input[start + i * stride]`` per dim, out-of-range handled by ``mode``.

    ``set_input(1|2|3, t)`` replaces start/shape/stride by 1-D INT32/INT64 shape tensors; ``set_input(4, v)``
    is the FILL value (scalar, input dtype).
    """

    type = LayerType.SLICE
    _KIND = "Slice"
    _MAX_INPUTS = 5
    _DEFER_SHAPE_ERRORS = True
    _PROPERTIES = {"start": _as_dims, "shape": _as_dims, "stride": _as_dims, "mode": _prop_enum(SampleMode)}

    def __init__(self, network: ReferenceNetwork, tensor: ReferenceTensor, start: Shape, shape: Shape,
                 stride: Shape) -> None:
        super().__init__(network, [tensor])
        self.start = start
        self.shape = shape
        self.stride = stride
        self.mode = SampleMode.STRICT_BOUNDS
        self._finish_init()

    def _param(self, index: int, static: Shape, rank: int) -> tuple[int | None, ...]:
        """Build-time start/shape/stride: from the static dims or the shape tensor at ``index``."""
        if len(self._inputs) > index and self._inputs[index] is not None:
            m = self._in(index)
            self._require(m.dtype, _SHAPE_INTS, f"input {index}")
            if m.shape != (rank,):
                raise InvalidNetworkError(f"{self.name}: input {index} must have shape ({rank},), got {m.shape}")
            return m.value if m.value is not None else (None,) * rank
        if len(static) != rank:
            raise InvalidNetworkError(f"{self.name}: {static} must have {rank} entries for a rank-{rank} input")
        return static

    def _infer(self) -> list[_Meta]:
        m = self._in(0)
        rank = len(m.shape)
        start = self._param(1, self.start, rank)
        size = self._param(2, self.shape, rank)
        stride = self._param(3, self.stride, rank)
        if len(self._inputs) > 4 and self._inputs[4] is not None:
            if self.mode != SampleMode.FILL:
                raise InvalidNetworkError(f"{self.name}: a fill value (input 4) needs mode FILL")
            if self._in(4).dtype != m.dtype:
                raise StrongTypingError(f"{self.name}: fill value must have the input's type {m.dtype.name}")
        if any(s is not None and s < 0 for s in size):
            raise InvalidNetworkError(f"{self.name}: negative slice size {size}")
        out = tuple(-1 if s is None else s for s in size)
        for d, (b, s, st, n) in enumerate(zip(start, size, stride, m.shape)):
            if None in (b, s, st) or n < 0:
                continue
            _sample_indices(b, s, st, n, self.mode, self.name)  # raises for out-of-bounds STRICT_BOUNDS
        value = None
        if m.value is not None and rank == 1 and None not in (*start, *size, *stride):
            idx, inside = _sample_indices(start[0], size[0], stride[0], len(m.value), self.mode, self.name)
            value = tuple(m.value[i] if inside is None or inside[k] else 0 for k, i in enumerate(idx.tolist()))
        return [self._meta(out, m.dtype, value)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        x = xs[0]
        rank = x.dim()
        params = []
        for index, static in ((1, self.start), (2, self.shape), (3, self.stride)):
            params.append(_torch_value(xs[index]) if len(xs) > index and xs[index] is not None else list(static))
        mask = None
        for axis, (b, s, st) in enumerate(zip(*params)):
            idx, inside = _sample_indices(b, s, st, x.shape[axis], self.mode, self.name)
            x = x.index_select(axis, idx)
            if inside is not None:
                view = [1] * rank
                view[axis] = s
                m = inside.reshape(view)
                mask = m if mask is None else mask & m
        if mask is not None:
            fill = xs[4].reshape(()) if len(xs) > 4 and xs[4] is not None else torch.zeros((), dtype=x.dtype)
            x = torch.where(mask, x, fill.to(x.dtype))
        return [x.contiguous()]


class ConcatenationLayer(ReferenceLayer):
    """Concatenate along ``axis``; default ``rank-3`` for rank >= 3, else 0 (1 for NCHW) [rtx]."""

    type = LayerType.CONCATENATION
    _KIND = "Concatenation"
    _DEFER_SHAPE_ERRORS = True
    _PROPERTIES = {"axis": _prop_int}

    def __init__(self, network: ReferenceNetwork, inputs: Sequence[ReferenceTensor]) -> None:
        if not inputs:
            raise InvalidNetworkError("add_concatenation needs at least one input")
        super().__init__(network, list(inputs))
        rank = len(inputs[0].shape)
        self.axis = rank - 3 if rank >= 3 else 0
        self._finish_init()

    @property
    def _MAX_INPUTS(self) -> int:  # type: ignore[override]
        return len(self._inputs)

    def _infer(self) -> list[_Meta]:
        metas = [self._in(i) for i in range(len(self._inputs))]
        self._same_dtype(metas, "IConcatenationLayer inputs")
        rank = len(metas[0].shape)
        if not 0 <= self.axis < rank:
            raise InvalidNetworkError(f"{self.name}: axis {self.axis} out of range for rank {rank}")
        shape = list(metas[0].shape)
        for m in metas[1:]:
            if len(m.shape) != rank:
                raise InvalidNetworkError(f"{self.name}: inputs must have equal rank")
            for d, (x, y) in enumerate(zip(shape, m.shape)):
                if d == self.axis:
                    shape[d] = x + y if x >= 0 and y >= 0 else -1
                elif x >= 0 and y >= 0 and x != y:
                    raise InvalidNetworkError(f"{self.name}: dim {d} differs ({x} vs {y}) outside the concat axis")
                elif x < 0:
                    shape[d] = y
        value = None
        if rank == 1 and all(m.value is not None for m in metas):
            value = tuple(v for m in metas for v in m.value)
        return [self._meta(tuple(shape), metas[0].dtype, value)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        return [torch.cat(xs, dim=self.axis)]


class GatherLayer(ReferenceLayer):
    """DEFAULT-mode gather: ``out = data.take(indices, axis)``; negative indices count from the end."""

    type = LayerType.GATHER
    _KIND = "Gather"
    _MAX_INPUTS = 2
    _PROPERTIES = {"axis": _prop_int, "num_elementwise_dims": _prop_int}

    def __init__(self, network: ReferenceNetwork, data: ReferenceTensor, indices: ReferenceTensor, axis: int) -> None:
        super().__init__(network, [data, indices])
        self.axis = axis
        self.num_elementwise_dims = 0
        self._finish_init()

    def _infer(self) -> list[_Meta]:
        data, idx = self._in(0), self._in(1)
        self._require(idx.dtype, _SHAPE_INTS, "indices")
        if self.num_elementwise_dims != 0:
            raise InvalidNetworkError(f"{self.name}: the reference supports num_elementwise_dims == 0 only")
        if not 0 <= self.axis < len(data.shape):
            raise InvalidNetworkError(f"{self.name}: axis {self.axis} out of range for {data.shape}")
        shape = data.shape[: self.axis] + idx.shape + data.shape[self.axis + 1:]
        value = None
        if data.value is not None and idx.value is not None and len(shape) <= 1:
            n = len(data.value)
            value = tuple(None if i is None else data.value[i % n] for i in idx.value)
        return [self._meta(shape, data.dtype, value)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        data, idx = xs
        n = data.shape[self.axis]
        flat = torch.remainder(idx.reshape(-1).long(), n)
        y = data.index_select(self.axis, flat)
        return [y.reshape(data.shape[: self.axis] + idx.shape + data.shape[self.axis + 1:])]


# -- unary, activation ---------------------------------------------------------------------------------------------

_U = UnaryOperation
_UNARY: dict[UnaryOperation, Callable[[torch.Tensor], torch.Tensor]] = {
    _U.EXP: torch.exp, _U.LOG: torch.log, _U.SQRT: torch.sqrt, _U.RECIP: torch.reciprocal, _U.ABS: torch.abs,
    _U.NEG: torch.neg, _U.SIN: torch.sin, _U.COS: torch.cos, _U.TAN: torch.tan, _U.SINH: torch.sinh,
    _U.COSH: torch.cosh, _U.ASIN: torch.asin, _U.ACOS: torch.acos, _U.ATAN: torch.atan, _U.ASINH: torch.asinh,
    _U.ACOSH: torch.acosh, _U.ATANH: torch.atanh, _U.CEIL: torch.ceil, _U.FLOOR: torch.floor, _U.ERF: torch.erf,
    _U.NOT: torch.logical_not, _U.SIGN: torch.sign, _U.ROUND: torch.round,  # torch.round is half-to-even
    _U.ISINF: torch.isinf, _U.ISNAN: torch.isnan,
}
_UNARY_INT_OK = frozenset({_U.ABS, _U.NEG, _U.SIGN})  # [rtx]: NEG on INT64 builds, EXP on INT32 does not


class UnaryLayer(ReferenceLayer):
    type = LayerType.UNARY
    _KIND = "Unary"
    _PROPERTIES = {"op": _prop_enum(UnaryOperation)}

    def __init__(self, network: ReferenceNetwork, tensor: ReferenceTensor, op: UnaryOperation) -> None:
        super().__init__(network, [tensor])
        self.op = op
        self._finish_init()

    def _infer(self) -> list[_Meta]:
        m = self._in(0)
        if self.op == _U.NOT:
            self._require(m.dtype, [DataType.BOOL])
        else:
            self._require(m.dtype, [*_FLOATS, *_INTS] if self.op in _UNARY_INT_OK else _FLOATS)
        out_dtype = DataType.BOOL if self.op in (_U.ISINF, _U.ISNAN) else m.dtype
        return [self._meta(m.shape, out_dtype)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        y = _UNARY[self.op](_in_f32(xs[0]))
        return [y if y.dtype == torch.bool else y.to(xs[0].dtype)]


_A = ActivationType


def _activation(kind: ActivationType, x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    if kind == _A.RELU:
        return torch.relu(x)
    if kind == _A.SIGMOID:
        return torch.sigmoid(x)
    if kind == _A.TANH:
        return torch.tanh(x)
    if kind == _A.LEAKY_RELU:
        return torch.where(x >= 0, x, alpha * x)
    if kind == _A.CLIP:
        return x.clamp(alpha, beta)
    if kind == _A.GELU_ERF:
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if kind == _A.GELU_TANH:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    raise InvalidNetworkError(f"activation {kind.name} is not implemented by the reference")


class ActivationLayer(ReferenceLayer):
    """RELU, SIGMOID, TANH, LEAKY_RELU(alpha), CLIP(alpha, beta), GELU_ERF, GELU_TANH."""

    type = LayerType.ACTIVATION
    _KIND = "Activation"
    _IMPLEMENTED = frozenset({_A.RELU, _A.SIGMOID, _A.TANH, _A.LEAKY_RELU, _A.CLIP, _A.GELU_ERF, _A.GELU_TANH})
    _PROPERTIES = {"type": _prop_enum(ActivationType), "alpha": _prop_float, "beta": _prop_float}

    def __init__(self, network: ReferenceNetwork, tensor: ReferenceTensor, kind: ActivationType) -> None:
        super().__init__(network, [tensor])
        # ``type`` is the activation kind here, as in TensorRT's IActivationLayer (it shadows ILayer.type).
        self.type = kind  # type: ignore[misc]
        self.alpha = 0.0
        self.beta = 0.0
        self._finish_init()

    def _infer(self) -> list[_Meta]:
        m = self._in(0)
        if self.type not in self._IMPLEMENTED:
            raise InvalidNetworkError(f"{self.name}: activation {self.type.name} is not implemented by the reference")
        self._require(m.dtype, [*_FLOATS, *_INTS] if self.type == _A.RELU else _FLOATS)
        return [self._meta(m.shape, m.dtype)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        return [_activation(self.type, _in_f32(xs[0]), self.alpha, self.beta).to(xs[0].dtype)]


# -- quantize / dequantize -----------------------------------------------------------------------------------------


class _QdqBase(ReferenceLayer):
    """Shared checks: scale is a build-time constant, scalar or 1-D (size 1 or the size of dim ``axis``)."""

    _MAX_INPUTS = 2
    _PROPERTIES = {"axis": _prop_int, "to_type": _prop_enum(DataType)}

    def __init__(self, network: ReferenceNetwork, tensor: ReferenceTensor, scale: ReferenceTensor,
                 output_type: DataType) -> None:
        super().__init__(network, [tensor, scale])
        self.axis = -1
        self.to_type = output_type
        self._finish_init()

    def _check_scale(self, x: _Meta) -> None:
        s = self._in(1)
        self._require(s.dtype, _FLOATS, "scale")
        if not s.const:
            raise InvalidNetworkError(f"{self.name}: the scale must be a build-time constant (add_constant)")
        if len(s.shape) > 1:
            raise InvalidNetworkError(f"{self.name}: scale must be a scalar or 1-D, got {s.shape}")
        if len(s.shape) == 1 and s.shape[0] != 1:
            axis = self.axis % len(x.shape) if x.shape else 0
            if x.shape and x.shape[axis] >= 0 and x.shape[axis] != s.shape[0]:
                raise _PropertyDependentError(
                    f"{self.name}: {s.shape[0]} scales but dim {axis} of {x.shape} has {x.shape[axis]} (set .axis)")

    def _scale_view(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Scale shaped to broadcast along ``axis``."""
        s = scale.float().reshape(-1)
        if s.numel() == 1 or x.dim() == 0:
            return s.reshape(())
        view = [1] * x.dim()
        view[self.axis % x.dim()] = s.numel()
        return s.reshape(view)


class QuantizeLayer(_QdqBase):
    """``y = clamp(round_half_even(x / scale), -128, 127)`` as INT8 (symmetric, zero point 0)."""

    type = LayerType.QUANTIZE
    _KIND = "Quantize"

    def _infer(self) -> list[_Meta]:
        x = self._in(0)
        self._require(x.dtype, _FLOATS)
        self._require(self.to_type, [DataType.INT8], "output type (reference supports INT8 only)")
        self._check_scale(x)
        return [self._meta(x.shape, self.to_type, const=False)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        x, scale = xs
        q = torch.round(x.float() / self._scale_view(x, scale))  # torch.round rounds half to even
        return [q.clamp(-128, 127).to(torch.int8)]


class DequantizeLayer(_QdqBase):
    """``y = x * scale`` from INT8 to ``output_type`` (FLOAT/HALF/BF16)."""

    type = LayerType.DEQUANTIZE
    _KIND = "Dequantize"

    def _infer(self) -> list[_Meta]:
        x = self._in(0)
        self._require(x.dtype, [DataType.INT8])
        self._require(self.to_type, _FLOATS, "output type")
        self._check_scale(x)
        return [self._meta(x.shape, self.to_type, const=False)]

    def _run(self, xs: list[torch.Tensor | None]) -> list[torch.Tensor]:
        x, scale = xs
        return [(x.float() * self._scale_view(x, scale)).to(_TORCH_DTYPE[self.to_type])]


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


# --------------------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------------------


class ReferenceNetwork:
    """The ``INetworkDefinition`` subset (strongly typed, explicit batch) with a CPU ``execute``."""

    def __init__(self) -> None:
        self.name = "reference_network"
        self._inputs: list[ReferenceTensor] = []
        self._outputs: list[ReferenceTensor] = []
        self._layers: list[ReferenceLayer] = []

    # -- bookkeeping ----------------------------------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def get_input(self, index: int) -> ReferenceTensor:
        return self._inputs[index]

    def get_output(self, index: int) -> ReferenceTensor:
        return self._outputs[index]

    def get_layer(self, index: int) -> ReferenceLayer:
        return self._layers[index]

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self):
        return iter(self._layers)

    def _own(self, tensor: Any, who: str) -> ReferenceTensor:
        if not isinstance(tensor, ReferenceTensor) or tensor._network is not self:
            raise TypeError(f"{who}: expected a tensor of this ReferenceNetwork, got {tensor!r}")
        return tensor

    def _infer_layer(self, layer: ReferenceLayer) -> Exception | None:
        """Run one layer's build-time checks; store output metas, or the error for later."""
        try:
            metas = layer._infer()
        except (TypeError, ValueError) as exc:
            layer._error = exc
            for t in layer._outputs:
                t._meta = None
            return exc
        layer._error = None
        for t, m in zip(layer._outputs, metas):
            t._meta = m
        return None

    def _add(self, make: Callable[[], ReferenceLayer], inputs: Sequence[Any], who: str) -> Any:
        """Create a layer; raise typing errors at once, and shape errors unless a later property may fix them."""
        tensors = [self._own(t, who) for t in inputs if t is not None]
        layer = make()
        self._layers.append(layer)
        err = self._infer_layer(layer)
        upstream_pending = any(t._meta is None for t in tensors)
        deferrable = isinstance(err, _PropertyDependentError) or (
            layer._DEFER_SHAPE_ERRORS and not isinstance(err, StrongTypingError))
        if err is not None and not upstream_pending and not deferrable:
            self._layers.pop()
            raise err
        for t in tensors:
            t._consumers.append(layer)
        return layer

    def _refresh(self, layer: ReferenceLayer) -> None:
        """Re-infer a layer after a property/input change and propagate changed metas to its consumers."""
        pending = [layer]
        while pending:
            current = pending.pop(0)
            before = [t._meta for t in current._outputs]
            self._infer_layer(current)
            if [t._meta for t in current._outputs] != before:
                pending.extend(c for t in current._outputs for c in t._consumers if any(i is t for i in c._inputs))

    # -- tensors --------------------------------------------------------------------------------------------------
    def add_input(self, name: str, dtype: DataType, shape: Sequence[int]) -> ReferenceTensor:
        """A network input; -1 in ``shape`` marks a dynamic dim."""
        if any(t.name == name for t in self._inputs):
            raise InvalidNetworkError(f"duplicate input name {name!r}")
        shape = _as_dims(shape)
        if any(d < -1 for d in shape):
            raise InvalidNetworkError(f"input {name!r}: invalid dims {shape}")
        tensor = ReferenceTensor(self, name, None)
        tensor._meta = _Meta(shape, _coerce_enum(dtype, DataType))
        self._inputs.append(tensor)
        return tensor

    def mark_output(self, tensor: ReferenceTensor) -> None:
        tensor = self._own(tensor, "mark_output")
        tensor._m()
        if tensor.is_network_output:
            return
        self._outputs.append(tensor)

    def unmark_output(self, tensor: ReferenceTensor) -> None:
        self._outputs = [t for t in self._outputs if t is not tensor]

    # -- layers ---------------------------------------------------------------------------------------------------
    def add_constant(self, shape: Sequence[int], weights: np.ndarray) -> ConstantLayer:
        return self._add(lambda: ConstantLayer(self, _as_dims(shape), weights), [], "add_constant")

    def add_shape(self, input: ReferenceTensor) -> ShapeLayer:
        return self._add(lambda: ShapeLayer(self, input), [input], "add_shape")

    def add_identity(self, input: ReferenceTensor) -> IdentityLayer:
        return self._add(lambda: IdentityLayer(self, input), [input], "add_identity")

    def add_cast(self, input: ReferenceTensor, to_type: DataType) -> CastLayer:
        return self._add(lambda: CastLayer(self, input, to_type), [input], "add_cast")

    def add_convolution_nd(self, input: ReferenceTensor, num_output_maps: int, kernel_shape: Sequence[int],
                           kernel: Any, bias: Any = None) -> ConvolutionLayer:
        return self._add(lambda: ConvolutionLayer(self, input, num_output_maps, kernel_shape, kernel, bias),
                         [input], "add_convolution_nd")

    def add_deconvolution_nd(self, input: ReferenceTensor, num_output_maps: int, kernel_shape: Sequence[int],
                             kernel: Any, bias: Any = None) -> DeconvolutionLayer:
        return self._add(lambda: DeconvolutionLayer(self, input, num_output_maps, kernel_shape, kernel, bias),
                         [input], "add_deconvolution_nd")

    def add_matrix_multiply(self, input0: ReferenceTensor, op0: MatrixOperation, input1: ReferenceTensor,
                            op1: MatrixOperation) -> MatrixMultiplyLayer:
        return self._add(lambda: MatrixMultiplyLayer(self, input0, op0, input1, op1), [input0, input1],
                         "add_matrix_multiply")

    def add_elementwise(self, input1: ReferenceTensor, input2: ReferenceTensor,
                        op: ElementWiseOperation) -> ElementWiseLayer:
        return self._add(lambda: ElementWiseLayer(self, input1, input2, op), [input1, input2], "add_elementwise")

    def add_reduce(self, input: ReferenceTensor, op: ReduceOperation, axes: int, keep_dims: bool) -> ReduceLayer:
        return self._add(lambda: ReduceLayer(self, input, op, axes, keep_dims), [input], "add_reduce")

    def add_softmax(self, input: ReferenceTensor) -> SoftMaxLayer:
        return self._add(lambda: SoftMaxLayer(self, input), [input], "add_softmax")

    def add_unary(self, input: ReferenceTensor, op: UnaryOperation) -> UnaryLayer:
        return self._add(lambda: UnaryLayer(self, input, op), [input], "add_unary")

    def add_activation(self, input: ReferenceTensor, type: ActivationType) -> ActivationLayer:
        return self._add(lambda: ActivationLayer(self, input, type), [input], "add_activation")

    def add_shuffle(self, input: ReferenceTensor) -> ShuffleLayer:
        return self._add(lambda: ShuffleLayer(self, input), [input], "add_shuffle")

    def add_slice(self, input: ReferenceTensor, start: Sequence[int], shape: Sequence[int],
                  stride: Sequence[int]) -> SliceLayer:
        return self._add(lambda: SliceLayer(self, input, _as_dims(start), _as_dims(shape), _as_dims(stride)),
                         [input], "add_slice")

    def add_concatenation(self, inputs: Sequence[ReferenceTensor]) -> ConcatenationLayer:
        return self._add(lambda: ConcatenationLayer(self, list(inputs)), list(inputs), "add_concatenation")

    def add_gather(self, input: ReferenceTensor, indices: ReferenceTensor, axis: int) -> GatherLayer:
        return self._add(lambda: GatherLayer(self, input, indices, axis), [input, indices], "add_gather")

    def add_normalization(self, input: ReferenceTensor, scale: ReferenceTensor, bias: ReferenceTensor,
                          axesMask: int) -> NormalizationLayer:
        return self._add(lambda: NormalizationLayer(self, input, scale, bias, axesMask, is_v2=False),
                         [input, scale, bias], "add_normalization")

    def add_normalization_v2(self, input: ReferenceTensor, scale: ReferenceTensor, bias: ReferenceTensor,
                             axesMask: int) -> NormalizationLayer:
        return self._add(lambda: NormalizationLayer(self, input, scale, bias, axesMask, is_v2=True),
                         [input, scale, bias], "add_normalization_v2")

    def add_quantize(self, input: ReferenceTensor, scale: ReferenceTensor,
                     output_type: DataType = DataType.INT8) -> QuantizeLayer:
        return self._add(lambda: QuantizeLayer(self, input, scale, output_type), [input, scale], "add_quantize")

    def add_dequantize(self, input: ReferenceTensor, scale: ReferenceTensor,
                       output_type: DataType = DataType.FLOAT) -> DequantizeLayer:
        return self._add(lambda: DequantizeLayer(self, input, scale, output_type), [input, scale], "add_dequantize")

    def add_plugin_v3(self, inputs: Sequence[ReferenceTensor], shape_inputs: Sequence[ReferenceTensor],
                      plugin: _ReferencePlugin) -> PluginV3Layer:
        if len(shape_inputs):
            raise InvalidNetworkError("add_plugin_v3: the reference plugins take no shape inputs")
        return self._add(lambda: PluginV3Layer(self, list(inputs), plugin), list(inputs), "add_plugin_v3")

    # -- build-time validation and execution ------------------------------------------------------------------------
    def _order(self, layers: Iterable[ReferenceLayer]) -> list[ReferenceLayer]:
        """Producers before consumers (``set_input`` may point at a later layer's tensor); detects cycles."""
        order: list[ReferenceLayer] = []
        state: dict[int, int] = {}  # 1 = on the stack, 2 = done
        for root in layers:
            stack = [(root, False)]
            while stack:
                layer, expanded = stack.pop()
                if expanded:
                    state[id(layer)] = 2
                    order.append(layer)
                    continue
                if state.get(id(layer)) == 2:
                    continue
                if state.get(id(layer)) == 1:
                    raise InvalidNetworkError(f"{layer.name}: the network has a cycle")
                state[id(layer)] = 1
                stack.append((layer, True))
                for t in layer._inputs:
                    if t is not None and t._producer is not None and state.get(id(t._producer)) != 2:
                        if state.get(id(t._producer)) == 1:
                            raise InvalidNetworkError(f"{layer.name}: the network has a cycle")
                        stack.append((t._producer, False))
        return order

    def validate(self) -> None:
        """Re-run every layer's build-time checks in dependency order; raise the first error (like a build)."""
        for layer in self._order(self._layers):
            err = self._infer_layer(layer)
            if err is not None:
                raise err
        if not self._outputs:
            raise InvalidNetworkError("the network has no outputs (mark_output)")
        names = [t.name for t in self._outputs]
        if len(set(names)) != len(names):
            raise InvalidNetworkError(f"output names are not unique: {names}")

    @torch.no_grad()
    def execute(self, inputs: Mapping[str, torch.Tensor | np.ndarray],
                debug_tensors: Sequence[ReferenceTensor] = ()) -> dict[str, torch.Tensor]:
        """Run the network on CPU.

        Args:
            inputs: name -> array with exactly the dtype given to ``add_input``; static dims must match.
            debug_tensors: extra tensors to return (by name), e.g. to bisect a mismatch.
        Returns:
            name -> CPU torch tensor for every marked output (and each debug tensor).
        """
        self.validate()
        values: dict[int, torch.Tensor] = {}
        for tensor in self._inputs:
            if tensor.name not in inputs:
                raise KeyError(f"missing input {tensor.name!r}")
            arr = inputs[tensor.name]
            x = torch.from_numpy(np.ascontiguousarray(arr)) if isinstance(arr, np.ndarray) else arr.detach().cpu()
            expected = _TORCH_DTYPE[tensor.dtype]
            if x.dtype != expected:
                raise TypeError(f"input {tensor.name!r} must be {expected}, got {x.dtype}")
            shape = tensor.shape
            if x.dim() != len(shape) or any(d >= 0 and d != s for d, s in zip(shape, x.shape)):
                raise ValueError(f"input {tensor.name!r} has shape {tuple(x.shape)}, network expects {shape}")
            values[id(tensor)] = x
        unknown = set(inputs) - {t.name for t in self._inputs}
        if unknown:
            raise KeyError(f"unknown inputs {sorted(unknown)}")

        wanted = [*self._outputs, *debug_tensors]
        order = self._order(t._producer for t in wanted if t._producer is not None)
        # Drop each intermediate after its last consumer: full-size MST++ activations are ~30-120 MB each.
        last_use = {id(t): step for step, layer in enumerate(order) for t in layer._inputs if t is not None}
        keep = {id(t) for t in wanted}
        for step, layer in enumerate(order):
            xs = [None if t is None else values[id(t)] for t in layer._inputs]
            try:
                ys = layer._run(xs)
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                raise ReferenceRuntimeError(f"{layer.name}: {exc}") from exc
            for t, y in zip(layer._outputs, ys):
                if y.dtype != _TORCH_DTYPE[t.dtype]:  # a bug in this executor, not in the network
                    raise ReferenceRuntimeError(f"{layer.name}: produced {y.dtype}, declared {t.dtype.name}")
                values[id(t)] = y
            for t in layer._inputs:
                if t is not None and last_use.get(id(t)) == step and id(t) not in keep:
                    values.pop(id(t), None)
        return {t.name: values[id(t)] for t in wanted}


def create_reference_network() -> ReferenceNetwork:
    """A fresh, empty :class:`ReferenceNetwork` (the counterpart of ``builder.create_network(flags)``)."""
    return ReferenceNetwork()


# --------------------------------------------------------------------------------------------------------------
# The ``trt_module`` stand-in handed to the builder. (A namespace rather than module globals so that the
# aliases ``bool``/``float32``... do not shadow Python builtins inside this file.)
# --------------------------------------------------------------------------------------------------------------

ref_trt = types.SimpleNamespace(
    __name__="trt_reference",
    DataType=DataType,
    float32=DataType.FLOAT,
    float16=DataType.HALF,
    bfloat16=DataType.BF16,
    int8=DataType.INT8,
    int32=DataType.INT32,
    int64=DataType.INT64,
    bool=DataType.BOOL,
    nptype=nptype,
    Weights=Weights,
    ElementWiseOperation=ElementWiseOperation,
    ReduceOperation=ReduceOperation,
    UnaryOperation=UnaryOperation,
    ActivationType=ActivationType,
    MatrixOperation=MatrixOperation,
    SampleMode=SampleMode,
    PaddingMode=PaddingMode,
    LayerType=LayerType,
    PluginField=PluginField,
    PluginFieldCollection=PluginFieldCollection,
    PluginFieldType=PluginFieldType,
    TensorRTPhase=TensorRTPhase,
    get_plugin_registry=get_plugin_registry,
    Dims=lambda dims=(): _as_dims(dims),
    Dims2=lambda a, b: (int(a), int(b)),
    Permutation=lambda perm: _as_dims(perm),
    ITensor=ReferenceTensor,
    INetworkDefinition=ReferenceNetwork,
)

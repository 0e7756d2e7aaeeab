"""TensorRT's enums (values mirror the real module's) and the dtype tables between TensorRT, numpy and torch."""
from __future__ import annotations

import enum
from typing import Any

import numpy as np
import torch



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

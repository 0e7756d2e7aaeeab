"""Errors, shape helpers, ``ReferenceTensor``, the ``ReferenceLayer`` base every layer builds on, and ``Weights``."""
from __future__ import annotations

import enum
import math
import types
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Sequence, TYPE_CHECKING

import numpy as np
import torch

from .dtypes import _coerce_enum, DataType, _FROM_NUMPY, LayerType, nptype

if TYPE_CHECKING:  # annotations only: the network imports every layer module
    from .network import ReferenceNetwork


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

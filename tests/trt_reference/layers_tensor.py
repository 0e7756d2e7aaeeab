"""Layers that make or relabel tensors: constant, shape, identity, cast."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .dtypes import DataType, _FROM_NUMPY, LayerType, _SHAPE_INTS, _TORCH_DTYPE
from .core import (
    _as_dims,
    InvalidNetworkError,
    _is_static,
    _Meta,
    _prop_enum,
    ReferenceLayer,
    ReferenceTensor,
    Shape,
    _volume,
    _weights_array,
)

if TYPE_CHECKING:  # annotations only: the network imports every layer module
    from .network import ReferenceNetwork


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

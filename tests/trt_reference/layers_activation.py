"""Unary and activation layers."""
from __future__ import annotations

import math
from typing import Callable, TYPE_CHECKING

import torch

from .dtypes import ActivationType, DataType, _FLOATS, _INTS, LayerType, UnaryOperation
from .core import _in_f32, InvalidNetworkError, _Meta, _prop_enum, _prop_float, ReferenceLayer, ReferenceTensor

if TYPE_CHECKING:  # annotations only: the network imports every layer module
    from .network import ReferenceNetwork


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

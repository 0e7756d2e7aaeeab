"""Reduce, softmax and normalization layers (statistics in FP32)."""
from __future__ import annotations

import types
from typing import Any, TYPE_CHECKING

import torch

from .dtypes import _FLOATS, _INTS, LayerType, ReduceOperation
from .core import (
    _axes_from_mask,
    _broadcast,
    _in_f32,
    InvalidNetworkError,
    _is_static,
    _Meta,
    _prop_bool,
    _prop_enum,
    _prop_float,
    _prop_int,
    ReferenceLayer,
    ReferenceTensor,
    StrongTypingError,
    _volume,
)

if TYPE_CHECKING:  # annotations only: the network imports every layer module
    from .network import ReferenceNetwork


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

"""Explicit INT8: quantize and dequantize layers."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .dtypes import DataType, _FLOATS, LayerType, _TORCH_DTYPE
from .core import (
    InvalidNetworkError,
    _Meta,
    _prop_enum,
    _prop_int,
    _PropertyDependentError,
    ReferenceLayer,
    ReferenceTensor,
)

if TYPE_CHECKING:  # annotations only: the network imports every layer module
    from .network import ReferenceNetwork


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

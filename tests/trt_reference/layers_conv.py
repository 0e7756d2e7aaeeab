"""Convolution and deconvolution (weights as numpy ``Weights`` or, for explicit INT8, as tensor inputs)."""
from __future__ import annotations

from typing import Any, Sequence, TYPE_CHECKING

import torch
import torch.nn.functional as F

from .dtypes import DataType, _FLOATS, _FROM_NUMPY, LayerType, PaddingMode
from .core import (
    _as_dims,
    _in_f32,
    InvalidNetworkError,
    _Meta,
    _prop_enum,
    _prop_int,
    ReferenceLayer,
    ReferenceTensor,
    Shape,
    StrongTypingError,
    _volume,
    _weights_array,
)

if TYPE_CHECKING:  # annotations only: the network imports every layer module
    from .network import ReferenceNetwork


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

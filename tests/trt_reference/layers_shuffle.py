"""Layers that move data without arithmetic: shuffle (reshape/transpose), slice, concatenation, gather."""
from __future__ import annotations

from typing import Sequence, TYPE_CHECKING

import torch

from .dtypes import LayerType, SampleMode, _SHAPE_INTS
from .core import (
    _as_dims,
    InvalidNetworkError,
    _is_static,
    _Meta,
    _prop_bool,
    _prop_dims_or_none,
    _prop_enum,
    _prop_int,
    ReferenceLayer,
    ReferenceTensor,
    Shape,
    StrongTypingError,
    _torch_value,
    _volume,
)

if TYPE_CHECKING:  # annotations only: the network imports every layer module
    from .network import ReferenceNetwork


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

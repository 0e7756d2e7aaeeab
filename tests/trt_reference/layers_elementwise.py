"""Matrix multiply and elementwise layers."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .dtypes import DataType, ElementWiseOperation, _FLOATS, _INTS, LayerType, MatrixOperation, _SHAPE_INTS
from .core import _broadcast, _in_f32, InvalidNetworkError, _Meta, _prop_enum, ReferenceLayer, ReferenceTensor, Shape

if TYPE_CHECKING:  # annotations only: the network imports every layer module
    from .network import ReferenceNetwork


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

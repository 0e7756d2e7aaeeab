"""``ReferenceNetwork``: the ``INetworkDefinition`` stand-in (``add_*``, inputs/outputs, validation, ``execute``)."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from .dtypes import (
    ActivationType,
    _coerce_enum,
    DataType,
    ElementWiseOperation,
    MatrixOperation,
    ReduceOperation,
    _TORCH_DTYPE,
    UnaryOperation,
)
from .core import (
    _as_dims,
    InvalidNetworkError,
    _Meta,
    _PropertyDependentError,
    ReferenceLayer,
    ReferenceRuntimeError,
    ReferenceTensor,
    StrongTypingError,
)
from .layers_tensor import CastLayer, ConstantLayer, IdentityLayer, ShapeLayer
from .layers_conv import ConvolutionLayer, DeconvolutionLayer
from .layers_elementwise import ElementWiseLayer, MatrixMultiplyLayer
from .layers_reduce import NormalizationLayer, ReduceLayer, SoftMaxLayer
from .layers_shuffle import ConcatenationLayer, GatherLayer, ShuffleLayer, SliceLayer
from .layers_activation import ActivationLayer, UnaryLayer
from .layers_quantize import DequantizeLayer, QuantizeLayer
from .plugins import PluginV3Layer, _ReferencePlugin


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

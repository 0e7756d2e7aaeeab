"""Test support: a CPU reference executor for the subset of TensorRT's ``INetworkDefinition`` that MST++ uses.

The project builds MST++ layer by layer with one function, ``mstpp.trt.network.build_mstpp_network(trt, network,
weights, input_shape, ...)``, that only calls ``network.add_*``, sets layer properties and reads enums from
``trt``. Tests hand that function either a real TensorRT / TensorRT-RTX network, or
:func:`create_reference_network` together with :data:`ref_trt`, then run the reference network with PyTorch on
CPU and compare it with the PyTorch model::

    from mstpp.trt.network import INPUT_NAME, OUTPUT_NAME, build_mstpp_network
    from trt_reference import create_reference_network, ref_trt

    net = create_reference_network()
    build_mstpp_network(ref_trt, net, weights, (1, 3, 64, 64))   # the code that builds the TensorRT network
    cube = net.execute({INPUT_NAME: rgb})[OUTPUT_NAME]            # rgb: float32 torch [1, 3, 64, 64] -> [1, 31, 64, 64]

Layout (one module per layer family; each layer class checks its inputs when added and computes on ``execute``):

    dtypes.py              TensorRT's enums and the dtype tables (numpy, torch)
    core.py                errors, shape helpers, ReferenceTensor, the ReferenceLayer base, Weights
    layers_tensor.py       constant, shape, identity, cast
    layers_conv.py         convolution, deconvolution
    layers_elementwise.py  matrix multiply, elementwise
    layers_reduce.py       reduce, softmax, normalization
    layers_shuffle.py      shuffle, slice, concatenation, gather
    layers_activation.py   unary, activation
    layers_quantize.py     quantize, dequantize
    plugins.py             plugin fields, registry, the project's plugins
    network.py             ReferenceNetwork (add_*, validate, execute)
    __init__.py            ``ref_trt``: the stand-in for the ``tensorrt`` module

What the executor does, and where each rule comes from
------------------------------------------------------
Rules marked **[rtx]** were cross-checked with the TensorRT-RTX 1.7.1 builder (``import tensorrt_rtx``): a tiny
network was built on CPU and we looked at whether ``build_serialized_network`` accepted it and at the
build-time shapes/dtypes/defaults it reported. The RTX builder cannot *run* engines here, so numerics
(rounding, reflect indexing, GELU, ...) come from documentation (**[docs]**: the Python docstrings shipped with
``tensorrt_rtx``, TensorRT's API documentation, ONNX-parser lowering) and are marked so.

* **[rtx]** Strong typing: elementwise, matmul and concatenation operands need one dtype; conv/deconv kernel
  and bias need the input's dtype; normalization scale *and bias* need the input's dtype; conv, matmul,
  softmax, normalization and float unary ops (EXP...) reject INT32; AND/OR/XOR need BOOL; arithmetic
  elementwise and reduce reject BOOL; quantize needs a float input, dequantize an INT8 input; float64 numpy
  weights are refused. Quantize accepts an FP32 or FP16 scale for either FP32 or FP16 input, and dequantize
  accepts any float scale with any float ``output_type`` - so the reference accepts those combinations too.
* **[rtx]** Explicit INT8 conv/deconv (``add_convolution_nd(x, K, ks, Weights(), bias)`` then
  ``set_input(1, kernel)``, optionally ``set_input(2, bias)``): the kernel tensor - a dequantize output, a plain
  float constant or even a network input, all accepted - must have exactly the input's dtype (FP32 input needs
  an FP32 kernel, FP16 an FP16 one; an INT8 kernel without dequantize is refused) and exactly the shape
  ``(K, C/groups, *ks)`` (deconv ``(C, K/groups, *ks)``); a bias, numpy or tensor, must have the input's dtype;
  a bias tensor has shape ``(K,)`` or ``(1, K, 1, 1)``. Weights and a tensor for the same slot, or an empty
  kernel with no input 1, are refused at build. Quantize/dequantize scales: per-tensor ``()`` and ``(1,)`` are
  both accepted, a 2-D scale makes ``add_*`` fail; a ``(K,)`` weight scale needs ``axis = 0`` (the default
  axis -1 is refused); the scale dtype (FP32/FP16) is free of the input / ``output_type`` dtype.
* **[rtx]** Shapes: elementwise needs equal ranks and dims that are equal or 1; matmul needs equal ranks
  (one less for a VECTOR operand) and matching contraction dims, batch dims broadcast; normalization scale
  and bias need the input's rank; reduce masks with a bit >= rank, or mask 0, are rejected; a softmax mask
  with zero or two bits is rejected when it is set, a bit >= rank at build; STRICT_BOUNDS slices that leave
  the input are rejected; a ``-1`` in a reshape without an integer solution is rejected; conv/deconv/const
  weight counts must match.
* **[rtx]** Defaults: softmax ``axes`` = ``1 << (rank-3)`` for rank >= 3 else ``1`` (4-D gives 2); concat
  ``axis`` = ``rank-3`` for rank >= 3 else 0; normalization ``epsilon`` 1e-5, ``num_groups`` 1; quantize
  ``axis`` -1 (= last dim: a 1-D scale must match the last dim unless ``axis`` is set); activation
  ``alpha``/``beta`` 0; shuffle ``zero_is_placeholder`` True; slice ``mode`` STRICT_BOUNDS.
* **[rtx]** Build-time shapes use -1 for dims that depend on dynamic input dims (e.g. conv of
  ``(-1,4,-1,6)`` is ``(-1,8,-1,6)``; ``add_shape`` is INT64 of length rank; a reshape whose ``-1`` cancels
  a copied dynamic dim is still resolved, as TensorRT does).
* **[docs]** Numerics: conv/deconv/matmul/softmax/reduce/unary/activation on FP16/BF16 compute in FP32 and
  round the result once to the tensor dtype (TensorRT accumulates in FP32; reduce in FP32 is the optimistic
  choice - a real FP16 reduce may lose more). Elementwise on FP16 rounds each result to FP16. Normalization
  and the Mst* plugins take statistics in FP32 and round the output. Quantize: ``clamp(round_half_even(x /
  scale), -128, 127)`` (docstring of ``IQuantizeLayer``), dequantize ``x * scale``, INT8 only, symmetric.
  Slice REFLECT reflects without repeating the edge, like ``F.pad(mode="reflect")`` (the ONNX parser lowers
  ``Pad(reflect)`` to it), and keeps reflecting periodically when the pad exceeds the size; WRAP is modulo;
  CLAMP repeats the edge; FILL uses input 4 or zero.
* **[assumed]** Not documented and not checkable here: integer DIV truncates toward zero (FLOOR_DIV floors),
  integer AVG truncates, float-to-int casts truncate. MST++ uses none of them on data tensors.
* **[docs, not rtx]** The quantize/dequantize scale must come from a subgraph of constants ("The subgraph
  which terminates with the scale tensor must be a build-time constant", ``IQuantizeLayer`` docstring).
  The RTX builder did *not* reject a scale fed by a network input, so this check is stricter than RTX.
* **[project]** Plugins ``MstLayerNorm``, ``MstL2Norm``, ``MstGelu``, ``MstFfn``, ``MstMsa`` (version
  :data:`PLUGIN_VERSION`, namespace :data:`PLUGIN_NAMESPACE`) follow the project's plugin contract; TensorRT-RTX
  has no plugin layers, so nothing about them is cross-checked. Field data must have the numpy dtype its
  ``PluginFieldType`` names, and unknown field names are rejected (a C++ creator would ignore them silently).
  ``MstFfn`` and ``MstMsa`` take their weights as FLOAT32 array fields and check C and their sizes at creation,
  like their C++ creators.

Errors: strong-typing violations raise :class:`StrongTypingError` (a ``TypeError``) when the layer is added (a
conv kernel/bias tensor of the wrong dtype: at ``set_input``, where TensorRT reports it at build);
invalid axes/shapes raise :class:`InvalidNetworkError` (a ``ValueError``). Errors that depend on properties
set after ``add_*`` (conv padding, shuffle dims, slice bounds, concat axis, quantize axis) are kept until the
offending tensor's ``.shape``/``.dtype`` is read, or until :meth:`ReferenceNetwork.validate` / ``execute``,
as TensorRT reports them at build time. Setting an unknown layer attribute raises ``AttributeError`` (as
pybind objects do), which catches typos such as ``.padding`` for ``.padding_nd``.

Known gaps: only the layers listed in ``ReferenceNetwork``; no loops/conditionals, no ``axes`` input of slice,
no gather modes other than DEFAULT, no SAME padding for deconv, no FP8/INT4/FP4, no optimization profiles
(dynamic dims accept any size at execute time); INT8 constants are accepted anywhere (TensorRT only allows
them in front of a dequantize or plugin); a 0-D conv bias tensor (RTX accepts it) and ``set_input`` beyond the
last input (RTX logs and ignores it) are refused; activations other than RELU, SIGMOID, TANH, LEAKY_RELU, CLIP,
GELU_ERF, GELU_TANH raise.
"""


from __future__ import annotations

import types

from .core import (InvalidNetworkError, ReferenceLayer, ReferenceRuntimeError, ReferenceTensor, StrongTypingError,
                   Weights, _as_dims)
from .dtypes import (ActivationType, DataType, ElementWiseOperation, LayerType, MatrixOperation, PaddingMode,
                     PluginFieldType, ReduceOperation, SampleMode, TensorRTPhase, UnaryOperation, nptype)
from .network import ReferenceNetwork, create_reference_network
from .plugins import PLUGIN_NAMESPACE, PLUGIN_VERSION, PluginField, PluginFieldCollection, get_plugin_registry

__all__ = [
    "ref_trt",
    "ReferenceNetwork",
    "Weights",
    "ReferenceTensor",
    "ReferenceLayer",
    "StrongTypingError",
    "InvalidNetworkError",
    "ReferenceRuntimeError",
    "create_reference_network",
    "PLUGIN_VERSION",
    "PLUGIN_NAMESPACE",
]


# --------------------------------------------------------------------------------------------------------------
# The ``trt_module`` stand-in handed to the builder. (A namespace rather than module globals so that the
# aliases ``bool``/``float32``... do not shadow Python builtins inside this file.)
# --------------------------------------------------------------------------------------------------------------

ref_trt = types.SimpleNamespace(
    __name__="trt_reference",
    DataType=DataType,
    float32=DataType.FLOAT,
    float16=DataType.HALF,
    bfloat16=DataType.BF16,
    int8=DataType.INT8,
    int32=DataType.INT32,
    int64=DataType.INT64,
    bool=DataType.BOOL,
    nptype=nptype,
    Weights=Weights,
    ElementWiseOperation=ElementWiseOperation,
    ReduceOperation=ReduceOperation,
    UnaryOperation=UnaryOperation,
    ActivationType=ActivationType,
    MatrixOperation=MatrixOperation,
    SampleMode=SampleMode,
    PaddingMode=PaddingMode,
    LayerType=LayerType,
    PluginField=PluginField,
    PluginFieldCollection=PluginFieldCollection,
    PluginFieldType=PluginFieldType,
    TensorRTPhase=TensorRTPhase,
    get_plugin_registry=get_plugin_registry,
    Dims=lambda dims=(): _as_dims(dims),
    Dims2=lambda a, b: (int(a), int(b)),
    Permutation=lambda perm: _as_dims(perm),
    ITensor=ReferenceTensor,
    INetworkDefinition=ReferenceNetwork,
)

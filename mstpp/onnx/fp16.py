"""FP16 ONNX with FP32 statistics: our own precision pass over an exported MST++ graph.

Everything runs in FP16 except the regions where FP16 breaks MST++ (docs/DESIGN.md, precision policy):

* the q/k L2 normalisation - a sum of squares over H*W = 249,856 tokens overflows FP16 once the
  mean square passes ~0.26, so ``ReduceL2 -> Clip -> Div`` (and any ``Pow/ReduceSum/Sqrt`` form) stay FP32;
* LayerNormalization (mean/variance) and Softmax.

Why our own pass rather than ModelOpt AutoCast: the regions are known exactly for this model, the
pass is ~100 lines with no dependency beyond ``onnx``, it runs identically on every machine, and its
result can be checked node by node in tests. Graph inputs and outputs stay FP32 (casts at the edges)
so an FP16 engine takes the same input as the FP32 one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .rewrite import L2_NODE_PREFIX

FP32_OP_TYPES = {"LayerNormalization", "Softmax", "ReduceL2", "ReduceSumSquare", "ReduceSum", "Sqrt", "Pow"}


def _fp32_nodes(graph) -> set[str]:
    """Names of nodes kept in FP32: the op types above, plus the Clip/Max and Div that complete an
    L2 normalisation (x / max(||x||, eps))."""
    producer = {out: node for node in graph.node for out in node.output}
    keep = {n.name for n in graph.node if n.op_type in FP32_OP_TYPES or n.name.startswith(L2_NODE_PREFIX)}
    for node in graph.node:
        if node.op_type in ("Clip", "Max") and node.input and node.input[0] in producer \
                and producer[node.input[0]].name in keep:
            keep.add(node.name)
    for node in graph.node:
        if node.op_type == "Div" and len(node.input) == 2 and node.input[1] in producer \
                and producer[node.input[1]].name in keep:
            keep.add(node.name)
    return keep


def convert_to_fp16(path_in: str | Path, path_out: str | Path) -> Path:
    """Write an FP16 copy of the FP32 MST++ ONNX at ``path_in`` with FP32 statistics."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path_in))
    graph = model.graph
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    inferred = onnx.shape_inference.infer_shapes(model)
    float_tensors = {vi.name for vi in list(inferred.graph.value_info) + list(inferred.graph.input)
                     + list(inferred.graph.output) if vi.type.tensor_type.elem_type == TensorProto.FLOAT}
    inits = {init.name: init for init in graph.initializer}
    float_tensors |= {n for n, t in inits.items() if t.data_type == TensorProto.FLOAT}
    keep32 = _fp32_nodes(graph)

    # Where each float tensor lives: graph inputs FP32, node outputs in their node's precision.
    dtype_of: dict[str, int] = {inp.name: TensorProto.FLOAT for inp in graph.input}
    new_inits, new_nodes, casts = [], [], {}

    def cast_to(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            casts[key] = f"{name}__to_{'fp16' if to == TensorProto.FLOAT16 else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], to=to, name=casts[key] + "_cast"))
        return casts[key]

    init_variant: dict[tuple[str, int], str] = {}

    def init_as(name: str, to: int) -> str:
        src = inits[name]
        if src.data_type == to:
            return name
        key = (name, to)
        if key not in init_variant:
            arr = numpy_helper.to_array(src).astype(np.float16 if to == TensorProto.FLOAT16 else np.float32)
            init_variant[key] = f"{name}__fp16" if to == TensorProto.FLOAT16 else f"{name}__fp32"
            new_inits.append(numpy_helper.from_array(arr, init_variant[key]))
        return init_variant[key]

    for node in graph.node:
        want = TensorProto.FLOAT if node.name in keep32 else TensorProto.FLOAT16
        for i, name in enumerate(node.input):
            if not name or name not in float_tensors:
                continue
            if name in inits:
                node.input[i] = init_as(name, want)
            elif dtype_of.get(name, TensorProto.FLOAT) != want:
                node.input[i] = cast_to(name, want)
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT and want == TensorProto.FLOAT16:
                    attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16)))
        if node.op_type == "Cast":
            continue  # an existing Cast keeps its declared output type
        for out in node.output:
            if out in float_tensors:
                dtype_of[out] = want
        new_nodes.append(node)

    # Graph outputs are FP32: rename the producing tensor and cast back under the output's name.
    for out in graph.output:
        if dtype_of.get(out.name) == TensorProto.FLOAT16:
            inner = out.name + "__fp16"
            for node in new_nodes:
                node.output[:] = [inner if o == out.name else o for o in node.output]
                node.input[:] = [inner if i == out.name else i for i in node.input]
            new_nodes.append(helper.make_node("Cast", [inner], [out.name], to=TensorProto.FLOAT,
                                              name=out.name + "_to_fp32"))

    used = {i for n in new_nodes for i in n.input}
    kept_inits = [t for t in graph.initializer if t.name in used] + [t for t in new_inits if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    del graph.node[:]
    graph.node.extend(_topological(new_nodes, {i.name for i in graph.input} | {t.name for t in kept_inits}))
    del graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(path_out))
    return Path(path_out)


def _topological(nodes, available: set[str]) -> list:
    """Order nodes so each comes after the producers of its inputs (Casts were appended early)."""
    ready, pending, out = set(available), list(nodes), []
    while pending:
        progressed = []
        for node in pending:
            if all((not i) or i in ready for i in node.input):
                out.append(node)
                ready.update(node.output)
            else:
                progressed.append(node)
        if len(progressed) == len(pending):
            missing = sorted({i for n in progressed for i in n.input if i and i not in ready})[:3]
            raise ValueError(f"FP16 pass produced a graph with unresolved inputs: {missing}")
        pending = progressed
    return out

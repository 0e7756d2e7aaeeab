"""Step 3: rewrite the q/k L2 norms (``ReduceL2``) into a form a runtime executes well."""
from __future__ import annotations

import numpy as np

from ..errors import UserError

#: How the q/k L2 norms appear in the exported graph (``rewrite_l2_norms``).
L2_FORMS = ("reducel2", "reducesum", "sumsquare", "matmul")
DEFAULT_L2_FORM = "reducel2"
#: Prefix of the nodes ``rewrite_l2_norms`` writes; the FP16 pass keeps them in FP32.
L2_NODE_PREFIX = "L2Norm_"


def _opset(proto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def rewrite_l2_norms(proto, form: str) -> int:
    """Re-express every ``ReduceL2`` (the q/k norms over H*W) as ``form``; returns how many.

    ``reducel2`` leaves the graph alone. ``reducesum``: Sqrt(ReduceSum(x*x)); ``sumsquare``:
    Sqrt(ReduceSumSquare(x)); ``matmul``: Sqrt((x*x) @ ones[N, 1]), a GEMV over the N = H*W tokens
    (needs a static last dimension). Runtimes implement these very differently: ONNX Runtime's CUDA EP
    sends ReduceL2 to a cuDNN reduction that took 8.8 ms per call at 512x482 on an H100.
    """
    if form not in L2_FORMS:
        raise UserError(f"unknown L2 form {form!r}; use one of {', '.join(L2_FORMS)}")
    if form == "reducel2":
        return 0
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    graph, opset = proto.graph, _opset(proto)
    inits = {t.name: t for t in graph.initializer}
    shapes = {}
    if form == "matmul":
        inferred = shape_inference.infer_shapes(proto)
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
    out_nodes, count = [], 0
    for node in graph.node:
        if node.op_type != "ReduceL2":
            out_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = list(attrs["axes"]) if "axes" in attrs else numpy_helper.to_array(inits[node.input[1]]).tolist()
        keepdims = int(attrs.get("keepdims", 1))
        x, y, tag = node.input[0], node.output[0], f"{L2_NODE_PREFIX}{count}"
        count += 1
        axes_name = f"{tag}_axes"
        graph.initializer.append(numpy_helper.from_array(np.array(axes, dtype=np.int64), axes_name))
        ssq = f"{tag}_ssq"
        if form == "sumsquare":
            if opset >= 18:
                out_nodes.append(helper.make_node("ReduceSumSquare", [x, axes_name], [ssq], keepdims=keepdims, name=f"{tag}_rss"))
            else:
                out_nodes.append(helper.make_node("ReduceSumSquare", [x], [ssq], axes=axes, keepdims=keepdims, name=f"{tag}_rss"))
        else:
            sq = f"{tag}_sq"
            out_nodes.append(helper.make_node("Mul", [x, x], [sq], name=f"{tag}_mul"))
            shape = shapes.get(x, [])
            last = len(shape) - 1
            if form == "matmul" and shape and shape[-1] > 0 and keepdims and [a % len(shape) for a in axes] == [last]:
                ones = f"{tag}_ones"
                graph.initializer.append(numpy_helper.from_array(np.ones((shape[-1], 1), np.float32), ones))
                out_nodes.append(helper.make_node("MatMul", [sq, ones], [ssq], name=f"{tag}_gemv"))
            else:
                out_nodes.append(helper.make_node("ReduceSum", [sq, axes_name], [ssq], keepdims=keepdims, name=f"{tag}_sum"))
        out_nodes.append(helper.make_node("Sqrt", [ssq], [y], name=f"{tag}_sqrt"))
    del graph.node[:]
    graph.node.extend(out_nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return count

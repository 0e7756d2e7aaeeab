"""MST++ -> ONNX: export, simplification, a weight map in the metadata, and checks.

The exported file carries three metadata entries so that later steps never guess:
``mstpp.model`` (the model name), ``mstpp.weight_map`` (JSON: state-dict name -> [initializer
name, transposed?, shape]) and ``mstpp.min_input_size`` (the smallest H and W, also in the doc string). ``get_weights.py`` and the TensorRT network builder read weights through it,
never through exporter-generated initializer names.
"""
from __future__ import annotations

import io
import json
import warnings
from collections import Counter
from contextlib import redirect_stdout
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .input_size import MIN_INPUT_SIZE

INPUT_NAME = "rgb"
OUTPUT_NAME = "cube"
MODEL_KEY = "mstpp.model"
WEIGHT_MAP_KEY = "mstpp.weight_map"
#: Metadata key with the smallest H and W the model accepts (``mstpp.input_size.MIN_INPUT_SIZE``).
MIN_SIZE_KEY = "mstpp.min_input_size"
#: Smallest H/W of the dynamic-shape export (the exporter needs a lower bound above the padding).
DYNAMIC_MIN_SIZE = 16
DYNAMIC_MAX_SIZE = 8192
DYNAMIC_MAX_BATCH = 256


def _onnx():
    import onnx

    return onnx


def choose_exporter(opset: int, exporter: str = "auto") -> str:
    """``auto``: the TorchScript exporter up to opset 17 (it emits exactly the opset asked for; the
    dynamo exporter cannot down-convert reflect ``Pad`` below 18), the dynamo exporter from 18 on."""
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise UserError(f"unknown exporter {exporter!r}; use auto, dynamo or torchscript")
    if opset < 17:
        raise UserError(f"opset {opset} is too old: LayerNormalization needs opset >= 17")
    if exporter == "auto":
        return "torchscript" if opset <= 17 else "dynamo"
    if exporter == "dynamo" and opset < 18:
        raise UserError("the dynamo exporter writes opset >= 18 for MST++ (reflect Pad); "
                        "use --opset 18 or --exporter torchscript")
    return exporter


def export_onnx(model: nn.Module, path: str | Path, batch: int = 1, height: int = 512, width: int = 482,
                dynamic: bool = False, opset: int = 17, exporter: str = "auto") -> Path:
    """Export ``model`` (MST++, eval mode, float32) for input [batch, 3, height, width].

    With ``dynamic`` the batch and spatial dims are symbolic (``batch``, ``height``, ``width``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = choose_exporter(opset, exporter)
    example = torch.rand(batch, 3, height, width)
    model = model.eval().float().cpu()
    kwargs: dict = {}
    if dynamic and kind == "dynamo":
        dims = {0: torch.export.Dim("batch", min=1, max=DYNAMIC_MAX_BATCH),
                2: torch.export.Dim("height", min=DYNAMIC_MIN_SIZE, max=DYNAMIC_MAX_SIZE),
                3: torch.export.Dim("width", min=DYNAMIC_MIN_SIZE, max=DYNAMIC_MAX_SIZE)}
        kwargs["dynamic_shapes"] = {"x": dims}
    elif dynamic:
        axes = {0: "batch", 2: "height", 3: "width"}
        kwargs["dynamic_axes"] = {INPUT_NAME: axes, OUTPUT_NAME: axes}
    # The exporters narrate every step on stdout and warn about their own deprecations; the CLI
    # prints its own summary instead.
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=opset, dynamo=(kind == "dynamo"), external_data=False, **kwargs)
    proto = _onnx().load(str(path))
    if dynamic and kind == "dynamo":
        _name_output_dims(proto)
    attach_weight_map(proto, model.state_dict())
    _onnx().save(proto, str(path))
    return path


def _name_output_dims(proto) -> None:
    # The dynamo exporter names the output's spatial dims after their symbolic formula; the cube
    # always has the input's size, so say so.
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    for i, name in ((0, "batch"), (2, "height"), (3, "width")):
        dims[i].ClearField("dim_value")
        dims[i].dim_param = name


def op_counts(proto) -> Counter:
    """Node count by op type (top-level graph)."""
    return Counter(node.op_type for node in proto.graph.node)


def simplify(path_in: str | Path, path_out: str | Path, tool: str = "onnxslim") -> Path:
    """Simplify with onnxslim (pure Python, keeps opset and dynamic dims) or onnxsim.

    The weight map is recomputed afterwards because simplifiers rename and fold initializers.
    """
    onnx = _onnx()
    proto = onnx.load(str(path_in))
    meta = {p.key: p.value for p in proto.metadata_props}
    if tool == "onnxslim":
        try:
            import onnxslim
        except ImportError:
            raise UserError("onnxslim is not installed (pip install onnxslim), or use --simplifier none") from None
        with redirect_stdout(io.StringIO()):
            slim = onnxslim.slim(proto)
    elif tool == "onnxsim":
        try:
            import onnxsim
        except ImportError:
            raise UserError("onnxsim is not installed (pip install onnxsim), or use --simplifier onnxslim") from None
        slim, ok = onnxsim.simplify(proto)
        if not ok:
            raise RuntimeError("onnxsim could not validate the simplified model")
    else:
        raise UserError(f"unknown simplifier {tool!r}; use onnxslim, onnxsim or none")
    state = weights_from_map(proto, json.loads(meta[WEIGHT_MAP_KEY])) if WEIGHT_MAP_KEY in meta else None
    if state is not None:
        attach_weight_map(slim, state)
    onnx.save(slim, str(path_out))
    return Path(path_out)


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


def _initializers(proto) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}


def attach_weight_map(proto, state_dict: Mapping[str, torch.Tensor | np.ndarray]) -> None:
    """Find each parameter among the initializers and record the mapping in the model's metadata.

    Exporters store a parameter as is, transposed (Linear weights in a MatMul) or reshaped (our
    Linear-as-1x1-convolution weights gain two unit dims), so all three are matched by value.
    """
    inits = _initializers(proto)
    by_size: dict[int, list[str]] = {}
    for name, arr in inits.items():
        by_size.setdefault(arr.size, []).append(name)
    mapping: dict[str, list] = {}
    for pname, tensor in state_dict.items():
        value = tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
        for iname in by_size.get(value.size, []):
            arr = inits[iname]
            if np.array_equal(arr.reshape(value.shape), value):
                mapping[pname] = [iname, False, list(value.shape)]
                break
            if value.ndim == 2 and arr.shape == value.T.shape and np.array_equal(arr, value.T):
                mapping[pname] = [iname, True, list(value.shape)]
                break
    _set_meta(proto, MODEL_KEY, "MST_Plus_Plus")
    _set_meta(proto, WEIGHT_MAP_KEY, json.dumps(mapping, separators=(",", ":")))
    # Stated here because every export and every simplification passes through this function.
    _set_meta(proto, MIN_SIZE_KEY, str(MIN_INPUT_SIZE))
    proto.doc_string = MODEL_DOC


#: What an MST++ ONNX file says about itself (ModelProto.doc_string).
MODEL_DOC = (f"MST++ spectral recovery: {INPUT_NAME} [B, 3, H, W] float32 RGB in [0, 1] -> {OUTPUT_NAME} "
             f"[B, 31, H, W] (400-700 nm, 10 nm steps). H and W must be >= {MIN_INPUT_SIZE}: smaller inputs "
             "fail in the reflect Pad (to a multiple of 8).")


def _set_meta(proto, key: str, value: str) -> None:
    for prop in proto.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, value


def weights_from_map(proto, mapping: Mapping[str, list]) -> dict[str, np.ndarray]:
    """State dict recovered through a weight map: {parameter name: float32 array}."""
    inits = _initializers(proto)
    out = {}
    for pname, (iname, transposed, shape) in mapping.items():
        arr = inits[iname].T if transposed else inits[iname].reshape(shape)
        out[pname] = np.ascontiguousarray(arr, dtype=np.float32)
    return out


def check_mstpp_onnx(path: str | Path):
    """Load an ONNX file and make sure it is an MST++ export: rgb [B, 3, H, W] -> [B, 31, H, W].

    Returns the loaded ModelProto. Raises UserError with a one-line reason otherwise.
    """
    onnx = _onnx()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise UserError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None

    def dims(value_info) -> list:
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if len(inputs) != 1 or len(proto.graph.output) != 1:
        raise UserError(f"{path}: has {len(inputs)} inputs and {len(proto.graph.output)} outputs; "
                        "an MST++ model has one RGB input and one cube output")
    din, dout = dims(inputs[0]), dims(proto.graph.output[0])
    if len(din) != 4 or din[1] != 3 or len(dout) != 4 or dout[1] != 31:
        raise UserError(f"{path}: maps {din} to {dout}; MST++ maps [B, 3, H, W] to [B, 31, H, W]")
    return proto


def ort_session(path: str | Path, providers: list | None = None, threads: int | None = None):
    """An onnxruntime InferenceSession (CPU by default) with full graph optimisation."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("onnxruntime is not installed (pip install onnxruntime)") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])


def compare_with_torch(path: str | Path, model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Run the ONNX file with onnxruntime (CPU) and the model with PyTorch on ``x`` [B, 3, H, W];
    return max abs error, max rel error (|d| / max|ref|) and the reference's max |value|."""
    sess = ort_session(path)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = model.eval().float()(x).numpy()
    diff = np.abs(got.astype(np.float64) - ref)
    scale = float(np.abs(ref).max()) or 1.0
    return {"max_abs": float(diff.max()), "max_rel": float(diff.max() / scale), "ref_max": scale,
            "shape": list(got.shape)}

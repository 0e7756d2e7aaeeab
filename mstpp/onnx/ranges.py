"""Step 4a: INT8 activation ranges of an ONNX file, collected one image at a time.

onnxruntime's own calibrators hold far more: at 512x482 its MinMax calibrator passed 12 GB resident
with the 7 default images (its reductions run late, keeping the calibrated tensors alive), and its
histogram calibrators keep every Conv input and output of every image (8.8 GB per image at 512x482,
counted from the graph's shapes). Here the model is run once per image with a ReduceMin and a ReduceMax
appended to every calibrated tensor, so each run returns two scalars per tensor and every intermediate
is freed as soon as onnxruntime is done with it: memory is that of one ordinary inference, whatever the
number of images. The running min/max over the images are exactly the ranges onnxruntime's MinMax
calibrator computes (the same tensors, the same reductions).

The ranges file is onnxruntime's calibration cache (``save_tensors_data`` JSON), which
``quantize_static(calibration_cache_path=...)`` reads instead of calibrating.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

#: Suffixes of the reduction outputs appended to the graph for each calibrated tensor.
_MIN, _MAX = "__calib_min", "__calib_max"


def calibrated_tensors(model) -> list[str]:
    """Names of the float activations that feed or leave a Conv (initializers excluded), in graph order.

    The same set onnxruntime's calibrator selects with ``op_types_to_quantize=["Conv"]``: the QDQ
    quantizer looks up a range for each of them.
    """
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    infos = {vi.name: vi for vi in list(graph.value_info) + list(graph.output) + list(graph.input)}
    inits = {t.name for t in graph.initializer}
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16)
    names: list[str] = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        for name in list(node.input) + list(node.output):
            info = infos.get(name)
            if (name and name not in inits and name not in names and info is not None
                    and info.type.tensor_type.elem_type in floats):
                names.append(name)
    return names


def _with_reductions(model, tensors: Sequence[str]):
    """A copy of ``model`` whose only outputs are min and max (scalars) of each of ``tensors``."""
    from onnx import TensorProto, helper

    augmented = type(model)()
    augmented.CopyFrom(model)
    graph = augmented.graph
    wanted = set(tensors)

    def reductions(name: str) -> list:
        # No axes and keepdims=0: reduce over every element to a scalar, in every opset.
        return [helper.make_node(op, [name], [name + suffix], keepdims=0, name=name + suffix)
                for op, suffix in (("ReduceMin", _MIN), ("ReduceMax", _MAX))]

    # Each reduction goes right after the producer of its tensor, so that (run in this order) no
    # calibrated tensor outlives its last consumer in the model.
    nodes = [r for i in graph.input if i.name in wanted for r in reductions(i.name)]
    for node in graph.node:
        nodes.append(node)
        nodes += [r for out in node.output if out in wanted for r in reductions(out)]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.output[:]
    for name in tensors:
        for suffix in (_MIN, _MAX):
            graph.output.append(helper.make_tensor_value_info(name + suffix, TensorProto.FLOAT, []))
    return augmented


def collect_minmax(onnx_path: str | Path, feeds: Iterable[np.ndarray], threads: int | None = None,
                   progress: bool = False) -> dict[str, tuple[float, float]]:
    """{tensor: (min, max)} over all ``feeds`` for every tensor of ``calibrated_tensors``.

    Args:
        onnx_path: an FP32 ONNX with one input.
        feeds: input arrays [B, 3, H, W] float32 of the shape the ONNX accepts, consumed one at a time
            (a generator keeps only one in memory).
        threads: onnxruntime intra-op threads (default: onnxruntime's choice).
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    tensors = calibrated_tensors(model)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Unoptimised like onnxruntime's calibrator: fusions would compute some tensors with a different
    # rounding, and the ranges must be those of the graph that gets quantized.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # Run the nodes in the order written (each reduction right after its tensor's producer): onnxruntime's
    # default order postponed the reductions and held ~5x the memory of a plain inference at 128x128.
    opts.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    # Without the arena, freed intermediates go back to the system instead of staying reserved.
    opts.enable_cpu_mem_arena = False
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(_with_reductions(model, tensors).SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    lo = np.full(len(tensors), np.inf, np.float64)
    hi = np.full(len(tensors), -np.inf, np.float64)
    outputs = [n + s for n in tensors for s in (_MIN, _MAX)]
    count = 0
    from tqdm import tqdm

    for feed in tqdm(feeds, desc="calibrating", unit="feed", disable=not progress):
        values = np.asarray(session.run(outputs, {input_name: np.ascontiguousarray(feed, np.float32)}),
                            np.float64).reshape(len(tensors), 2)
        lo = np.minimum(lo, values[:, 0])
        hi = np.maximum(hi, values[:, 1])
        count += 1
    if count == 0:
        raise ValueError("no calibration feeds")
    return {name: (float(lo[i]), float(hi[i])) for i, name in enumerate(tensors)}


def save_ranges(ranges: dict[str, tuple[float, float]], path: str | Path) -> Path:
    """Write min/max ranges as onnxruntime's calibration cache (readable by ``quantize_static``)."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    data = {k: (np.array(lo, np.float32), np.array(hi, np.float32)) for k, (lo, hi) in ranges.items()}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)
    return Path(path)


def load_ranges(path: str | Path) -> dict[str, tuple[float, float]]:
    """{tensor: (lowest, highest)} from an onnxruntime calibration cache."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    data = load_tensors_data(path)
    return {k: (float(np.min(v.range_value[0])), float(np.max(v.range_value[1]))) for k, v in data.data.items()}

"""Where INT8 error starts: compare every convolution output of the Q/DQ INT8 ONNX with the FP32 ONNX.

Both graphs come from the same export (the quantizer only inserts Q/DQ in front of Conv inputs), so
convolution outputs keep their names, and those names carry the module path
(``/body/body.0/encoder_layers.0.0/blocks.0.0/Conv_1``), which tells the block.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def _with_outputs(path: str | Path, names: Sequence[str]):
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(helper.make_empty_tensor_value_info(name))
    return model.SerializeToString()


def block_of(tensor: str) -> str:
    """``/body/body.0/encoder_layers.0.0/blocks.0.0/Conv_1_output_0`` -> ``body.0/encoder_layers.0.0``."""
    parts = [p for p in tensor.split("/") if p and p != "body"]
    return "/".join(parts[:2]) if parts and parts[0].startswith("body.") else parts[0] if parts else tensor


def localise(fp32_onnx: str | Path, int8_onnx: str | Path, images: Sequence[np.ndarray],
             tolerance: float = 0.05) -> dict[str, Any]:
    """Relative error (mean |int8 - fp32| / mean |fp32|) of every Conv output, in graph order.

    Args:
        images: RGB inputs [3, H, W] matching the (static) ONNX input shape.
        tolerance: the relative error that counts as "exceeded".

    Returns:
        ``layers`` (tensor, block, rel_error, in graph order), ``first_exceeding`` (or None) and
        ``per_block`` (the largest error inside each block).
    """
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(fp32_onnx), load_external_data=False).graph
    names = [n.output[0] for n in graph.node if n.op_type == "Conv"]
    int8_names = {o for n in onnx.load(str(int8_onnx), load_external_data=False).graph.node for o in n.output}
    names = [n for n in names if n in int8_names]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sessions = [ort.InferenceSession(_with_outputs(p, names), opts, providers=["CPUExecutionProvider"])
                for p in (fp32_onnx, int8_onnx)]
    input_name = sessions[0].get_inputs()[0].name
    err_sum = np.zeros(len(names))
    for img in images:
        feed = {input_name: img[None].astype(np.float32)}
        ref, got = (dict(zip([o.name for o in s.get_outputs()], s.run(None, feed))) for s in sessions)
        for i, name in enumerate(names):
            r, g = ref[name].astype(np.float64), got[name].astype(np.float64)
            err_sum[i] += np.abs(g - r).mean() / max(np.abs(r).mean(), 1e-12)
    errs = err_sum / max(len(images), 1)
    layers = [{"tensor": n, "block": block_of(n), "rel_error": float(e)} for n, e in zip(names, errs)]
    first = next((layer for layer in layers if layer["rel_error"] > tolerance), None)
    per_block: dict[str, float] = {}
    for layer in layers:
        per_block[layer["block"]] = max(per_block.get(layer["block"], 0.0), layer["rel_error"])
    return {"tolerance": tolerance, "layers": layers, "first_exceeding": first, "per_block": per_block}

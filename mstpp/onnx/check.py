"""Checks on ONNX files: is it MST++, and does onnxruntime agree with PyTorch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UserError


def check_mstpp_onnx(path: str | Path):
    """Load an ONNX file and make sure it is an MST++ export: rgb [B, 3, H, W] -> [B, 31, H, W].

    Returns the loaded ModelProto. Raises UserError with a one-line reason otherwise.
    """
    import onnx

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

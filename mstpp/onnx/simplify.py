"""Step 2: simplification (onnxslim or onnxsim), keeping the weight map valid."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

from ..errors import UserError
from .weight_map import WEIGHT_MAP_KEY, attach_weight_map, weights_from_map


def simplify(path_in: str | Path, path_out: str | Path, tool: str = "onnxslim") -> Path:
    """Simplify with onnxslim (pure Python, keeps opset and dynamic dims) or onnxsim.

    The weight map is recomputed afterwards because simplifiers rename and fold initializers.
    """
    import onnx

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

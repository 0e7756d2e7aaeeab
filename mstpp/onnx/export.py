"""Step 1 of the ONNX pipeline: MST++ (PyTorch) -> ONNX file with the weight map in its metadata.

The exported file carries ``mstpp.model`` and ``mstpp.weight_map`` (``weight_map.py``) so that later
steps (``get_weights.py``, the TensorRT network builder) never guess from exporter-generated names.
"""
from __future__ import annotations

import io
import warnings
from collections import Counter
from contextlib import redirect_stdout
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from .names import INPUT_NAME, OUTPUT_NAME
from .weight_map import attach_weight_map

#: Smallest H/W of the dynamic-shape export (the exporter needs a lower bound above the padding).
DYNAMIC_MIN_SIZE = 16
DYNAMIC_MAX_SIZE = 8192
DYNAMIC_MAX_BATCH = 256


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
    import onnx

    proto = onnx.load(str(path))
    if dynamic and kind == "dynamo":
        _name_output_dims(proto)
    attach_weight_map(proto, model.state_dict())
    onnx.save(proto, str(path))
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

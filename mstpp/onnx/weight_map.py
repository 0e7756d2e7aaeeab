"""The weight map: which ONNX initializer holds which MST++ state-dict entry.

``attach_weight_map`` writes three metadata entries, ``mstpp.model`` (the model name),
``mstpp.weight_map`` (JSON: state-dict name -> [initializer name, transposed?, shape]) and
``mstpp.min_input_size`` (the smallest H and W, also in the doc string); ``state_dict_from_onnx``
reads weights back through the map.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..errors import UserError, WeightsError
from ..input_size import MIN_INPUT_SIZE

from .names import MIN_SIZE_KEY, MODEL_DOC, MODEL_KEY, WEIGHT_MAP_KEY


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


def state_dict_from_onnx(path: str | Path) -> dict[str, np.ndarray]:
    """{state-dict name: array} from an MST++ ONNX file written by ``torch2onnx.py``.

    Raises:
        WeightsError: the file is not MST++ or has no weight map (exported by another tool).
    """
    from .check import check_mstpp_onnx

    try:
        proto = check_mstpp_onnx(path)
    except UserError as exc:
        raise WeightsError(str(exc)) from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if WEIGHT_MAP_KEY not in meta:
        raise WeightsError(f"{path}: has no '{WEIGHT_MAP_KEY}' metadata, so its initializers cannot be "
                           "matched to MST++ parameter names; export it with torch2onnx.py")
    return weights_from_map(proto, json.loads(meta[WEIGHT_MAP_KEY]))

"""Weights out of an ONNX file exported by this toolkit (through its ``mstpp.weight_map``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import UserError, WeightsError
from .onnx_export import WEIGHT_MAP_KEY, check_mstpp_onnx, weights_from_map


def state_dict_from_onnx(path: str | Path) -> dict[str, np.ndarray]:
    """{state-dict name: array} from an MST++ ONNX file written by ``torch2onnx.py``.

    Raises:
        WeightsError: the file is not MST++ or has no weight map (exported by another tool).
    """
    try:
        proto = check_mstpp_onnx(path)
    except UserError as exc:
        raise WeightsError(str(exc)) from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if WEIGHT_MAP_KEY not in meta:
        raise WeightsError(f"{path}: has no '{WEIGHT_MAP_KEY}' metadata, so its initializers cannot be "
                           "matched to MST++ parameter names; export it with torch2onnx.py")
    return weights_from_map(proto, json.loads(meta[WEIGHT_MAP_KEY]))

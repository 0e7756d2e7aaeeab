"""INT8 for the TensorRT network-API route: per-module activation ranges become Q/DQ scales.

The ranges come from ``mstpp.calibration`` (PyTorch forward hooks at every convolution input, one
image at a time). The ONNX-parser route's Q/DQ ONNX is written by ``mstpp.onnx.quantize``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..calibration import DEFAULT_PERCENTILE, calibrate, calibration_images, load_amax, save_cache
from ..errors import UserError
from ..weights import state_fingerprint

#: Which of the stored ranges the network-API route builds with by default.
API_CALIBRATION_METHOD = "percentile"


def describe_api_calibration() -> str:
    """One line naming the network-API route's calibration, for result files."""
    return (f"network API Q/DQ per convolution input; calibration: percentile {DEFAULT_PERCENTILE:g} of |x| "
            "(PyTorch hooks, max over the images)")


def activation_ranges(state: Mapping[str, torch.Tensor], weights: Mapping[str, np.ndarray],
                      cache_path: str | Path, must_exist: bool = False) -> dict[str, float]:
    """{module: amax} for every convolution of the network, from the calibration cache ``cache_path``.

    The cache is reused when present and written when missing (calibrating now on the default images,
    with ``API_CALIBRATION_METHOD``); with ``must_exist`` a missing file is an error instead.

    Raises:
        UserError: the file is missing (``must_exist``), unreadable, or lacks a module of ``weights``.
    """
    cache_path = Path(cache_path)
    if not cache_path.is_file() and not must_exist:
        images = calibration_images()
        ranges = calibrate(state, images)
        save_cache(cache_path, ranges, API_CALIBRATION_METHOD, DEFAULT_PERCENTILE, len(images),
                   state_fingerprint(state))
        print(f"calibrated on {len(images)} images -> {cache_path}")
    amax = load_amax(cache_path)
    from .network import conv_module_names

    missing = [m for m in conv_module_names(weights) if m not in amax]
    if missing:
        raise UserError(f"calibration cache lacks {len(missing)} modules (first: {missing[0]}); recalibrate")
    return amax

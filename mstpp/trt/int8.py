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
                      cache: str | Path | None, save_to: str | Path | None = None) -> dict[str, float]:
    """{module: amax} for every convolution of ``weights``: read from the calibration ``cache`` file, or,
    when ``cache`` is None, calibrated now on the default images and saved to ``save_to`` first.

    A calibration table that is written when missing and reused when present: :func:`calibration_table`.

    Raises:
        UserError: the cache is missing, unreadable, or lacks a convolution of ``weights``.
        ValueError: neither a cache to read nor a path to save to.
    """
    from .network import conv_module_names

    if cache is None:
        if save_to is None:
            raise ValueError("activation_ranges needs a cache to read or a path to save a new one to")
        images = calibration_images()
        ranges = calibrate(state, images)
        cache = save_cache(save_to, ranges, API_CALIBRATION_METHOD, DEFAULT_PERCENTILE, len(images),
                           state_fingerprint(state))
        print(f"calibrated on {len(images)} images -> {cache}")
    amax = load_amax(cache)
    missing = [m for m in conv_module_names(weights) if m not in amax]
    if missing:
        raise UserError(f"calibration cache lacks {len(missing)} modules (first: {missing[0]}); recalibrate")
    return amax


def calibration_table(state: Mapping[str, torch.Tensor], weights: Mapping[str, np.ndarray],
                      table: str | Path, must_exist: bool = False) -> dict[str, float]:
    """{module: amax} from the calibration table ``table``: reused when present, written when missing
    (calibrating now, as the 2022 ``--calibration_table_path`` did); with ``must_exist`` a missing file
    is an error instead (``--calib-cache``).

    Raises:
        UserError: the file is missing (``must_exist``), unreadable, or lacks a module of ``weights``.
    """
    table = Path(table)
    if table.is_file() or must_exist:  # a missing file is load_amax's one-line error
        return activation_ranges(state, weights, table)
    return activation_ranges(state, weights, None, table)

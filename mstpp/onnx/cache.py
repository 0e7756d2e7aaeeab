"""Step 5: the build cache - ONNX files made on demand for runners, keyed by weights, shape and precision.

``cache_dir()`` is the one place that decides where cached build products (these ONNX files, their
calibration ranges, the TensorRT runner's plans and timing cache) live.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

import torch

from ..resources import source_checkout
from ..weights import state_fingerprint

#: Default cache folder: build/cache of the source checkout (git-ignored), or of the working directory
#: for an installed copy; the MSTPP_CACHE_DIR environment variable overrides it.
DEFAULT_CACHE_DIR = (source_checkout() or Path.cwd()) / "build" / "cache"


def cache_dir() -> Path:
    """The build cache folder (created): ``$MSTPP_CACHE_DIR``, else ``DEFAULT_CACHE_DIR``."""
    path = Path(os.environ.get("MSTPP_CACHE_DIR") or DEFAULT_CACHE_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _stem(state_dict: Mapping[str, torch.Tensor], shape: tuple[int, int, int, int], dynamic: bool,
          l2_form: str) -> str:
    b, _, h, w = shape
    return f"mstpp_{state_fingerprint(state_dict)}_{'dyn' if dynamic else f'{b}x{h}x{w}'}_{l2_form}"


def cached_onnx(state_dict: Mapping[str, torch.Tensor], shape: tuple[int, int, int, int],
                precision: str = "fp32", dynamic: bool = False, l2_form: str | None = None) -> Path:
    """Path of a simplified MST++ ONNX for ``shape`` (B, 3, H, W), exporting it if needed.

    The pipeline: export -> simplify -> rewrite (L2 form) -> FP32 file; then ``fp16`` (our FP16 pass)
    or ``int8`` (Q/DQ, calibrated with ``quantize.CALIBRATION_METHOD``) from it.
    """
    from architecture import build_model

    from .export import export_onnx
    from .rewrite import DEFAULT_L2_FORM, rewrite_l2_norms
    from .simplify import simplify

    cache = cache_dir()
    b, _, h, w = shape
    l2_form = l2_form or DEFAULT_L2_FORM
    stem = _stem(state_dict, shape, dynamic, l2_form)
    fp32 = cache / f"{stem}_fp32.onnx"
    if not fp32.is_file():
        import onnx

        model = build_model("mst_plus_plus")
        model.load_state_dict(state_dict)
        raw = cache / f"{stem}.raw.onnx"
        export_onnx(model, raw, b, h, w, dynamic=dynamic)
        simplify(raw, fp32)
        raw.unlink()
        if l2_form != "reducel2":
            proto = onnx.load(str(fp32))
            rewrite_l2_norms(proto, l2_form)
            onnx.save(proto, str(fp32))
    if precision == "fp32":
        return fp32
    if precision == "fp16":
        from .fp16 import convert_to_fp16

        fp16 = cache / f"{stem}_fp16.onnx"
        if not fp16.is_file():
            convert_to_fp16(fp32, fp16)
        return fp16
    if precision == "int8":
        int8 = cache / f"{stem}_int8.onnx"
        if not int8.is_file():
            from ..calibration import calibration_images
            from .quantize import CALIBRATION_METHOD, quantize_onnx

            # Calibrated once, on the batch-1 export of this H x W, and reused for every batch (one
            # batch-16 feed at 512x482 ran out of GPU memory); min-max ranges do not depend on batching.
            single = dynamic or b == 1
            ranges = cache / (f"{stem if single else _stem(state_dict, (1, 3, h, w), False, l2_form)}"
                              "_int8_ranges.json")
            if not single and not ranges.is_file():
                with tempfile.TemporaryDirectory() as tmp:  # only the ranges of this run are kept
                    quantize_onnx(cached_onnx(state_dict, (1, 3, h, w), "fp32", l2_form=l2_form),
                                  Path(tmp) / "batch1_int8.onnx", calibration_images, ranges_cache=ranges)
            quantize_onnx(fp32, int8, calibration_images, ranges_cache=ranges)
        return int8
    raise ValueError(f"no ONNX precision {precision!r}")

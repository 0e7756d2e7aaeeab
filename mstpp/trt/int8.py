"""INT8 for both TensorRT routes, from the same calibration images (calibrator.py).

* network API: per-module activation ranges (``mstpp.calibration``) become Q/DQ scales.
* ONNX parser: onnxruntime's static quantizer writes an explicit Q/DQ ONNX (QDQ format, per-channel
  weights, symmetric activations) with only Conv quantized, so LayerNorm, L2Norm, softmax and the
  residual adds stay in floating point, as the precision policy asks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..calibration import calibrate, calibration_images, load_amax, save_cache
from ..errors import UserError


def activation_ranges(state: Mapping[str, torch.Tensor], weights: Mapping[str, np.ndarray],
                      cache_path: str | Path, must_exist: bool = False) -> dict[str, float]:
    """{module: amax} for every convolution of the network, from the calibration cache ``cache_path``.

    The cache is reused when present and written when missing (calibrating now on the default images);
    with ``must_exist`` a missing file is an error instead.

    Raises:
        UserError: the file is missing (``must_exist``), unreadable, or lacks a module of ``weights``.
    """
    from ..backends.onnx_cache import weights_digest
    from .network import conv_module_names

    cache_path = Path(cache_path)
    if not cache_path.is_file() and not must_exist:
        images = calibration_images()
        ranges = calibrate(state, images)
        save_cache(cache_path, ranges, "percentile", 99.99, len(images), weights_digest(state))
        print(f"calibrated on {len(images)} images -> {cache_path}")
    amax = load_amax(cache_path)
    missing = [m for m in conv_module_names(weights) if m not in amax]
    if missing:
        raise UserError(f"calibration cache lacks {len(missing)} modules (first: {missing[0]}); recalibrate")
    return amax


def fit_image(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """[3, h, w] -> [3, height, width]: transposed when that fits exactly (ARAD frames are 482x512,
    the benchmark shape 512x482), else resized; calibration statistics survive either."""
    if img.shape[1:] == (height, width):
        return img
    if img.shape[1:] == (width, height):
        return np.ascontiguousarray(img.transpose(0, 2, 1))
    import torch.nn.functional as F

    resized = F.interpolate(torch.from_numpy(np.ascontiguousarray(img))[None].float(), size=(height, width),
                            mode="area")
    return resized[0].numpy()


class _Reader:
    """onnxruntime CalibrationDataReader over a list of [3, H, W] images, ``batch`` images per feed.

    A static ONNX exported for batch B accepts only [B, 3, H, W]; the last batch is filled by cycling
    through the images, which leaves min-max and histogram ranges of the set unchanged.
    """

    def __init__(self, input_name: str, images: Sequence[np.ndarray], batch: int = 1) -> None:
        n = len(images)
        feeds = []
        for start in range(0, n, batch):
            group = [images[(start + i) % n] for i in range(batch)]
            feeds.append({input_name: np.stack(group).astype(np.float32)})
        self.items = iter(feeds)

    def get_next(self):
        return next(self.items, None)


def quantize_onnx(onnx_in: str | Path, onnx_out: str | Path, images: Sequence[np.ndarray],
                  method: str = "percentile", ranges_cache: str | Path | None = None) -> Path:
    """Write an explicit Q/DQ INT8 ONNX (Conv only) calibrated on ``images``.

    ``ranges_cache``: a JSON file of calibrated tensor ranges. If it exists, its ranges are used and no
    calibration runs (``images`` is ignored); else the calibration's ranges are saved there. Exports of
    the same weights and H x W for different batch sizes share tensor names, so ranges calibrated on the
    batch-1 export serve every batch: calibrating a batch-16 export at 512x482 in one feed ran out of
    memory on an 80 GB GPU.
    """
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError:
        raise UserError("INT8 ONNX needs onnxruntime's quantization tools (pip install onnxruntime)") from None
    import onnx

    methods = {"max": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise UserError(f"unknown calibration method {method!r}; use {', '.join(methods)}")
    graph = onnx.load(str(onnx_in), load_external_data=False).graph
    graph_input = graph.input[0]
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    cached = ranges_cache is not None and Path(ranges_cache).is_file()
    if cached:
        _check_ranges_cover(graph, Path(ranges_cache))
    elif dims[2] > 0 and dims[3] > 0:  # a static ONNX accepts only its own H x W
        images = [fit_image(img, dims[2], dims[3]) for img in images]
    batch = dims[0] if dims[0] > 0 else 1
    reader = None if cached else _Reader(graph_input.name, images, batch)
    import onnxruntime

    # Calibration runs the whole FP32 model once per feed: on the GPU when onnxruntime has one.
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                 if p in onnxruntime.get_available_providers()]
    cache_arg = {} if ranges_cache is None else {"calibration_cache_path": str(ranges_cache)}
    try:
        quantize_static(str(onnx_in), str(onnx_out), reader, quant_format=QuantFormat.QDQ,
                        calibration_providers=providers, **cache_arg,
                        op_types_to_quantize=["Conv"], per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=methods[method],
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "CalibPercentile": 99.99,
                                       # TensorRT dequantizes INT8 only; INT32 Q/DQ biases do not parse.
                                       "QuantizeBias": False})
    except TypeError as exc:  # an onnxruntime without calibration_providers / calibration_cache_path
        raise UserError(f"onnxruntime {onnxruntime.__version__} is too old for INT8 here ({exc}); "
                        "install onnxruntime>=1.31") from None
    return Path(onnx_out)


def _check_ranges_cover(graph, ranges_cache: Path) -> None:
    """Refuse a ranges file that lacks an input of a Conv in ``graph`` (it came from another export)."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    ranges = load_tensors_data(ranges_cache)
    initializers = {t.name for t in graph.initializer}
    needed = {name for node in graph.node if node.op_type == "Conv" for name in node.input[:1]}
    missing = sorted(needed - initializers - set(ranges.keys()))
    if missing:
        raise UserError(f"{ranges_cache}: calibrated ranges lack {len(missing)} Conv inputs of this ONNX "
                        f"(first: {missing[0]}); delete the file to recalibrate")

"""Step 4b: explicit Q/DQ INT8 ONNX for TensorRT's ONNX parser and onnxruntime.

onnxruntime's static quantizer writes the Q/DQ graph (QDQ format, per-channel symmetric INT8 weights,
symmetric INT8 activations) with only Conv quantized, so LayerNorm, L2Norm, softmax and the residual
adds stay in floating point as the precision policy asks. The activation ranges come from a ranges
file (onnxruntime's calibration cache JSON): reused when present, else calibrated now and written.
``max`` ranges are collected one image at a time (``ranges.py``; memory of one inference);
``percentile`` and ``entropy`` are onnxruntime's histogram calibrators, fed one image at a time, which
hold every Conv input and output of one image (8.8 GB at 512x482, counted from the graph's shapes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np

from ..errors import UserError

#: How the ONNX INT8 routes calibrate unless told otherwise: the parser CLI's default, the cached
#: INT8 ONNX of the benchmark routes, and what result files name.
CALIBRATION_METHOD = "max"
CALIBRATION_METHODS = ("max", "percentile", "entropy")
#: Percentile of the histogram calibrator (onnxruntime cuts (100 - p) / 2 percent on each side).
CALIBRATION_PERCENTILE = 99.99

#: Calibration images [3, H, W], or a function returning them (called only when calibration runs).
Images = Union[Sequence[np.ndarray], Callable[[], Sequence[np.ndarray]]]


def describe_quantization(method: str = CALIBRATION_METHOD) -> str:
    """One line naming the quantizer and the calibration ``method``, for result files."""
    how = {"max": "max |x| (min/max over the images, collected one image at a time)",
           "percentile": f"percentile {CALIBRATION_PERCENTILE:g} (onnxruntime histogram)",
           "entropy": "entropy (onnxruntime histogram)"}[method]
    return ("onnxruntime quantize_static, QDQ, Conv only, per-channel symmetric weights, symmetric activations; "
            f"calibration: {how}")


def quantize_onnx(onnx_in: str | Path, onnx_out: str | Path, images: Images,
                  method: str = CALIBRATION_METHOD, ranges_cache: str | Path | None = None,
                  progress: bool = False) -> Path:
    """Write an explicit Q/DQ INT8 ONNX (Conv only) of the FP32 ONNX ``onnx_in``.

    Args:
        images: calibration images [3, h, w] in [0, 1] (or a function returning them); fitted to a
            static ONNX's H x W; batched to its batch size. Unused when ``ranges_cache`` exists.
        method: ``max``, ``percentile`` or ``entropy`` (see the module docstring).
        ranges_cache: the calibration cache: written when missing, reused when present (it must cover
            every Conv input of ``onnx_in``). Exports of the same weights and H x W for different batch
            sizes share tensor names, so one file serves every batch.

    Raises:
        UserError: unknown method, or a ranges file from another export or another method.
    """
    if method not in CALIBRATION_METHODS:
        raise UserError(f"unknown calibration method {method!r}; use {', '.join(CALIBRATION_METHODS)}")
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError:
        raise UserError("INT8 ONNX needs onnxruntime's quantization tools (pip install onnxruntime)") from None
    import onnx

    calib = {"max": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}[method]
    graph = onnx.load(str(onnx_in), load_external_data=False).graph
    with_ranges = ranges_cache is not None and Path(ranges_cache).is_file()
    if with_ranges:
        _check_ranges(graph, Path(ranges_cache), calib)
    reader = None
    if not with_ranges:
        feeds = _Feeds(graph, images() if callable(images) else images)
        if method == "max":
            from .ranges import collect_minmax, save_ranges

            ranges = collect_minmax(onnx_in, feeds, progress=progress)
            if ranges_cache is None:  # quantize_static reads ranges only from a file
                import tempfile

                with tempfile.TemporaryDirectory() as tmp:
                    return quantize_onnx(onnx_in, onnx_out, [], method,
                                         save_ranges(ranges, Path(tmp) / "ranges.json"), progress)
            save_ranges(ranges, ranges_cache)
        else:
            reader = feeds
    cache_arg = {} if ranges_cache is None else {"calibration_cache_path": str(ranges_cache)}
    # Histogram calibrators get one feed per collect pass (onnxruntime's strided calibration), so they
    # hold the tensors of one image, not of all of them.
    strided = {} if reader is None else {"CalibStridedMinMax": 1}
    import onnxruntime

    # A histogram calibration runs the whole FP32 model once per feed: on the GPU when onnxruntime has one.
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                 if p in onnxruntime.get_available_providers()]
    try:
        quantize_static(str(onnx_in), str(onnx_out), reader, quant_format=QuantFormat.QDQ,
                        calibration_providers=providers, **cache_arg,
                        op_types_to_quantize=["Conv"], per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=calib,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "CalibPercentile": CALIBRATION_PERCENTILE, **strided,
                                       # TensorRT dequantizes INT8 only; INT32 Q/DQ biases do not parse.
                                       "QuantizeBias": False})
    except TypeError as exc:  # an onnxruntime without calibration_providers / calibration_cache_path
        raise UserError(f"onnxruntime {onnxruntime.__version__} is too old for INT8 here ({exc}); "
                        "install onnxruntime>=1.31") from None
    return Path(onnx_out)


class _Feeds:
    """Input feeds [B, 3, H, W] float32 for a graph, built one at a time from [3, h, w] images.

    Iterable (for ``collect_minmax``) and an onnxruntime CalibrationDataReader with the ``set_range``
    / ``len`` of strided calibration. A static ONNX exported for batch B accepts only [B, 3, H, W]; the
    last batch is filled by cycling through the images, which leaves min-max and histogram ranges of
    the set unchanged.
    """

    def __init__(self, graph, images: Sequence[np.ndarray]) -> None:
        from ..calibration import fit_image

        if not len(images):
            raise UserError("no calibration images")
        graph_input = graph.input[0]
        self.name = graph_input.name
        dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
        self.batch = dims[0] if dims[0] > 0 else 1
        fit = dims[2] > 0 and dims[3] > 0  # a static ONNX accepts only its own H x W
        self.images = [fit_image(img, dims[2], dims[3]) if fit else img for img in images]
        self.set_range(0, len(self))

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch)

    def feed(self, index: int) -> np.ndarray:
        n, start = len(self.images), index * self.batch
        return np.stack([self.images[(start + i) % n] for i in range(self.batch)]).astype(np.float32)

    def __iter__(self):
        return (self.feed(i) for i in range(len(self)))

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = iter(range(start_index, min(end_index, len(self))))

    def get_next(self) -> dict[str, np.ndarray] | None:
        index = next(self._next, None)
        return None if index is None else {self.name: self.feed(index)}


def _check_ranges(graph, ranges_cache: Path, method) -> None:
    """Refuse a ranges file that lacks an input of a Conv in ``graph`` (it came from another export),
    or that another calibration method wrote."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    try:
        ranges = load_tensors_data(ranges_cache)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{ranges_cache}: not a calibration cache of tensor ranges ({exc})") from None
    if ranges.calibration_method != method:
        raise UserError(f"{ranges_cache}: calibrated with {ranges.calibration_method.name}, not "
                        f"{method.name}; delete the file to recalibrate or choose the method it was made with")
    initializers = {t.name for t in graph.initializer}
    needed = {name for node in graph.node if node.op_type == "Conv" for name in node.input[:1]}
    missing = sorted(needed - initializers - set(ranges.keys()))
    if missing:
        raise UserError(f"{ranges_cache}: calibrated ranges lack {len(missing)} Conv inputs of this ONNX "
                        f"(first: {missing[0]}); delete the file to recalibrate")

"""INT8 MST++: speed, accuracy, and where the INT8 error starts.

Routes: TensorRT's INT8 engines (parser: Q/DQ ONNX; network API: Q/DQ layers) when TensorRT can run
here, else ONNX Runtime on the same Q/DQ ONNX (CUDA EP with a GPU, CPU EP without). Accuracy against
PyTorch FP32 on real and synthetic images; then every convolution output of the Q/DQ ONNX is compared
with the FP32 ONNX to find the first block whose relative error exceeds --tolerance.

Speeds are the median latency of one batch-1 image (ms) with the FP32 ONNX Runtime route beside them
for comparison; a CPU run uses the quick timing profile.

Examples:
  python performance_int8.py                             # 128x128 on the CPU (a few minutes), 512x482 on a GPU
  python performance_int8.py --size 64 64 --synthetic 0 --out-dir build/results
  python performance_int8.py --routes trt-parser-int8,trt-api-int8 --tolerance 0.02   # full TensorRT and a GPU
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mstpp.cli import CliParser, add_weights_arg, file_stem, non_negative_int, positive_int, run_cli


def build_parser() -> CliParser:
    p = CliParser(__doc__)
    p.add_argument("--routes", default=None,
                   help="comma-separated INT8 routes (default: trt-parser-int8,trt-api-int8 with full TensorRT "
                        "and a GPU, else ort-cuda-int8 with a GPU, ort-cpu-int8 without)")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="relative error (mean |int8 - fp32| / mean |fp32|) that counts as exceeded (default 0.05)")
    p.add_argument("--size", type=positive_int, nargs=2, default=None, metavar=("H", "W"),
                   help="image size for speed and localisation (default 512 482 with a GPU, 128 128 without)")
    p.add_argument("--images", nargs="*", default=["data/samples"], metavar="PATH",
                   help="real images or folders (default data/samples)")
    p.add_argument("--synthetic", type=non_negative_int, default=None,
                   help="synthetic scenes with ground truth (default 8 with a GPU, 2 without)")
    add_weights_arg(p)
    p.add_argument("--out-dir", type=Path, default=Path("docs") / "results",
                   help="where <tag>.json and <tag>.csv go (default docs/results)")
    p.add_argument("--tag", type=file_stem, default=None, help="result file stem (default int8-<gpu or cpu>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def speed_line(route: str, status: str, median_ms: float | None, reason: str, batch: int, height: int,
               width: int) -> str:
    """One printed speed result, with its unit and shape, e.g. ``speed ort-cpu: ok, 210.5 ms median ...``."""
    if median_ms is None:
        return f"speed {route}: {status} ({reason})"
    return (f"speed {route}: {status}, {median_ms:.4g} ms median per batch of {batch} at {height}x{width} "
            f"({batch * 1000.0 / median_ms:.3g} img/s)")


def default_routes(device: str) -> list[str]:
    try:
        from mstpp.trt.version import detect

        if not detect().is_rtx and device == "cuda":
            return ["trt-parser-int8", "trt-api-int8"]
    except Exception:  # no TensorRT: fall back to ONNX Runtime on the same Q/DQ graph
        pass
    return ["ort-cuda-int8"] if device == "cuda" else ["ort-cpu-int8"]


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from mstpp.errors import UserError

    if args.tolerance <= 0:
        raise UserError("--tolerance must be > 0")
    from mstpp.onnx.cache import cached_onnx
    from mstpp.onnx.quantize import describe_quantization
    from mstpp.bench.accuracy import evaluate_routes, real_samples, synthetic_samples, write_accuracy
    from mstpp.bench.environment import capture_environment, environment_slug
    from mstpp.bench.int8_localise import localise
    from mstpp.bench.runner_loop import BenchOptions, benchmark_route
    from mstpp.bench.timing import FULL_TIMING, QUICK_TIMING
    from mstpp.devices import default_device
    from mstpp.metrics import REL_ERROR_FLOOR
    from mstpp.calibration import fit_image
    from mstpp.trt.int8 import describe_api_calibration
    from mstpp.weights import resolve_weights

    device = default_device()
    routes = [r.strip() for r in args.routes.split(",")] if args.routes else default_routes(device)
    h, w = args.size or ((512, 482) if device == "cuda" else (128, 128))
    state, source = resolve_weights(args.weights)
    print(source.description)
    n_synth = args.synthetic if args.synthetic is not None else (2 if device == "cpu" else 8)
    samples = real_samples(args.images) + synthetic_samples(n_synth)
    for s in samples:  # one size for every image: the INT8 ONNX is static
        s.rgb = fit_image(s.rgb, h, w)
        s.gt = None if s.gt is None else fit_image(s.gt, h, w)

    timing = FULL_TIMING if device == "cuda" else QUICK_TIMING
    fp32_route = "ort-cuda" if device == "cuda" else "ort-cpu"
    speed = []
    for route in [fp32_route, *routes]:
        for row in benchmark_route(route, state, 1, h, w, device, BenchOptions(timing=timing)):
            speed.append({"route": route, "status": row.status, "reason": row.reason, "median_ms": row.median_ms,
                          "batch": 1, "height": h, "width": w})
            print(speed_line(route, row.status, row.median_ms, row.reason, 1, h, w))
    rows = evaluate_routes(routes, samples, state, device, progress=not args.no_progress)
    fp32_onnx = cached_onnx(state, (1, 3, h, w), "fp32", l2_form="reducesum")
    int8_onnx = cached_onnx(state, (1, 3, h, w), "int8", l2_form="reducesum")
    where = localise(fp32_onnx, int8_onnx, [s.rgb for s in samples[:4]], args.tolerance)
    first = where["first_exceeding"]
    print(f"first convolution over {args.tolerance:g} relative error: "
          + (f"{first['tensor']} ({first['block']}, {first['rel_error']:.3f})" if first else "none"))
    for block, err in where["per_block"].items():
        print(f"  {block:<34} max rel error {err:.4f}")
    env = capture_environment(device)
    tag = args.tag or f"int8-{environment_slug(env)}"
    # Each route named with the calibration it was built with (the same settings the builds read).
    quant = {route: describe_api_calibration() if route.startswith("trt-api") else describe_quantization()
             for route in routes}
    meta = {"tag": tag, "weights": source.description, "rel_error_floor": REL_ERROR_FLOOR, "size": [h, w],
            "speed": speed, "localisation": where, "quant": quant}
    json_path, _ = write_accuracy(rows, env, meta, args.out_dir, tag)
    print(f"wrote {json_path}")
    return 0

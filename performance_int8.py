#!/usr/bin/env python3
"""INT8 MST++: speed, accuracy, and where the INT8 error starts.

Routes: TensorRT's INT8 engines (parser: Q/DQ ONNX; network API: Q/DQ layers) when TensorRT can run
here, else ONNX Runtime on the same Q/DQ ONNX (CUDA EP with a GPU, CPU EP without). Accuracy against
PyTorch FP32 on real and synthetic images; then every convolution output of the Q/DQ ONNX is compared
with the FP32 ONNX to find the first block whose relative error exceeds --tolerance.

Examples:
  python performance_int8.py
  python performance_int8.py --routes trt-parser-int8,trt-api-int8 --tolerance 0.02
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mstpp.cli import add_weights_arg, run_cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--routes", default=None, help="INT8 routes (default: see above)")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="relative error (mean |int8 - fp32| / mean |fp32|) that counts as exceeded (default 0.05)")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="image size for speed and localisation (default 512 482 with a GPU, 128 128 without)")
    p.add_argument("--images", nargs="*", default=["data/samples"], help="real images (default data/samples)")
    p.add_argument("--synthetic", type=int, default=None,
                   help="synthetic scenes with ground truth (default 8 with a GPU, 2 without)")
    add_weights_arg(p)
    p.add_argument("--out-dir", type=Path, default=Path("docs") / "results")
    p.add_argument("--tag", default=None)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def default_routes(device: str) -> list[str]:
    try:
        from mstpp.trt.version import detect

        if not detect().is_rtx and device == "cuda":
            return ["trt-parser-int8", "trt-api-int8"]
    except Exception:  # no TensorRT: fall back to ONNX Runtime on the same Q/DQ graph
        pass
    return ["ort-cuda-int8"] if device == "cuda" else ["ort-cpu-int8"]


def main(argv=None) -> int:
    args = parse_args(argv)
    from mstpp.errors import UserError

    if args.tolerance <= 0:
        raise UserError("--tolerance must be > 0")
    import json

    import numpy as np
    import torch

    from mstpp.onnx.cache import cached_onnx
    from mstpp.onnx.quantize import describe_quantization
    from mstpp.bench.accuracy import evaluate_routes, real_samples, synthetic_samples, write_accuracy
    from mstpp.bench.environment import capture_environment, environment_slug
    from mstpp.bench.int8_localise import localise
    from mstpp.bench.runner_loop import BenchOptions, benchmark_route
    from mstpp.bench.timing import TimingConfig
    from mstpp.calibration import fit_image
    from mstpp.trt.int8 import describe_api_calibration
    from mstpp.weights import resolve_weights

    device = "cuda" if torch.cuda.is_available() else "cpu"
    routes = [r.strip() for r in args.routes.split(",")] if args.routes else default_routes(device)
    h, w = args.size or ((512, 482) if device == "cuda" else (128, 128))
    state, source = resolve_weights(args.weights)
    print(source.description)
    n_synth = args.synthetic if args.synthetic is not None else (2 if device == "cpu" else 8)
    if n_synth < 0:
        raise UserError("--synthetic must be >= 0")
    samples = real_samples(args.images) + synthetic_samples(n_synth)
    for s in samples:  # one size for every image: the INT8 ONNX is static
        s.rgb = fit_image(s.rgb, h, w)
        s.gt = None if s.gt is None else fit_image(s.gt, h, w)

    timing = TimingConfig() if device == "cuda" else TimingConfig(0, 2, 300, 10, 3)
    fp32_route = "ort-cuda" if device == "cuda" else "ort-cpu"
    speed = []
    for route in [fp32_route, *routes]:
        for row in benchmark_route(route, state, 1, h, w, device, BenchOptions(timing=timing)):
            speed.append({"route": route, "status": row.status, "reason": row.reason, "median_ms": row.median_ms})
            print(f"speed {route}: {row.status} {row.median_ms if row.median_ms else row.reason}")
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
    meta = {"tag": tag, "weights": source.description, "size": [h, w], "speed": speed, "localisation": where,
            "quant": quant}
    json_path, _ = write_accuracy(rows, env, meta, args.out_dir, tag)
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

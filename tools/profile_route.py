#!/usr/bin/env python3
"""Where a route's GPU time goes: every kernel of one MST++ forward, grouped by the part of the model.

Runs any route of performance_latency.py (after warm-up) under torch.profiler and prints the kernel groups
(our fused kernels, convolutions, layout copies, elementwise ops) and the top kernels in ms per forward.

Example:
  python -m tools.profile_route --routes fused-fp16,torch-fp16 --batch 1 --out profile_routes.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--routes", default="fused-fp16", help="comma-separated routes (see performance_latency.py "
                   "--list-routes)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=482)
    p.add_argument("--weights", default=None, help="checkpoint (default: the shipped weights)")
    p.add_argument("--runs", type=int, default=10, help="profiled forwards after 5 warm-up forwards")
    p.add_argument("--out", type=Path, default=None, help="write the profiles as JSON")
    args = p.parse_args(argv)
    import torch

    from mstpp.backends import ROUTES, RouteUnavailable, make_runner
    from mstpp.bench.environment import capture_environment
    from mstpp.bench.profiling import profile_kernels
    from mstpp.weights import resolve_weights

    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    unknown = [r for r in routes if r not in ROUTES]
    if unknown:
        p.error(f"unknown route(s) {unknown}; see performance_latency.py --list-routes")
    if min(args.batch, args.height, args.width, args.runs) < 1:
        p.error("--batch, --height, --width and --runs must be positive")
    if not torch.cuda.is_available():
        print("error: profiling GPU kernels needs a CUDA GPU (none visible)", file=sys.stderr)
        return 2
    state, _ = resolve_weights(args.weights)
    shape = (args.batch, 3, args.height, args.width)
    results = {"environment": capture_environment(), "shape": list(shape), "routes": {}}
    for route in routes:
        try:
            runner = make_runner(route, state, device="cuda")
        except RouteUnavailable as exc:
            print(f"{route}: skipped ({exc})")
            results["routes"][route] = {"skipped": str(exc)}
            continue
        with runner:
            # Launch eagerly so torch.profiler attributes every kernel; a graph replays the same kernels.
            if runner.replays_cuda_graph:
                runner.replays_cuda_graph = False
            runner.prepare(shape)
            x = runner.make_input(torch.rand(*shape))
            for _ in range(5):
                runner.run(x)
            prof = profile_kernels(lambda: runner.run(x), runs=args.runs)
            prof["describe"] = runner.describe()
        results["routes"][route] = prof
        print(f"{route}: {prof['ms_per_run_events']:.3f} ms per forward, kernels {prof['kernel_sum_ms_per_run']:.3f} ms")
        for group, ms in prof["groups_ms_per_run"].items():
            print(f"  {group:<30}{ms:8.3f} ms")
        for k in prof["gpu_kernels_ms_per_run"][:8]:
            print(f"    {k['ms']:7.3f} ms {k['calls']:4d}x  {k['kernel'][:90]}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

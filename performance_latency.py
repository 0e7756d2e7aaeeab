#!/usr/bin/env python3
"""Latency and throughput of MST++ routes (PyTorch, ONNX Runtime, TensorRT, fused kernels) per batch size.

Protocol (docs/DESIGN.md section 7): CUDA-event timing of the GPU work after warm-up (>= 200 ms and
>= 20 runs), then >= 3 s or >= 100 runs measured, whichever comes first. Reports median / p90 / p99 /
min latency, images/s, peak memory and speed-up against torch-fp32 (PyTorch FP32 eager, TF32 off).
Routes that cannot run here are listed as skipped with the reason. Results go to
<out-dir>/<tag>.json (with the environment) and <tag>.csv; `python make_report.py` turns them into
docs/REPORT.md.

Examples:
  python performance_latency.py                       # default routes, batch 1..16, 3x512x482
  python performance_latency.py --quick               # seconds: batch 1, 64x64, short timing
  python performance_latency.py --routes torch-fp32,torch-fp16 --batch-sizes 1,4 --cuda-graphs --e2e
  python performance_latency.py --list-routes
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from typing import NoReturn, Sequence

# Light imports only: argument errors are reported before torch is loaded.
from mstpp.bench.results import BASELINE_ROUTE, BASELINE_TEXT

#: Routes measured when --routes is not given (torch.compile routes are left out: minutes of compile).
DEFAULT_ROUTES = ("torch-fp32", "torch-tf32", "torch-fp16", "torch-bf16", "torch-fp16-cl", "ort-cuda",
                  "ort-cuda-fp16", "trt-parser-fp32", "trt-parser-fp16", "trt-api-fp16",
                  "trt-api-fp16-plugins", "trt-api-fp16-fused", "fused-fp32", "fused-fp16")
#: Added on a CPU device; on a GPU machine ONNX Runtime's CPU EP would take minutes per batch.
CPU_ROUTES = ("ort-cpu",)
QUICK = {"batch_sizes": [1], "height": 64, "width": 64, "warmup_ms": 0.0, "warmup_runs": 2,
         "min_ms": 300.0, "min_runs": 10, "floor_runs": 3}
FULL = {"batch_sizes": [1, 2, 4, 8, 16], "height": 512, "width": 482, "warmup_ms": 200.0, "warmup_runs": 20,
        "min_ms": 3000.0, "min_runs": 100, "floor_runs": 5}


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit status 2 (no usage dump, no traceback)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else _positive_int(text)


def _tag(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise argparse.ArgumentTypeError(f"a tag is a file name stem (letters, digits, '_', '.', '-'), got {text!r}")
    return text


def _int_list(text: str) -> list[int]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of positive integers")
    return sorted(set(_positive_int(t) for t in items))


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--routes", default=None,
                   help="comma-separated routes, or 'all' (default: the eager, ONNX Runtime and TensorRT "
                        "routes; torch.compile only when named; ort-cpu added on a CPU device)")
    p.add_argument("--list-routes", action="store_true", help="list the known routes and exit")
    p.add_argument("--batch-sizes", type=_int_list, default=None, help="comma list (default 1,2,4,8,16)")
    p.add_argument("--height", type=_positive_int, default=None, help="input height in pixels (default 512)")
    p.add_argument("--width", type=_positive_int, default=None, help="input width in pixels (default 482)")
    p.add_argument("--weights", default=None,
                   help="MST++ checkpoint (.pth/.npz/.onnx); default: shipped weights or a seeded initialisation")
    p.add_argument("--out-dir", default="docs/results", help="where <tag>.json and <tag>.csv go (default docs/results)")
    p.add_argument("--tag", type=_tag, default=None, help="result file stem (default latency-<gpu or cpu>[-quick])")
    p.add_argument("--device", type=_device, default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument("--quick", action="store_true",
                   help="smoke profile: batch 1, 64x64, 2 warm-up runs, ~0.3 s per route (the default on a CPU "
                        "device unless sizes are given)")
    p.add_argument("--warmup-ms", type=_non_negative_float, default=None, help="minimum warm-up time (default 200)")
    p.add_argument("--warmup-runs", type=_non_negative_int, default=None, help="minimum warm-up runs (default 20)")
    p.add_argument("--min-ms", type=_non_negative_float, default=None,
                   help="stop measuring after this many ms ... (default 3000)")
    p.add_argument("--min-runs", type=_positive_int, default=None, help="... or this many runs, whichever first (default 100)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="also time a CUDA-graph-captured variant of each route (reason given where capture fails)")
    p.add_argument("--e2e", action="store_true",
                   help="also time end to end: pinned host input -> device -> output back to pinned host memory")
    p.add_argument("--repeat-check", action="store_true",
                   help=f"measure {BASELINE_ROUTE} again after all routes and report the difference in %% "
                        "(the same route measured twice should agree within 3%%)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def resolve_routes(text: str | None, device: str) -> list[str]:
    """Route names from ``--routes``; the baseline is measured first so speed-ups have a reference."""
    from mstpp.backends import ROUTES

    if text is None:
        routes = [r for r in DEFAULT_ROUTES if r in ROUTES]
        if device == "cpu":
            routes += [r for r in CPU_ROUTES if r in ROUTES]
    elif text.strip() == "all":
        routes = list(ROUTES)
    else:
        routes = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
        unknown = [r for r in routes if r not in ROUTES]
        if unknown or not routes:
            raise ValueError(f"unknown route {unknown[0]!r} (see --list-routes)" if unknown else "no routes given")
    return sorted(routes, key=lambda r: r != BASELINE_ROUTE)


def list_routes() -> None:
    from mstpp.backends import ROUTES

    width = max(len(n) for n in ROUTES)
    for name, spec in ROUTES.items():
        print(f"{name:<{width}}  {'cuda' if spec.cuda_only else 'cpu+cuda'}  {spec.description}")


def resolve_profile(args: argparse.Namespace, device: str):
    """(quick?, TimingConfig, batch sizes, height, width): explicit options win over the profile's values.

    A CPU device gets the quick profile unless sizes are given: full-size MST++ on a CPU takes minutes
    per run.
    """
    from mstpp.bench.timing import TimingConfig

    sized = any(v is not None for v in (args.batch_sizes, args.height, args.width))
    quick = args.quick or (device == "cpu" and not sized)
    if quick and not args.quick:
        print("CPU device: using the --quick profile (give --batch-sizes/--height/--width to override)")
    profile = QUICK if quick else FULL

    def pick(name: str):
        value = getattr(args, name)
        return profile[name] if value is None else value

    timing = TimingConfig(warmup_ms=pick("warmup_ms"), warmup_runs=pick("warmup_runs"), min_ms=pick("min_ms"),
                          min_runs=pick("min_runs"), floor_runs=min(profile["floor_runs"], pick("min_runs")))
    return quick, timing, pick("batch_sizes"), pick("height"), pick("width")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_routes:
        list_routes()
        return 0

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        routes = resolve_routes(args.routes, device.split(":")[0])
    except ValueError as exc:
        parser.error(str(exc))
    quick, timing, batches, height, width = resolve_profile(args, device)

    from mstpp.errors import UserError
    from mstpp.input_size import size_problem
    if size_problem(height, width):
        parser.error(f"--height/--width {size_problem(height, width)}")
    from mstpp.weights import resolve_weights

    try:
        state_dict, source = resolve_weights(args.weights)
    except UserError as exc:
        parser.error(str(exc))
    print(source.description)

    from mstpp.bench.environment import capture_environment, environment_slug, gpu_state
    from mstpp.bench.results import BenchResult, attach_speedups, repeat_check, write_results
    from mstpp.bench.runner_loop import BenchOptions, run_benchmark

    environment = capture_environment(device)
    print(f"device: {device} ({environment.get('gpu') or environment.get('cpu')}); routes: {', '.join(routes)}; "
          f"batch sizes: {batches}; input 3x{height}x{width}")
    options = BenchOptions(timing=timing, cuda_graphs=args.cuda_graphs, e2e=args.e2e)
    tag = args.tag or f"latency-{environment_slug(environment)}" + ("-quick" if quick else "")
    metadata = {"tag": tag, "weights": redact_path(source.description, source.path), "device": device, "routes": routes,
                "batch_sizes": batches, "height": height, "width": width, "timing": timing.as_dict(),
                "cuda_graphs": args.cuda_graphs, "e2e": args.e2e, "baseline": BASELINE_TEXT,
                "command": command_line(argv if argv is not None else sys.argv[1:])}

    def save(rows, complete: bool):
        attach_speedups(rows)
        meta = dict(metadata, complete=complete, repeat_check=repeat_check(rows))
        if complete and environment.get("gpu"):
            # Clocks, power and temperature right after the runs; the environment holds those from before.
            meta["gpu_state_after"] = gpu_state(device)
        return write_results(BenchResult(rows, environment, meta), args.out_dir, tag)

    rows = run_benchmark(routes, batches, height, width, state_dict, device, options,
                         repeat_check=args.repeat_check, progress=not args.no_progress,
                         on_job_done=lambda done: save(done, complete=False))
    json_path, csv_path = save(rows, complete=True)
    checks = repeat_check(rows)
    print_summary(rows, checks)
    print(f"wrote {json_path} and {csv_path}")
    return 0


def _short(arg: str) -> str:
    if arg.startswith("--") and "=" in arg:
        flag, value = arg.split("=", 1)
        return f"{flag}={_short(value)}"
    return "<...>/" + os.path.basename(arg.rstrip("/")) if os.path.isabs(arg) else arg


def command_line(argv: Sequence[str]) -> str:
    """The command as typed, with absolute paths shortened to their last part (result files get committed)."""
    return "python performance_latency.py " + " ".join(shlex.quote(_short(a)) for a in argv)


def redact_path(text: str, path: str | None) -> str:
    """``text`` with an absolute ``path`` in it shortened the same way."""
    return text.replace(path, _short(path)) if path and os.path.isabs(path) else text


def print_summary(rows, checks) -> None:
    """The final table on stdout, then the repeat check."""
    from mstpp.bench.results import rows_to_frame

    frame = rows_to_frame(rows)
    frame.insert(0, "label", [r.label for r in rows])
    cols = ["label", "batch", "repeat", "status", "median_ms", "p90_ms", "p99_ms", "min_ms", "throughput_ips",
            "speedup", "peak_torch_mib", "reason"]
    frame = frame[cols].rename(columns={"throughput_ips": "img/s", "speedup": f"x vs {BASELINE_ROUTE}",
                                        "peak_torch_mib": "peak MiB"})
    frame["reason"] = frame["reason"].str.slice(0, 90)
    for col in ("peak MiB", f"x vs {BASELINE_ROUTE}"):
        frame[col] = frame[col].astype(float)  # None -> NaN, printed as "-"
    print(f"\nspeed-up baseline: {BASELINE_TEXT}")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))
    for c in checks:
        verdict = "within" if c["within"] else "OUTSIDE"
        print(f"repeat check {c['route']} b={c['batch']} {c['mode']}: {c['first_ms']:.4g} ms vs "
              f"{c['second_ms']:.4g} ms, difference {c['diff_pct']:.2f}% ({verdict} {c['tolerance_pct']:g}%)")


if __name__ == "__main__":
    sys.exit(main())

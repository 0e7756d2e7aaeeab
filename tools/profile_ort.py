#!/usr/bin/env python3
"""Where ONNX Runtime's time goes for MST++: GPU kernels, CPU fallbacks, copies.

Runs the CUDA EP (IOBinding on device buffers, torch's stream) on one or more ONNX files and reports
two views: onnxruntime's own profile (which provider ran each node, Memcpy nodes it inserted, host time
per op type - its "kernel_time" is the host-side launch time on the CUDA EP, not GPU time), and the
GPU kernels themselves through torch.profiler (CUPTI sees every kernel in the process, ORT's too).

Example:
  python -m tools.profile_ort build/mstpp.raw.onnx build/mstpp.onnx --out profile.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path


def summarise(profile_file: str, runs: int) -> dict:
    """Aggregate an onnxruntime profile (Chrome trace JSON) per op type and provider (ms per run)."""
    events = json.loads(Path(profile_file).read_text())
    # Count only nodes inside the last ``runs`` model runs: the first ones include cuDNN's algorithm search.
    windows = sorted((ev["ts"], ev["ts"] + ev["dur"]) for ev in events if ev.get("name") == "model_run")[-runs:]
    by_op: dict[str, float] = defaultdict(float)
    by_provider: dict[str, float] = defaultdict(float)
    cpu_nodes, memcpy = set(), set()
    for ev in events:
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        if not any(lo <= ev.get("ts", -1) <= hi for lo, hi in windows):
            continue
        args = ev.get("args", {})
        op, provider = args.get("op_name", "?"), args.get("provider", "?")
        ms = ev.get("dur", 0) / 1e3 / runs
        by_op[op] += ms
        by_provider[provider] += ms
        if provider == "CPUExecutionProvider":
            cpu_nodes.add(f"{op}:{ev['name'][:-len('_kernel_time')]}")
        if op.startswith("Memcpy"):
            memcpy.add(ev["name"])
    return {"ms_per_run_by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
            "ms_per_run_by_provider": dict(by_provider), "cpu_nodes": sorted(cpu_nodes),
            "memcpy_nodes": sorted(memcpy)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", nargs="+", type=Path, help="ONNX files (static 1x3x512x482 or dynamic)")
    p.add_argument("--shape", type=int, nargs=4, default=(1, 3, 512, 482))
    p.add_argument("--runs", type=int, default=10, help="profiled runs after 3 warm-up runs")
    p.add_argument("--out", type=Path, default=None, help="write the summaries as JSON")
    args = p.parse_args()
    import torch

    from mstpp.backends.onnxruntime_runner import OrtRunner
    from mstpp.bench.profiling import profile_kernels

    results = {}
    for path in args.onnx:
        with tempfile.TemporaryDirectory() as tmp:
            runner = OrtRunner({}, device="cuda", provider="cuda", onnx_path=path, profile=f"{tmp}/ort")
            runner.prepare(tuple(args.shape))
            x = runner.make_input(torch.rand(*args.shape))
            for _ in range(3):
                runner.run(x)
            profiled = profile_kernels(lambda: runner.run(x), runs=args.runs)
            summary = summarise(runner.end_profiling(), args.runs)
            summary["ms_per_run_events"] = profiled["ms_per_run_events"]
            summary["gpu_kernels_ms_per_run"] = profiled["gpu_kernels_ms_per_run"]
            summary["providers"] = runner.describe()["providers"]
            runner.close()
        results[path.name] = summary
        top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(summary["ms_per_run_by_op"].items())[:6])
        print(f"{path.name}: {summary['ms_per_run_events']:.2f} ms/run; host time by op (ms): {top}")
        for k in summary["gpu_kernels_ms_per_run"][:4]:
            print(f"  GPU {k['ms']:8.2f} ms/run  {k['calls']:4d} calls  {k['kernel'][:90]}")
        print(f"  by provider: {summary['ms_per_run_by_provider']}; CPU nodes: {len(summary['cpu_nodes'])}; "
              f"memcpy nodes: {len(summary['memcpy_nodes'])}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

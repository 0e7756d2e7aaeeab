"""Served throughput and latency percentiles against client concurrency and batch policy (Triton via serve.py).

For each batch policy (--max-batch values; 1 = no batching) a serve.py server is started on this host,
warmed up, and loaded by N client threads (each with its own tritonclient connection, one image per
request, requests back to back) for every N in --concurrency. Each point records throughput (images
answered per second of wall time), latency p50/p90/p99 per request, and errors. --direct adds the
direct runner's throughput at each batch policy's batch size, measured in this process the way the
server computes (host input -> route -> cube in host memory), the reference the served numbers are
held against. perf_analyzer is not used: the load generator here is our own (mstpp/serving/client.py).

Results: <out-dir>/<tag>.json (kind "serving", with the environment) and <tag>.csv; make_report.py
draws them (figure + table). Runs in the serving environment (.venv-serve, `./build.sh serve-env`).

Examples:
  .venv-serve/bin/python performance_serving.py --route torch-fp32 --size 64 64 --concurrency 1,2,4 --max-batch 1,4 --duration 5 --out-dir outputs/results
  .venv-serve/bin/python performance_serving.py --direct --max-batch 16 --concurrency 1,8,32 --output-dtype fp16
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from ..cli import CliParser, add_weights_arg, int_list, positive_int, run_cli
from ..errors import UserError



def build_parser() -> CliParser:
    p = CliParser(__doc__, prog="performance_serving.py")
    p.add_argument("--route", default=None, help="route served (default: fused-fp16 with a GPU, torch-fp32 without)")
    add_weights_arg(p)
    p.add_argument("--size", type=positive_int, nargs=2, metavar=("H", "W"), default=(512, 482),
                   help="image size of every request (default 512 482)")
    p.add_argument("--concurrency", type=int_list, default=[1, 2, 4, 8, 16, 32, 64],
                   help="client counts, comma-separated (default 1,2,4,8,16,32,64)")
    p.add_argument("--max-batch", type=int_list, default=[1, 16],
                   help="batch policies: the server's largest dynamic batch, one server each (default 1,16; "
                        "1 = no batching)")
    p.add_argument("--queue-delay-us", type=int, default=1000,
                   help="dynamic batcher's queue delay in microseconds (default 1000)")
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc", help="client protocol (default grpc)")
    p.add_argument("--output-dtype", choices=("fp32", "fp16"), default="fp32", help="served cube dtype (default fp32)")
    p.add_argument("--client-processes", type=positive_int, default=1,
                   help="client processes the clients are spread over (default 1; on a GPU host use several: one "
                        "Python process decodes a few hundred MB/s of cubes)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per point (default 10)")
    p.add_argument("--gpus", default=None, help="passed to serve.py --gpus (default all)")
    p.add_argument("--direct", action="store_true", help="also time the direct runner at each --max-batch")
    p.add_argument("--out-dir", default="docs/results", help="where <tag>.json and <tag>.csv go (default docs/results)")
    p.add_argument("--tag", default=None, help="result file stem (default serving-<gpu or cpu>)")
    p.add_argument("--ready-timeout", type=float, default=600.0,
                   help="seconds to wait for a server to warm up and become ready (default 600)")
    return p


def _percentiles(latencies: Sequence[float]) -> dict[str, float | None]:
    from ..bench.stats import mean, percentile

    if not latencies:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "min_ms": None, "max_ms": None}
    return {"p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90),
            "p99_ms": percentile(latencies, 99), "mean_ms": mean(latencies), "min_ms": min(latencies),
            "max_ms": max(latencies)}


def measure_direct(route: str, state: Any, device: str, batch: int, size: tuple[int, int], output_dtype: str,
                   duration_s: float) -> dict[str, Any]:
    """The direct runner at ``batch``: host input -> cube in host memory, as a server instance computes it."""
    import numpy as np

    from ..serving.server import OUTPUT_DTYPES
    from ..serving.worker import RouteWorker

    worker = RouteWorker(route, state, device, batch, OUTPUT_DTYPES[output_dtype])
    try:
        x = np.random.default_rng(0).random((batch, 3, *size), dtype=np.float32)
        samples: list[float] = []

        def timed() -> None:
            worker.warm_up(*size)
            end = time.perf_counter() + duration_s
            while time.perf_counter() < end or len(samples) < 5:
                t0 = time.perf_counter()
                worker.infer(x)
                samples.append((time.perf_counter() - t0) * 1e3)

        # In a thread of its own, as a server instance runs it (CPU routes: PyTorch's intra-op threading
        # differs between the main thread and others, by 30x on a busy 2-core machine).
        thread = threading.Thread(target=timed)
        thread.start()
        thread.join()
        stats = _percentiles(samples)
        return {"kind": "direct", "route": route, "max_batch": batch, "request_batch": batch, "concurrency": 0,
                "requests": len(samples), "errors": 0, "duration_s": sum(samples) / 1e3,
                "throughput_ips": batch * 1e3 / stats["p50_ms"], "status": "ok", "reason": "",
                "settings": worker.describe(), **stats}
    finally:
        worker.close()
        _free_device_memory()


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_policy(args: argparse.Namespace, route: str, max_batch: int, log_dir: Path,
               log=print) -> list[dict[str, Any]]:
    """Start a server with ``max_batch``, load it at every concurrency, stop it; one row per concurrency."""
    from ..serving import client as sc
    from ..serving.launcher import ServerProcess

    height, width = args.size
    server_args = ["--route", route, "--max-batch", str(max_batch), "--queue-delay-us", str(args.queue_delay_us),
                   "--warmup-size", str(height), str(width), "--output-dtype", args.output_dtype]
    if args.weights:
        server_args += ["--weights", args.weights]
    if args.gpus:
        server_args += ["--gpus", args.gpus]
    base = {"kind": "served", "route": route, "max_batch": max_batch, "queue_delay_us": args.queue_delay_us,
            "protocol": args.protocol, "output_dtype": args.output_dtype, "request_batch": 1,
            "client_processes": args.client_processes}
    server = ServerProcess(server_args, log_dir / f"server-b{max_batch}.log")
    rows = []
    try:
        t0 = time.perf_counter()
        server.wait_ready(args.ready_timeout)
        log(f"max batch {max_batch}: server ready in {time.perf_counter() - t0:.0f} s")
        for concurrency in args.concurrency:
            res = sc.run_load_processes(args.protocol, server.url(args.protocol), concurrency, args.client_processes,
                                        (1, 3, height, width), args.duration)
            stats = _percentiles(res.latencies_ms)
            row = {**base, "concurrency": concurrency, "requests": len(res.latencies_ms), "errors": len(res.errors),
                   "duration_s": res.wall_s, "throughput_ips": res.images / res.wall_s if res.wall_s else None,
                   "status": "ok" if res.latencies_ms and not res.errors else "error",
                   "reason": "; ".join(res.errors[:3]), **stats}
            rows.append(row)
            log(f"max batch {max_batch}, concurrency {concurrency}: {row['throughput_ips'] or 0:.1f} img/s, "
                f"p50 {stats['p50_ms'] or float('nan'):.1f} ms, p99 {stats['p99_ms'] or float('nan'):.1f} ms, "
                f"{len(res.errors)} errors")
    except RuntimeError as exc:
        rows.append({**base, "concurrency": 0, "status": "error", "reason": str(exc).splitlines()[0]})
        log(f"max batch {max_batch}: {str(exc)[:2000]}")
    finally:
        code = server.stop()
        if code != 0:
            log(f"warning: the max-batch {max_batch} server exited with {code} on SIGTERM")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from ..serving.environment import check_serving_environment

    check_serving_environment()
    import torch

    from ..bench.environment import capture_environment, environment_slug
    from ..bench.serving import write_serving_results
    from ..serving.limits import MIN_SIDE
    from ..serving.worker import serving_plan
    from ..weights import resolve_weights

    if min(args.size) < MIN_SIDE:
        raise UserError(f"--size must be at least {MIN_SIDE} {MIN_SIDE}")
    if args.duration <= 0:
        raise UserError(f"--duration must be > 0, got {args.duration}")
    if args.queue_delay_us < 0:
        raise UserError(f"--queue-delay-us must be >= 0, got {args.queue_delay_us}")
    if max(args.concurrency) > 256:
        raise UserError("--concurrency above 256 clients is not supported by this load generator")
    route, devices = serving_plan(args.route, args.gpus)
    state, source = resolve_weights(args.weights)
    print(source.description, flush=True)
    rows: list[dict[str, Any]] = []
    if args.direct:
        for batch in args.max_batch:
            row = measure_direct(route, state, devices[0], batch, tuple(args.size), args.output_dtype,
                                 min(args.duration, 10.0))
            rows.append(row)
            print(f"direct runner, batch {batch}: {row['throughput_ips']:.1f} img/s (p50 {row['p50_ms']:.1f} ms)",
                  flush=True)
    with tempfile.TemporaryDirectory(prefix="mstpp-serving-") as tmp:
        for max_batch in args.max_batch:
            rows += run_policy(args, route, max_batch, Path(tmp), log=lambda line: print(line, flush=True))
    height, width = args.size
    for row in rows:
        row.update(height=height, width=width, device=devices[0])
    environment = capture_environment(devices[0] if devices[0] != "cpu" else "cpu")
    for package in ("nvidia-pytriton", "tritonclient"):
        environment[package] = _package_version(package)
    environment["serving_instances"] = len(devices)
    meta = {"tag": args.tag, "weights": source.description, "command": " ".join(["performance_serving.py", *(argv if argv is not None else sys.argv[1:])]),
            "load_generator": "mstpp.serving.client (threads, one tritonclient connection each, one image a request)"}
    tag = args.tag or f"serving-{environment_slug(environment)}"
    meta["tag"] = tag
    json_path, csv_path = write_serving_results(rows, environment, meta, args.out_dir, tag)
    print(f"wrote {json_path} and {csv_path}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

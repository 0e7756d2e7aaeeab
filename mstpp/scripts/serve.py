"""Serve MST++ through Triton Inference Server (PyTriton): HTTP, gRPC (KServe v2) and Prometheus metrics.

Models:
  mstpp        input 'rgb' FP32 [B, 3, H, W] in [0, 1] (H, W >= 5)    -> output 'cube' [B, 31, H, W]
  mstpp_image  input 'image' BYTES [B, 1]: encoded JPEG/PNG/TIFF/BMP, decoded like infer.py
               (the images of one request share a size)              -> output 'cube' [B, 31, H, W]

'mstpp' batches requests of the same size dynamically (up to --max-batch, waiting at most
--queue-delay-us for more); each model has one instance per GPU in --gpus (one on the CPU when no GPU
is visible). The server answers only after every instance has been warmed up at --warmup-size; SIGINT
or SIGTERM finishes the requests in flight and exits 0. Ports bind on 127.0.0.1 unless --address says
otherwise.

It runs in the serving environment (PyTriton needs numpy < 2): `./build.sh serve-env` creates
.venv-serve. --write-repository instead writes a model repository for NVIDIA's Triton container
(tensorrt_plan and/or onnxruntime_onnx backends) and exits; that needs no serving environment.

Examples:
  .venv-serve/bin/python serve.py                                  # fused-fp16 on every GPU; torch-fp32 on a CPU
  .venv-serve/bin/python serve.py --route torch-fp32 --max-batch 4 --warmup-size 64 64 --http-port 8100
  .venv-serve/bin/python serve.py --route fused-fp16 --gpus 0,1 --output-dtype fp16
  python serve.py --write-repository build/triton --onnx build/mstpp_dynamic.onnx --max-batch 8
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from ..cli import CliParser, add_weights_arg, positive_int, run_cli
from ..errors import UserError


def _port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1-65535)")
    return value


def build_parser() -> CliParser:
    p = CliParser(__doc__, prog="serve.py")
    p.add_argument("--route", default=None,
                   help="inference route, see performance_latency.py --list-routes (default: fused-fp16 with a "
                        "GPU, torch-fp32 without)")
    add_weights_arg(p)
    p.add_argument("--max-batch", type=positive_int, default=None,
                   help="largest batch the dynamic batcher forms, and the largest request batch (default 16; "
                        "with --write-repository: the plan profile's largest batch, 16 for ONNX)")
    p.add_argument("--queue-delay-us", type=int, default=1000,
                   help="how long a request may wait for others to batch with, in microseconds (default 1000; "
                        "0 = batch only what is already queued)")
    p.add_argument("--gpus", default=None,
                   help="'all' or GPU indices like 0,1: one model instance on each (default all; the CPU "
                        "when no GPU is visible)")
    p.add_argument("--output-dtype", choices=("fp32", "fp16"), default="fp32",
                   help="dtype of the returned cube (default fp32; fp16 halves the bytes sent)")
    p.add_argument("--http-port", type=_port, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--grpc-port", type=_port, default=8001, help="gRPC port (default 8001)")
    p.add_argument("--metrics-port", type=_port, default=8002, help="Prometheus metrics port (default 8002)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address the three ports bind to (default 127.0.0.1; 0.0.0.0 serves other machines)")
    p.add_argument("--warmup-size", type=positive_int, nargs=2, metavar=("H", "W"), default=(512, 482),
                   help="image size every instance is warmed up at before the server is ready (default 512 482)")
    p.add_argument("--max-side", type=positive_int, default=4096,
                   help="largest image height or width accepted (default 4096)")
    p.add_argument("--max-image-bytes", type=positive_int, default=32 << 20,
                   help=f"largest encoded image accepted by mstpp_image, in bytes (default {32 << 20})")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds a shutdown waits for the requests in flight (default 30)")
    g = p.add_argument_group("model repository for NVIDIA's Triton container (written instead of serving)")
    g.add_argument("--write-repository", type=Path, default=None, metavar="DIR",
                   help="write models mstpp_trt (--plan) and/or mstpp_onnx (--onnx) with config.pbtxt into DIR, then exit (default: serve instead)")
    g.add_argument("--plan", type=Path, default=None,
                   help="TensorRT plan (from mst_onnxparser.py/mst_trt_api.py; its .json record gives the shapes; default: none)")
    g.add_argument("--onnx", type=Path, default=None, help="ONNX file from torch2onnx.py (--dynamic for any size; default: none)")
    g.add_argument("--instances", type=positive_int, default=1,
                   help="instances per GPU in the written configs (default 1)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.write_repository is not None:
        return _write_repository(args)
    if args.plan or args.onnx:
        raise UserError("--plan and --onnx go with --write-repository")

    from ..serving.environment import check_serving_environment

    check_serving_environment()  # before torch and the weights: a wrong environment fails in one line, fast

    from ..serving.limits import MIN_SIDE, RequestLimits
    from ..serving.server import ServeOptions, serve
    from ..serving.worker import serving_plan
    from ..weights import resolve_weights

    if args.queue_delay_us < 0:
        raise UserError(f"--queue-delay-us must be >= 0, got {args.queue_delay_us}")
    if len({args.http_port, args.grpc_port, args.metrics_port}) < 3:
        raise UserError("--http-port, --grpc-port and --metrics-port must differ")
    if min(args.warmup_size) < MIN_SIDE or max(args.warmup_size) > args.max_side:
        raise UserError(f"--warmup-size must lie between {MIN_SIDE} and --max-side {args.max_side}")
    route, devices = serving_plan(args.route, args.gpus)
    state, source = resolve_weights(args.weights)
    print(source.description, flush=True)
    options = ServeOptions(route=route, devices=devices, max_batch=args.max_batch or 16, queue_delay_us=args.queue_delay_us,
                           output_dtype=args.output_dtype, http_port=args.http_port, grpc_port=args.grpc_port,
                           metrics_port=args.metrics_port, address=args.address,
                           warmup_size=tuple(args.warmup_size),
                           limits=RequestLimits(max_side=args.max_side, max_image_bytes=args.max_image_bytes),
                           drain_timeout_s=args.drain_timeout)
    return serve(options, state, log=lambda line: print(line, flush=True))


def _write_repository(args: argparse.Namespace) -> int:
    from ..serving.repository import write_repository

    if args.plan is None and args.onnx is None:
        raise UserError("--write-repository needs --plan and/or --onnx")
    gpus = None
    if args.gpus not in (None, "all"):
        try:
            gpus = sorted({int(g) for g in args.gpus.split(",") if g.strip()})
        except ValueError:
            raise UserError(f"--gpus must be 'all' or comma-separated GPU indices, got {args.gpus!r}") from None
    written = write_repository(args.write_repository, plan=args.plan, onnx=args.onnx, max_batch=args.max_batch,
                               gpus=gpus, instances=args.instances, queue_delay_us=args.queue_delay_us)
    for model_dir in written:
        print(f"wrote {model_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

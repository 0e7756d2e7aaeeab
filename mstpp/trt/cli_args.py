"""Command-line options shared by mst_onnxparser.py and mst_trt_api.py."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import add_shape_args, bhw_shape
from ..errors import UserError
from .builder import BuildSettings, ShapeRange

MODES = ("FP32", "FP16", "INT8")


def add_engine_args(p: argparse.ArgumentParser, default_plan: str) -> None:
    p.add_argument("--plan_path", "--plan-path", type=Path, default=Path(default_plan),
                   help=f"output plan (default {default_plan}); its build record goes to <plan>.json")
    p.add_argument("--mode", type=str.upper, choices=MODES, default="FP32",
                   help="precision: FP32, FP16 (FP32 statistics) or INT8 (explicit Q/DQ) (default FP32)")
    add_shape_args(p)
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic batch/H/W with a shape profile: min --min-shape, opt the given shape, "
                        "max --max-shape")
    p.add_argument("--min-shape", type=bhw_shape, default=(1, 16, 16), metavar="BxHxW",
                   help="profile minimum with --dynamic (default 1x16x16)")
    p.add_argument("--max-shape", type=bhw_shape, default=None, metavar="BxHxW",
                   help="profile maximum with --dynamic (default <batch>x1024x1024)")
    p.add_argument("--workspace", type=float, default=4.0, help="builder workspace in GiB (default 4)")
    p.add_argument("--no-tf32", action="store_true",
                   help="FP32 engines without TF32 (TensorRT enables TF32 for FP32 by default)")
    p.add_argument("--timing-cache", type=Path, default=Path("build") / "mstpp.timing.cache",
                   help="timing cache file, read and updated (default build/mstpp.timing.cache)")
    p.add_argument("--trt", choices=("auto", "tensorrt", "tensorrt_rtx"), default="auto",
                   help="which TensorRT to use (default auto: tensorrt if installed, else tensorrt_rtx)")
    p.add_argument("--verbose", action="store_true", help="print TensorRT's info messages")


def add_calibration_table_arg(p: argparse.ArgumentParser | argparse._ActionsContainer, what: str) -> None:
    """--calibration_table_path, the 2022 project's INT8 option: a cache reused when present, else written."""
    p.add_argument(
        "--calibration_table_path", "--calibration-table-path", type=Path, default=None, metavar="PATH",
        help=f"INT8: calibration cache of {what}; reused when the file exists, else calibrated now and "
             "written there (default: none, calibrate every build)")


def shape_range(args: argparse.Namespace) -> ShapeRange:
    opt = (args.batch_size, 3, args.height, args.width)
    if not args.dynamic:
        return ShapeRange.static(opt)
    max_b, max_h, max_w = args.max_shape or (args.batch_size, max(1024, args.height), max(1024, args.width))
    min_b, min_h, min_w = args.min_shape
    shapes = ShapeRange((min_b, 3, min_h, min_w), opt, (max_b, 3, max_h, max_w))
    shapes.validate()
    return shapes


def build_settings(args: argparse.Namespace, route: str, **notes) -> BuildSettings:
    if args.workspace <= 0:
        raise UserError("--workspace must be > 0 GiB")
    args.timing_cache.parent.mkdir(parents=True, exist_ok=True)
    return BuildSettings(route=route, precision=args.mode.lower(), shapes=shape_range(args),
                         workspace_gib=args.workspace, tf32=not args.no_tf32,
                         timing_cache=str(args.timing_cache), notes=notes)

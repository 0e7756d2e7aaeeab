"""Command-line options shared by mst_onnxparser.py and mst_trt_api.py."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..cli import add_shape_args
from ..errors import UserError
from ..input_size import MIN_INPUT_SIZE
from .builder import BuildSettings, ShapeRange

MODES = ("FP32", "FP16", "INT8")


def _bhw(text: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)x(\d+)", text.strip())
    if not m or min(int(g) for g in m.groups()) < 1:
        raise argparse.ArgumentTypeError(f"expected BxHxW with positive integers, e.g. 1x512x482, got {text!r}")
    return int(m[1]), int(m[2]), int(m[3])


def add_engine_args(p: argparse.ArgumentParser, default_plan: str) -> None:
    p.add_argument("--plan_path", "--plan-path", type=Path, default=Path(default_plan),
                   help=f"output plan (default {default_plan}); its build record goes to <plan>.json")
    p.add_argument("--mode", type=str.upper, choices=MODES, default="FP32",
                   help="precision: FP32, FP16 (FP32 statistics) or INT8 (explicit Q/DQ) (default FP32)")
    add_shape_args(p)
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic batch/H/W with a shape profile: min --min-shape, opt the given shape, "
                        "max --max-shape")
    p.add_argument("--min-shape", type=_bhw, default=(1, 16, 16), metavar="BxHxW",
                   help=f"profile minimum with --dynamic (default 1x16x16; H and W must be >= "
                        f"{MIN_INPUT_SIZE}, the smallest input MST++ accepts)")
    p.add_argument("--max-shape", type=_bhw, default=None, metavar="BxHxW",
                   help="profile maximum with --dynamic (default <batch>x1024x1024)")
    p.add_argument("--workspace", type=float, default=4.0, help="builder workspace in GiB (default 4)")
    p.add_argument("--no-tf32", action="store_true",
                   help="FP32 engines without TF32 (TensorRT enables TF32 for FP32 by default)")
    p.add_argument("--timing-cache", type=Path, default=Path("build") / "mstpp.timing.cache",
                   help="timing cache file, read and updated (default build/mstpp.timing.cache)")
    p.add_argument("--calib-cache", type=Path, default=None,
                   help="INT8: calibration cache from calibrator.py (default: calibrate now on data/samples "
                        "and synthetic scenes, saved beside the plan)")
    p.add_argument("--trt", choices=("auto", "tensorrt", "tensorrt_rtx"), default="auto",
                   help="which TensorRT to use (default: tensorrt if installed, else tensorrt_rtx)")
    p.add_argument("--verbose", action="store_true", help="print TensorRT's info messages")


def shape_range(args: argparse.Namespace) -> ShapeRange:
    opt = (args.batch_size, 3, args.height, args.width)
    if not args.dynamic:
        shapes = ShapeRange.static(opt)
        shapes.validate()
        return shapes
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


_SHAPE_FLAGS = (("batch_size", "--batch_size", 0), ("height", "--height", 2), ("width", "--width", 3))
#: Engine shape for a dynamic ONNX when no flag says otherwise (the 2022 benchmark shape).
DEFAULT_ENGINE_SHAPE = (1, 3, 512, 482)


def shape_flags_follow_onnx(p: argparse.ArgumentParser) -> None:
    """Make --batch_size/--height/--width default to "unset", so that a static ONNX's own shape applies
    (``apply_onnx_shape``) and the flags only check it; a dynamic ONNX gets 1x3x512x482 unless given."""
    # argparse has no public way to change an existing option's default and help text.
    for action in p._actions:
        for dest, flag, axis in _SHAPE_FLAGS:
            if action.dest == dest:
                action.default = None
                action.help = (f"{('batch size B', '', 'input height H', 'input width W')[axis]} of the "
                               f"engine: a static ONNX's own value (the flag may only repeat it); for a "
                               f"dynamic ONNX default {DEFAULT_ENGINE_SHAPE[axis]}")


def onnx_input_dims(proto) -> tuple[int | None, ...]:
    """The [B, 3, H, W] input of an MST++ ONNX: an int per static dimension, None per symbolic one."""
    inits = {t.name for t in proto.graph.initializer}
    (inp,) = [i for i in proto.graph.input if i.name not in inits]
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim)


def engine_shape_for_onnx(dims: tuple[int | None, ...], batch: int | None, height: int | None,
                          width: int | None, origin: str) -> tuple[int, int, int]:
    """(B, H, W) of the engine for an ONNX whose input is ``dims`` (``onnx_input_dims``).

    A static dimension comes from the file; a flag value (not None) that names another value is a
    UserError. A symbolic dimension takes the flag value, else ``DEFAULT_ENGINE_SHAPE``.
    """
    out = []
    for (_, flag, axis), given in zip(_SHAPE_FLAGS, (batch, height, width)):
        fixed = dims[axis]
        if fixed is not None and given is not None and given != fixed:
            shape = tuple(d if d is not None else "?" for d in dims)
            raise UserError(f"{origin} is static {shape}, but {flag} is {given}; leave {flag} out (the "
                            f"file's {fixed} is used) or export the ONNX again at that size")
        out.append(fixed if fixed is not None else (given if given is not None else DEFAULT_ENGINE_SHAPE[axis]))
    return out[0], out[1], out[2]

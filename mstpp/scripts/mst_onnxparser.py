"""Build a TensorRT engine of MST++ from its ONNX file with TensorRT's ONNX parser.

FP32 parses the ONNX as is. FP16 first rewrites it to FP16 with FP32 statistics (L2 sums of squares,
LayerNorm, softmax: mstpp/onnx/fp16.py), because TensorRT 11 has no FP16 flag and the network must
say its precision. INT8 first writes an explicit Q/DQ ONNX (Conv only, per-channel weights) with
onnxruntime's static quantizer, calibrated on the calibrator.py images one image at a time (max |x|
by default: the memory of one inference; --calib-method percentile/entropy hold every Conv tensor of
one image, 8.8 GB at 512x482). The rewritten ONNX files are kept beside the plan (<plan>.fp16.onnx /
<plan>.int8.onnx) so they can be inspected or fed to trtexec.
The 2022 MST++ TensorRT project's command lines run as they are (see the examples).

Examples:
  python torch2onnx.py && python mst_onnxparser.py --mode FP16
  python torch2onnx.py --dynamic --onnx_path model/mstpp_dynamic.onnx && python mst_onnxparser.py --onnx_path model/mstpp_dynamic.onnx --dynamic --max-shape 4x1024x1024
  python mst_onnxparser.py --mode INT8 --plan_path build/parser_int8.plan
  python mst_onnxparser.py --batch_size=1 --mode=INT8 --calibration_table_path=./model/mst_calibration_onnxparser_b1.cache  --onnx_path=./model/mst_plus_plus_b1.onnx --plan_path=./model/mst_plus_plus_onnxparser_b1_int8.plan
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mstpp.cli import CliParser, run_cli
from mstpp.errors import UserError
from mstpp.onnx.quantize import CALIBRATION_METHOD, CALIBRATION_METHODS
from mstpp.trt.cli_args import add_calibration_table_arg, add_engine_args, shape_flags_follow_onnx

def build_parser() -> CliParser:
    p = CliParser(__doc__)
    p.add_argument("--onnx_path", "--onnx-path", type=Path, default=Path("model") / "mstpp.onnx",
                   help="FP32 MST++ ONNX from torch2onnx.py (default model/mstpp.onnx)")
    add_engine_args(p, "build/mstpp_parser_fp32.plan")
    shape_flags_follow_onnx(p)
    p.add_argument("--calib-method", choices=CALIBRATION_METHODS, default=CALIBRATION_METHOD,
                   help="INT8 activation ranges: max |x|, percentile 99.99 or entropy")
    p.add_argument("--calib-images", nargs="*", default=(),
                   help="INT8 calibration images or folders (default data/samples + 4 synthetic scenes)")
    calibration = p.add_mutually_exclusive_group()
    calibration.add_argument("--calib-cache", type=Path, default=None, metavar="PATH",
                             help="INT8: an existing file of onnxruntime calibration ranges, e.g. written by an "
                                  "earlier --calibration_table_path build (default: calibrate now)")
    add_calibration_table_arg(calibration, "onnxruntime's tensor ranges (JSON)")
    return p


def prepare_onnx(onnx_path: Path, mode: str, plan_path: Path, calib_images: Sequence[str] = (),
                 calib_method: str = CALIBRATION_METHOD, ranges_cache: Path | None = None) -> Path:
    """The ONNX to parse for ``mode`` (FP32/FP16/INT8): ``onnx_path`` itself, or its FP16 / Q/DQ INT8
    rewrite written beside ``plan_path``. INT8 reads calibration ranges from ``ranges_cache`` when that
    file exists, else calibrates (and writes them there when a path is given)."""
    from mstpp.onnx.check import check_mstpp_onnx

    check_mstpp_onnx(onnx_path)
    if mode == "FP32":
        return onnx_path
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "FP16":
        from mstpp.onnx.fp16 import convert_to_fp16

        out = convert_to_fp16(onnx_path, Path(f"{plan_path}.fp16.onnx"))
    elif ranges_cache is not None and ranges_cache.is_file():
        from mstpp.onnx.quantize import quantize_onnx

        out = quantize_onnx(onnx_path, Path(f"{plan_path}.int8.onnx"), [], calib_method, ranges_cache)
        print(f"calibration ranges reused from {ranges_cache}")
    else:
        from mstpp.calibration import calibration_images
        from mstpp.onnx.quantize import quantize_onnx

        images = calibration_images(calib_images)
        if ranges_cache is not None:
            ranges_cache.parent.mkdir(parents=True, exist_ok=True)
        out = quantize_onnx(onnx_path, Path(f"{plan_path}.int8.onnx"), images, calib_method, ranges_cache,
                            progress=True)
        print(f"calibrated on {len(images)} images ({calib_method})"
              + (f"; ranges saved to {ranges_cache}" if ranges_cache is not None else ""))
    print(f"wrote {out}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from mstpp.trt.cli_args import build_settings
    from mstpp.trt.engines import build_parser_engine
    from mstpp.trt.version import detect

    if args.calib_cache is not None and not args.calib_cache.is_file():
        raise UserError(f"calibration cache not found: {args.calib_cache}")
    from mstpp.onnx.check import check_mstpp_onnx
    from mstpp.trt.cli_args import engine_shape_for_onnx, onnx_input_dims

    dims = onnx_input_dims(check_mstpp_onnx(args.onnx_path))  # a static ONNX decides the engine shape
    args.batch_size, args.height, args.width = engine_shape_for_onnx(dims, args.batch_size, args.height,
                                                                     args.width, str(args.onnx_path))
    info = detect(None if args.trt == "auto" else args.trt)
    print(f"using {info.summary}")
    onnx_file = prepare_onnx(args.onnx_path, args.mode, args.plan_path, args.calib_images, args.calib_method,
                             args.calib_cache or args.calibration_table_path)
    notes = {"onnx": str(onnx_file)}
    if args.mode == "INT8":  # the build record names how the ranges were calibrated
        from mstpp.onnx.quantize import describe_quantization

        notes["quantization"] = describe_quantization(args.calib_method)
    settings = build_settings(args, "parser", **notes)
    plan = build_parser_engine(info, onnx_file, settings, args.plan_path, verbose=args.verbose)
    print(f"wrote {plan} ({plan.stat().st_size / 1e6:.1f} MB) and {plan.name}.json")
    return 0

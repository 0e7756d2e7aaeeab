#!/usr/bin/env python3
"""Build a TensorRT engine of MST++ from its ONNX file with TensorRT's ONNX parser.

FP32 parses the ONNX as is. FP16 first rewrites it to FP16 with FP32 statistics (L2 sums of squares,
LayerNorm, softmax: mstpp/onnx/fp16.py), because TensorRT 11 has no FP16 flag and the network must
say its precision. INT8 first writes an explicit Q/DQ ONNX (Conv only, per-channel weights) with
onnxruntime's static quantizer, calibrated on the calibrator.py images one image at a time (max |x|
by default: the memory of one inference; --calib-method percentile/entropy hold every Conv tensor of
one image, 8.8 GB at 512x482). The rewritten ONNX files are kept beside the plan (<plan>.fp16.onnx /
<plan>.int8.onnx) so they can be inspected or fed to trtexec.

Examples:
  python torch2onnx.py && python mst_onnxparser.py --mode FP16
  python mst_onnxparser.py --onnx_path build/mstpp_dynamic.onnx --dynamic --max-shape 4x1024x1024
  python mst_onnxparser.py --mode INT8 --plan_path build/parser_int8.plan
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mstpp.cli import run_cli
from mstpp.onnx.quantize import CALIBRATION_METHOD, CALIBRATION_METHODS
from mstpp.trt.cli_args import add_engine_args, shape_flags_follow_onnx


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx_path", "--onnx-path", type=Path, default=Path("model") / "mstpp.onnx",
                   help="FP32 MST++ ONNX from torch2onnx.py (default model/mstpp.onnx)")
    add_engine_args(p, "build/mstpp_parser_fp32.plan")
    shape_flags_follow_onnx(p)
    p.add_argument("--calib-method", choices=CALIBRATION_METHODS, default=CALIBRATION_METHOD,
                   help="INT8 activation ranges: max |x|, percentile 99.99 or entropy (default %(default)s)")
    p.add_argument("--calib-images", nargs="*", default=(),
                   help="INT8 calibration images or folders (default data/samples + 4 synthetic scenes)")
    return p.parse_args(argv)


def prepare_onnx(args: argparse.Namespace) -> Path:
    """The ONNX to parse for ``args.mode``: the input, or its FP16 / Q/DQ INT8 rewrite."""
    from mstpp.onnx.check import check_mstpp_onnx
    from mstpp.trt.cli_args import engine_shape_for_onnx, onnx_input_dims

    dims = onnx_input_dims(check_mstpp_onnx(args.onnx_path))  # a static ONNX decides the engine shape
    args.batch_size, args.height, args.width = engine_shape_for_onnx(dims, args.batch_size, args.height,
                                                                     args.width, str(args.onnx_path))
    if args.mode == "FP32":
        return args.onnx_path
    args.plan_path.parent.mkdir(parents=True, exist_ok=True)
    if args.mode == "FP16":
        from mstpp.onnx.fp16 import convert_to_fp16

        out = convert_to_fp16(args.onnx_path, Path(f"{args.plan_path}.fp16.onnx"))
    else:
        from mstpp.calibration import calibration_images
        from mstpp.onnx.quantize import quantize_onnx

        images = calibration_images(args.calib_images)
        out = quantize_onnx(args.onnx_path, Path(f"{args.plan_path}.int8.onnx"), images, args.calib_method,
                            progress=True)
        print(f"calibrated on {len(images)} images ({args.calib_method})")
    print(f"wrote {out}")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    from mstpp.trt.cli_args import build_settings
    from mstpp.trt.engines import build_parser_engine
    from mstpp.trt.version import detect

    info = detect(None if args.trt == "auto" else args.trt)
    print(f"using {info.summary}")
    onnx_file = prepare_onnx(args)
    notes = {"onnx": str(onnx_file)}
    if args.mode == "INT8":  # the build record names how the ranges were calibrated
        from mstpp.onnx.quantize import describe_quantization

        notes["quantization"] = describe_quantization(args.calib_method)
    settings = build_settings(args, "parser", **notes)
    plan = build_parser_engine(info, onnx_file, settings, args.plan_path, verbose=args.verbose)
    print(f"wrote {plan} ({plan.stat().st_size / 1e6:.1f} MB) and {plan.name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

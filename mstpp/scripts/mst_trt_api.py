"""Build a TensorRT engine of MST++ written layer by layer with the network API (no ONNX).

Weights come from an .npz keyed by state-dict names (get_weights.py) or any checkpoint --weights
accepts. The network is strongly typed: FP16 keeps the L2 sums of squares, LayerNorm statistics and
softmax in FP32; INT8 adds Q/DQ to every convolution (ranges from calibrator.py, or calibrated during
the build). With --plugins ours, our CUDA plugins (MstLayerNorm, MstL2Norm, MstGelu) replace the
native layers; with --plugins fused, each MSAB attention half (S-MSA with its residual add) is one
MstMsa plugin layer and each feed-forward half (LayerNorm, FFN, residual add) one MstFfn plugin layer
(FP32/FP16 only).

Works with TensorRT 10.x/11.x and TensorRT-RTX (which builds on a machine without GPU, but has no
plugin layers). The 2022 MST++ TensorRT project's command lines run as they are (see the examples).

Examples:
  python mst_trt_api.py --mode FP16                      # shipped weights -> build/mstpp_api_fp32.plan
  python mst_trt_api.py --batch_size=1 --mode=FP32 --plan_path=./model/mst_plus_plus_b1.plan --weight_path=./model/mst_plus_plus_weights_b1.npz
  python mst_trt_api.py --mode=INT8 --calibration_table_path=./model/mst_calibration_b1.cache --plan_path=./model/mst_plus_plus_b1_int8.plan
  python calibrator.py && python mst_trt_api.py --mode INT8 --calib-cache build/calib.json --plan_path build/api_int8.plan
  python mst_trt_api.py --mode FP16 --dynamic --max-shape 4x1024x1024
  python mst_trt_api.py --mode FP16 --plugins fused      # full TensorRT and the plugin library (make -C plugins)
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mstpp.cli import CliParser, run_cli
from mstpp.errors import UserError
from mstpp.trt.cli_args import add_calibration_table_arg, add_engine_args
from mstpp.trt.plugins import DEFAULT_PLUGIN_LIB


def build_parser() -> CliParser:
    p = CliParser(__doc__)
    p.add_argument("--weight_path", "--weight-path", "--weights", dest="weights", default=None, metavar="PATH",
                   help="weights (.npz from get_weights.py, or a checkpoint; default: the shipped weights, else a "
                        "seeded random initialisation)")
    add_engine_args(p, "build/mstpp_api_fp32.plan")
    calibration = p.add_mutually_exclusive_group()
    calibration.add_argument("--calib-cache", type=Path, default=None, metavar="PATH",
                             help="INT8: an existing calibration cache from calibrator.py (default: <plan>.calib.json, "
                                  "reused when present, else calibrated now on data/samples and synthetic scenes)")
    add_calibration_table_arg(calibration, "calibrator.py's format")
    p.add_argument("--plugins", choices=("none", "ours", "fused"), default="none",
                   help="none: native TensorRT layers; ours: our CUDA plugins for LayerNorm/L2Norm/GELU; "
                        "fused: one MstMsa plugin per attention block (S-MSA+residual) and one MstFfn plugin "
                        "per feed-forward block (LayerNorm+FFN+residual), native layers elsewhere (FP32/FP16, "
                        "not INT8). Plugins need full TensorRT, not TensorRT-RTX (default none)")
    p.add_argument("--plugin-lib", type=Path, default=DEFAULT_PLUGIN_LIB,
                   help="plugin library for --plugins ours/fused (default plugins/build/libmstpp_plugins.so)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from mstpp.trt.cli_args import build_settings
    from mstpp.trt.engines import build_api_engine
    from mstpp.trt.int8 import calibration_table
    from mstpp.trt.plugins import load_plugin_library
    from mstpp.trt.version import detect
    from mstpp.weights import resolve_weights

    if args.plugins == "fused" and args.mode == "INT8":
        raise UserError("--plugins fused is not available with --mode INT8 (the MstMsa and MstFfn plugins have "
                        "no INT8 path); use --plugins none or ours for INT8, or FP16/FP32 with fused")
    info = detect(None if args.trt == "auto" else args.trt)
    print(f"using {info.summary}")
    state, source = resolve_weights(args.weights)
    print(source.description)
    if args.plugins != "none":
        load_plugin_library(info, args.plugin_lib)
    weights = {k: v.numpy() for k, v in state.items()}
    amax = None
    if args.mode == "INT8":  # --calib-cache must exist; --calibration_table_path is reused or written
        cache = args.calib_cache or args.calibration_table_path or Path(f"{args.plan_path}.calib.json")
        if cache.is_file():
            print(f"calibration cache: {cache}")
        amax = calibration_table(state, weights, cache, must_exist=args.calib_cache is not None)
    settings = build_settings(args, "api", weights=source.description)
    settings.plugins = args.plugins
    plan = build_api_engine(info, weights, settings, args.plan_path, amax, verbose=args.verbose)
    print(f"wrote {plan} ({plan.stat().st_size / 1e6:.1f} MB) and {plan.name}.json")
    return 0

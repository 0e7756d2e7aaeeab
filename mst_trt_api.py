#!/usr/bin/env python3
"""Build a TensorRT engine of MST++ written layer by layer with the network API (no ONNX).

Weights come from an .npz keyed by state-dict names (get_weights.py) or any checkpoint --weights
accepts. The network is strongly typed: FP16 keeps the L2 sums of squares, LayerNorm statistics and
softmax in FP32; INT8 adds Q/DQ to every convolution (ranges from calibrator.py). With
--plugins ours, our CUDA plugins (MstLayerNorm, MstL2Norm, MstGelu) replace the native layers; with
--plugins fused, each MSAB attention half (S-MSA with its residual add) is one MstMsa plugin layer and
each feed-forward half (LayerNorm, FFN, residual add) one MstFfn plugin layer (FP32/FP16 only).

Examples:
  python mst_trt_api.py --weight_path model/mstpp_weights.npz --mode FP16
  python mst_trt_api.py --mode INT8 --calib-cache build/calib.json --plan_path build/api_int8.plan
  python mst_trt_api.py --mode FP16 --dynamic --max-shape 4x1024x1024
  python mst_trt_api.py --mode FP16 --plugins ours --plugin-lib plugins/build/libmstpp_plugins.so
  python mst_trt_api.py --mode FP16 --plugins fused

Works with TensorRT 10.x/11.x and TensorRT-RTX (which builds on a machine without GPU, but has no
plugin layers).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mstpp.cli import run_cli
from mstpp.errors import UserError
from mstpp.trt.cli_args import add_engine_args
from mstpp.trt.plugins import DEFAULT_PLUGIN_LIB



def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weight_path", "--weight-path", "--weights", dest="weights", default=None,
                   help="weights (.npz from get_weights.py, or a checkpoint; default: the default weights)")
    add_engine_args(p, "build/mstpp_api_fp32.plan")
    p.add_argument("--plugins", choices=("none", "ours", "fused"), default="none",
                   help="none: native TensorRT layers; ours: our CUDA plugins for LayerNorm/L2Norm/GELU; "
                        "fused: one MstMsa plugin per attention block (S-MSA+residual) and one MstFfn plugin "
                        "per feed-forward block (LayerNorm+FFN+residual), native layers elsewhere (FP32/FP16, "
                        "not INT8). Plugins need full TensorRT, not TensorRT-RTX")
    p.add_argument("--plugin-lib", type=Path, default=DEFAULT_PLUGIN_LIB,
                   help="plugin library for --plugins ours/fused (default plugins/build/libmstpp_plugins.so)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mstpp.trt.cli_args import build_settings
    from mstpp.trt.engines import build_api_engine
    from mstpp.trt.int8 import activation_ranges
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
    if args.mode == "INT8":  # --calib-cache must exist; without it, calibrate now and save beside the plan
        amax = activation_ranges(state, weights, args.calib_cache,
                                 None if args.calib_cache else Path(f"{args.plan_path}.calib.json"))
    settings = build_settings(args, "api", weights=source.description)
    settings.plugins = args.plugins
    plan = build_api_engine(info, weights, settings, args.plan_path, amax, verbose=args.verbose)
    print(f"wrote {plan} ({plan.stat().st_size / 1e6:.1f} MB) and {plan.name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

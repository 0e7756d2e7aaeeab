#!/usr/bin/env python3
"""Write MST++ weights to an .npz keyed by state-dict names (e.g. body.0.embedding.weight).

The source may be an official training checkpoint, a bare state dict, an .npz, or an ONNX file
exported by torch2onnx.py (its weight map names every initializer). The .npz feeds the TensorRT
network-API builder (mst_trt_api.py --weight_path).

Examples:
  python get_weights.py --model_path MST_plus_plus.pth --weight_path model/mstpp_weights.npz
  python get_weights.py --model_path model/mstpp.onnx
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mstpp.cli import run_cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", "--model-path", default=None,
                   help="checkpoint (.pth/.pt), .npz or ONNX file (default: the default weights)")
    p.add_argument("--weight_path", "--weight-path", type=Path, default=Path("model") / "mstpp_weights.npz",
                   help="output .npz (default model/mstpp_weights.npz)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mstpp.weights import resolve_weights, save_npz

    state, source = resolve_weights(args.model_path)
    print(source.description)
    out = save_npz(state, args.weight_path)
    n = sum(v.numel() for v in state.values())
    print(f"wrote {out}: {len(state)} tensors, {n:,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

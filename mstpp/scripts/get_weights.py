"""Write MST++ weights to an .npz keyed by state-dict names (e.g. body.0.embedding.weight).

The source may be an official training checkpoint, a bare state dict, an .npz, or an ONNX file
exported by torch2onnx.py (its weight map names every initializer). The .npz feeds the TensorRT
network-API builder (mst_trt_api.py --weight_path).

Examples:
  python get_weights.py                                  # shipped weights -> model/mstpp_weights.npz
  python get_weights.py --model_path model/mstpp_synthetic.pth --weight_path build/mstpp_weights.npz
  python get_weights.py --model_path=./model/mst_plus_plus_b1.onnx --weight_path=./model/mst_plus_plus_weights_b1.npz
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mstpp.cli import CliParser, run_cli


def build_parser() -> CliParser:
    p = CliParser(__doc__)
    p.add_argument("--model_path", "--model-path", default=None,
                   help="checkpoint (.pth/.pt), .npz or ONNX file (default: the shipped weights, else a seeded "
                        "random initialisation)")
    p.add_argument("--weight_path", "--weight-path", type=Path, default=Path("model") / "mstpp_weights.npz",
                   help="output .npz (default model/mstpp_weights.npz)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from mstpp.weights import resolve_weights, save_npz

    state, source = resolve_weights(args.model_path)
    print(source.description)
    out = save_npz(state, args.weight_path)
    n = sum(v.numel() for v in state.values())
    print(f"wrote {out}: {len(state)} tensors, {n:,} parameters")
    return 0

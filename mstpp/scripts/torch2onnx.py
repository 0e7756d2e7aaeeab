"""Export MST++ to ONNX, check it, simplify it, and verify it against PyTorch with onnxruntime.

Writes <onnx_path> (simplified unless --simplifier none) and prints node counts by op type before
and after simplification, and the max abs / rel error of onnxruntime (CPU) against PyTorch.
A bare --simplifier (as in the 2022 MST++ TensorRT project) means the default simplifier.

Examples:
  python torch2onnx.py                                   # 1x3x512x482, opset 17, onnxslim
  python torch2onnx.py --batch_size=1 --onnx_path=./model/mst_plus_plus_b1.onnx --simplifier
  python torch2onnx.py --dynamic --onnx_path model/mstpp_dynamic.onnx
  python torch2onnx.py --weights model/mstpp_synthetic.pth --batch_size 4 --simplifier none
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from mstpp.cli import CliParser, add_shape_args, add_weights_arg, positive_int, run_cli
from mstpp.errors import UserError
from mstpp.onnx.rewrite import DEFAULT_L2_FORM, L2_FORMS

DEFAULT_ONNX = Path("model") / "mstpp.onnx"
SIMPLIFIERS = ("onnxslim", "onnxsim", "none")
DEFAULT_SIMPLIFIER = "onnxslim"


def build_parser() -> CliParser:
    p = CliParser(__doc__)
    p.add_argument("--onnx_path", "--onnx-path", type=Path, default=DEFAULT_ONNX,
                   help=f"output ONNX file (default {DEFAULT_ONNX})")
    add_shape_args(p)
    add_weights_arg(p)
    p.add_argument("--dynamic", action="store_true",
                   help="symbolic batch, height and width (any size; TensorRT then needs a shape profile)")
    p.add_argument("--opset", type=positive_int, default=17,
                   help="ONNX opset (default 17: the first with native LayerNormalization)")
    p.add_argument("--exporter", choices=("auto", "torchscript", "dynamo"), default="auto",
                   help="torch exporter (auto: torchscript for opset 17, dynamo for 18 and later)")
    p.add_argument("--simplifier", nargs="?", choices=SIMPLIFIERS, default=DEFAULT_SIMPLIFIER,
                   const=DEFAULT_SIMPLIFIER,
                   help=f"graph simplifier: {', '.join(SIMPLIFIERS)}; a bare --simplifier means the default "
                        f"(default {DEFAULT_SIMPLIFIER}: pure Python, keeps opset and dynamic dims)")
    p.add_argument("--l2-form", choices=L2_FORMS, default=DEFAULT_L2_FORM,
                   help="how the q/k L2 norms are written (default %(default)s; see mstpp/onnx/rewrite.py: "
                        "runtimes differ a lot, e.g. ONNX Runtime's CUDA EP is slow on ReduceL2)")
    p.add_argument("--verify-size", type=positive_int, nargs=2, metavar=("H", "W"), default=None,
                   help="with --dynamic: spatial size of the onnxruntime check (default 64 60, which also "
                        "exercises the padding); a static export is checked at its own size")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime comparison")
    return p


def _print_counts(title: str, counts) -> None:
    total = sum(counts.values())
    body = ", ".join(f"{op} {n}" for op, n in counts.most_common())
    print(f"{title}: {total} nodes ({body})")


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


def export_shape_text(batch: int, height: int, width: int, dynamic: bool) -> str:
    """How the export's input shape is shown, e.g. ``1x3x512x482`` or ``Bx3xHxW dynamic``."""
    return "Bx3xHxW dynamic" if dynamic else f"{batch}x3x{height}x{width}"


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.verify_size and not args.dynamic:
        raise UserError("--verify-size needs --dynamic: a static ONNX only accepts its export size")
    from mstpp.input_size import MIN_INPUT_SIZE, check_input_size
    check_input_size(args.height, args.width, "--height/--width")
    if args.verify_size:
        check_input_size(*args.verify_size, "--verify-size")
    import onnx
    import torch

    from mstpp.onnx.check import check_mstpp_onnx, compare_with_torch
    from mstpp.onnx.export import export_onnx, op_counts
    from mstpp.onnx.rewrite import rewrite_l2_norms
    from mstpp.onnx.simplify import simplify
    from mstpp.weights import load_model

    model, source = load_model(args.weights)
    print(source.description)
    out = args.onnx_path
    raw = out.with_name(out.stem + ".raw.onnx") if args.simplifier != "none" else out
    shape = export_shape_text(args.batch_size, args.height, args.width, args.dynamic)
    print(f"exporting MST++ {shape}, opset {args.opset} -> {raw}")
    export_onnx(model, raw, args.batch_size, args.height, args.width, args.dynamic, args.opset, args.exporter)
    onnx.checker.check_model(str(raw), full_check=True)
    _print_counts("exported", op_counts(onnx.load(str(raw))))
    if args.simplifier != "none":
        simplify(raw, out, args.simplifier)
        onnx.checker.check_model(str(out), full_check=True)
        _print_counts(f"{args.simplifier}", op_counts(onnx.load(str(out))))
        raw.unlink()
    if args.l2_form != "reducel2":
        proto = onnx.load(str(out))
        n = rewrite_l2_norms(proto, args.l2_form)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(out))
        print(f"rewrote {n} ReduceL2 nodes as {args.l2_form}")
    check_mstpp_onnx(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    if args.dynamic:
        print(f"dynamic ONNX: any batch, H and W >= {MIN_INPUT_SIZE} (stated in its metadata and doc string)")
    if not args.no_verify:
        if args.verify_size:
            h, w = args.verify_size
        elif args.dynamic:
            h, w = 64, 60
        else:
            h, w = args.height, args.width
        b = 2 if args.dynamic else args.batch_size
        x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(0))
        res = compare_with_torch(out, model, x)
        print(f"onnxruntime vs PyTorch on {b}x3x{h}x{w}: max abs err {res['max_abs']:.3e}, "
              f"max rel err {res['max_rel']:.3e} (relative to max |output| {res['ref_max']:.3g})")
        if not res["max_abs"] < 1e-3:
            print("error: onnxruntime disagrees with PyTorch beyond 1e-3", file=sys.stderr)
            return 1
    return 0

#!/usr/bin/env python
"""Evaluate MST++ weights on held-out synthetic scenes; write a JSON report and the model-card section.

    python evaluate_weights.py --weights model/mstpp_synthetic.pth --device cuda \
        --arad /path/to/ARAD_1K_0912.jpg            # optional real-image back-projection check

Outputs: ``--json`` (default model/eval_synthetic.json) and the "Synthetic training and evaluation"
section of ``--card`` (default model/MODEL_CARD.md; other sections of the card are kept).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent


class ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise ArgError(message)


def main(argv: list[str] | None = None) -> int:
    p = _Parser(description="Evaluate MST++ weights on held-out synthetic scenes.")
    p.add_argument("--weights", default=str(REPO / "model" / "mstpp_synthetic.pth"))
    p.add_argument("--device", default="auto")
    p.add_argument("--n-scenes", type=int, default=50)
    p.add_argument("--arad", default=None, help="a real ARAD_1K RGB image for the back-projection check")
    p.add_argument("--baseline-batches", type=int, default=8, help="batches of 8 training scenes for the baselines")
    p.add_argument("--amp", choices=("none", "bf16"), default="none")
    p.add_argument("--json", default=str(REPO / "model" / "eval_synthetic.json"))
    p.add_argument("--card", default=str(REPO / "model" / "MODEL_CARD.md"))
    p.add_argument("--train-log", default=None, help="training log JSON (default: <weights>.train.json)")
    try:
        args = p.parse_args(argv)
        if not 1 <= args.n_scenes <= 1000:
            raise ArgError("--n-scenes must be in 1..1000")
        if args.baseline_batches < 1:
            raise ArgError("--baseline-batches must be >= 1")
        if args.arad is not None and not Path(args.arad).is_file():
            raise ArgError(f"--arad: no such file {args.arad}")
        import torch

        from train import resolve_device, ArgError as TrainArgError
        try:
            device = resolve_device(args.device)
        except TrainArgError as exc:
            raise ArgError(str(exc)) from None
        from mstpp.errors import UserError
        from mstpp.weights import load_model
        try:
            model, source = load_model(args.weights, device)
        except UserError as exc:
            raise ArgError(str(exc)) from None
    except ArgError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from mstpp.synth.evaluate import card_section, evaluate, save_json, write_card

    result = evaluate(model, device, args.n_scenes, args.arad, args.baseline_batches, amp=args.amp == "bf16")
    log_path = Path(args.train_log) if args.train_log else Path(args.weights).with_suffix(".train.json")
    train_log = json.loads(log_path.read_text()) if log_path.is_file() else None
    result["weights"] = source.description
    result["train_log"] = {k: v for k, v in (train_log or {}).items() if k != "history"}
    save_json(result, args.json)
    try:
        shown = str(Path(args.weights).resolve().relative_to(REPO))
    except ValueError:
        shown = Path(args.weights).name
    write_card(args.card, card_section(result, train_log, shown))
    m = result["metrics"]
    print("MRAE: " + ", ".join(f"{k} {v['mrae']:.4f}" for k, v in m.items()))
    print(f"wrote {args.json} and {args.card}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())

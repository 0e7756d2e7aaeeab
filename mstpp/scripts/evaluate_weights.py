"""Evaluate MST++ weights on held-out synthetic scenes; write a JSON report and the model-card section.

Outputs: ``--json`` (default model/eval_synthetic.json) and the "Synthetic training and evaluation"
section of ``--card`` (default model/MODEL_CARD.md; other sections of the card are kept).
``--arad`` adds a real-image back-projection check on an ARAD_1K RGB frame.

Examples:
  python evaluate_weights.py --n-scenes 2 --baseline-batches 1 --json outputs/eval.json --card outputs/CARD.md
  python evaluate_weights.py --weights model/mstpp_synthetic.pth --device cuda      # the model card's numbers
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from mstpp.cli import CliParser, add_device_arg, existing_file, run_cli
from mstpp.errors import UserError


def build_parser() -> CliParser:
    p = CliParser(__doc__)
    p.add_argument("--weights", default="model/mstpp_synthetic.pth",
                   help="MST++ weights to evaluate (default model/mstpp_synthetic.pth)")
    add_device_arg(p, default="auto")
    p.add_argument("--n-scenes", type=int, default=50, help="held-out synthetic scenes, 1..1000 (default 50)")
    p.add_argument("--arad", type=existing_file, default=None,
                   help="a real ARAD_1K RGB image for the back-projection check (default: none)")
    p.add_argument("--baseline-batches", type=int, default=8,
                   help="batches of 8 training scenes to fit the per-pixel baselines on (default 8)")
    p.add_argument("--amp", choices=("none", "bf16"), default="none", help="autocast dtype for MST++ (default none)")
    p.add_argument("--json", default="model/eval_synthetic.json",
                   help="JSON report to write (default model/eval_synthetic.json)")
    p.add_argument("--card", default="model/MODEL_CARD.md",
                   help="model card whose evaluation section is rewritten (default model/MODEL_CARD.md)")
    p.add_argument("--train-log", default=None, help="training log JSON (default: <weights>.train.json)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.n_scenes <= 1000:
        raise UserError("--n-scenes must be in 1..1000")
    if args.baseline_batches < 1:
        raise UserError("--baseline-batches must be >= 1")
    import torch

    from mstpp.devices import resolve_device
    from mstpp.synth.evaluate import card_section, evaluate, save_json, write_card
    from mstpp.weights import load_model

    device = torch.device(resolve_device(args.device))
    model, source = load_model(args.weights, device)
    arad = None if args.arad is None else str(args.arad)
    result = evaluate(model, device, args.n_scenes, arad, args.baseline_batches, amp=args.amp == "bf16")
    log_path = Path(args.train_log) if args.train_log else Path(args.weights).with_suffix(".train.json")
    train_log = json.loads(log_path.read_text()) if log_path.is_file() else None
    result["weights"] = source.description
    result["train_log"] = {k: v for k, v in (train_log or {}).items() if k != "history"}
    save_json(result, args.json)
    write_card(args.card, card_section(result, train_log, _shown_path(Path(args.weights))))
    m = result["metrics"]
    print("MRAE: " + ", ".join(f"{k} {v['mrae']:.4f}" for k, v in m.items()))
    print(f"wrote {args.json} and {args.card}")
    return 0


def _shown_path(path: Path) -> str:
    # The card is committed: name the weights relative to the working folder, never by an absolute path.
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.name

"""Train MST++ on synthetic NTIRE-2022-style data generated on the fly (``mstpp.synth``).

Recipe (MST++ paper/official code): Adam (betas 0.9, 0.999), lr 4e-4 with cosine decay to 1e-6,
MRAE loss, 128 x 128 patches with random flips and 90-degree rotations. The MRAE denominator gets
``+1e-3`` (``LOSS_EPS``) because synthetic labels can be ~0 in dark pixels / dark illuminant bands.
The loop itself is ``mstpp.training``.

Weights are always written in fp32 (AMP only changes the compute dtype), in the official checkpoint
layout via ``mstpp.weights.save_checkpoint``. The optimizer state needed for ``--resume`` goes to a
separate state file under ``outputs/`` (git-ignored) so the committed checkpoint stays small.

Examples:
  python train.py --device cpu --patch 32 --iters 3 --batch-size 2 --val-scenes 1 --val-crop 64 --out outputs/smoke.pth
  python train.py --minutes 18 --device cuda --amp bf16 --compile --prefetch 3        # H100 run
  python train.py --minutes 18 --device cuda --amp bf16 --compile --prefetch 3 --resume   # continue it
  python train.py --init model/mstpp_synthetic.pth --minutes 30 --device cuda --amp bf16 --compile
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from mstpp.cli import CliParser, add_device_arg, run_cli
from mstpp.errors import UserError


def build_parser() -> CliParser:
    from mstpp.synth.evaluate import BORDER
    from mstpp.training import DEFAULT_ITERS, TrainConfig

    d = TrainConfig.__dataclass_fields__  # the defaults live in one place: the config
    p = CliParser(__doc__)
    p.add_argument("--out", default="model/mstpp_synthetic.pth",
                   help="checkpoint path, official layout (default model/mstpp_synthetic.pth)")
    p.add_argument("--state", default=None, help="resume state file (default outputs/<out stem>.state.pt)")
    p.add_argument("--resume", action="store_true", help="continue from --state")
    p.add_argument("--init", default=None,
                   help="start from these weights (any checkpoint get_weights.py reads) with a fresh optimizer "
                        "and schedule, e.g. to continue training on a machine without the resume state "
                        "(default: a fresh random initialisation)")
    p.add_argument("--iters", type=int, default=None,
                   help=f"iterations = cosine length (default {DEFAULT_ITERS}; with --resume: the stored length)")
    p.add_argument("--minutes", type=float, default=0.0, help="time budget; fits the cosine to it (0 = none)")
    p.add_argument("--session-minutes", type=float, default=0.0,
                   help="stop this run after N minutes, saving weights and resume state, without changing the "
                        "schedule; continue with --resume (for machines that limit one command's time; 0 = none)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"].default, help="patches per step")
    p.add_argument("--patch", type=int, default=d["patch"].default, help="training patch size (multiple of 8)")
    p.add_argument("--scene-size", type=int, default=0, help="scene size patches are cut from (0 = 2 x patch)")
    p.add_argument("--lr", type=float, default=d["lr"].default, help="peak learning rate of the cosine schedule")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation, scenes and augmentation")
    add_device_arg(p, default="auto")
    p.add_argument("--amp", choices=("none", "bf16"), default="none",
                   help="autocast dtype for compute (bf16 is ignored on the CPU)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training step's model (CUDA; compiles once per run, ~1 min; "
                        "validation and saving use the plain module)")
    p.add_argument("--val-every", type=int, default=d["val_every"].default,
                   help="validate every N iterations (0 = only at end)")
    p.add_argument("--val-scenes", type=int, default=d["val_scenes"].default,
                   help="held-out eval scenes used for validation, 0..50")
    p.add_argument("--val-crop", type=int, default=0,
                   help="run validation on this centre crop of each scene (0 = the whole 482x512 scene, scored "
                        f"like the evaluation on its centre after cropping {BORDER} px per border)")
    p.add_argument("--prefetch", type=int, default=1,
                   help="batches built ahead in background threads, 1..16 (raise it if the GPU waits for data)")
    p.add_argument("--patches-per-scene", type=int, default=1,
                   help="patches cut from each rendered scene: K cuts scene building per batch K-fold (the generator "
                        "limits training speed on a GPU), at the cost of K patches sharing a layout and illuminant")
    p.add_argument("--save-every", type=int, default=d["save_every"].default,
                   help="save weights and resume state every N iterations")
    p.add_argument("--photos", default="", help="comma-separated subset of training photos (tests; default: all)")
    p.add_argument("--no-progress", action="store_true", help="disable the tqdm bar")
    return p


def parse_args(argv: Sequence[str] | None):
    """The checked training configuration (``mstpp.training.TrainConfig``) of a command line."""
    import torch

    from mstpp.devices import resolve_device
    from mstpp.synth.photos import TRAIN_PHOTOS
    from mstpp.training import TrainConfig

    args = build_parser().parse_args(argv)
    checks = [
        (args.iters is None or args.iters >= 1, "--iters must be >= 1"),
        (args.batch_size >= 1, "--batch-size must be >= 1"),
        (1 <= args.prefetch <= 16, "--prefetch must be in 1..16"),
        (1 <= args.patches_per_scene <= args.batch_size, f"--patches-per-scene must be in 1..{args.batch_size} (the batch size)"),
        (args.patch >= 16 and args.patch % 8 == 0, "--patch must be a multiple of 8, >= 16"),
        (args.scene_size == 0 or args.scene_size >= args.patch, "--scene-size must be 0 or >= --patch"),
        (args.minutes >= 0 and math.isfinite(args.minutes), "--minutes must be >= 0"),
        (args.session_minutes >= 0 and math.isfinite(args.session_minutes), "--session-minutes must be >= 0"),
        (args.lr > 0, "--lr must be > 0"),
        (args.val_every >= 0 and args.save_every >= 1, "--val-every must be >= 0 and --save-every >= 1"),
        (0 <= args.val_scenes <= 50, "--val-scenes must be in 0..50"),
        (args.val_crop == 0 or (args.val_crop >= 16 and args.val_crop % 8 == 0), "--val-crop must be 0 or a multiple of 8 >= 16"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)
    args.photos = tuple(n for n in args.photos.split(",") if n) or None
    bad = [n for n in args.photos or () if n not in TRAIN_PHOTOS]
    if bad:
        raise UserError(f"--photos: {bad[0]!r} is not a training photo ({', '.join(TRAIN_PHOTOS)})")
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise UserError(f"--out {out} is a directory")
    args.out = out
    args.state = Path(args.state) if args.state else Path("outputs") / f"{out.stem}.state.pt"
    if args.resume and not args.state.is_file():
        raise UserError(f"--resume: no state file at {args.state}")
    if args.init and args.resume:
        raise UserError("--init and --resume exclude each other (--resume restores the weights it saved)")
    if args.init and not Path(args.init).is_file():
        raise UserError(f"--init: no file at {args.init}")
    args.device = torch.device(resolve_device(args.device))
    if args.compile and args.device.type != "cuda":
        raise UserError("--compile needs a CUDA device (CPU training is for smoke tests)")
    if args.amp == "bf16" and args.device.type == "cpu":
        args.amp = "none"  # CPU bf16 autocast is slow; nothing to gain
    return TrainConfig(**vars(args))


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


def _run(argv: Sequence[str] | None) -> int:
    config = parse_args(argv)
    from mstpp.training import train

    train(config)
    return 0

#!/usr/bin/env python
"""Train MST++ on synthetic NTIRE-2022-style data generated on the fly (``mstpp.synth``).

Recipe (MST++ paper/official code): Adam (betas 0.9, 0.999), lr 4e-4 with cosine decay to 1e-6,
MRAE loss, 128 x 128 patches with random flips and 90-degree rotations. The MRAE denominator gets
``+1e-3`` (``LOSS_EPS``) because synthetic labels can be ~0 in dark pixels / dark illuminant bands.

Examples:
    # H100 run, writes model/mstpp_synthetic.pth and the resume state outputs/mstpp_synthetic.state.pt:
    python train.py --minutes 18 --device cuda --amp bf16 --compile --prefetch 3
    # continue that run:
    python train.py --minutes 18 --device cuda --amp bf16 --compile --prefetch 3 --resume
    # more training from saved weights, with a fresh schedule:
    python train.py --init model/mstpp_synthetic.pth --minutes 30 --device cuda --amp bf16 --compile
    # smoke test on the CPU:
    python train.py --device cpu --patch 32 --iters 3 --batch-size 2 --val-scenes 1 --val-crop 64 --out /tmp/m.pth

Weights are always written in fp32 (AMP only changes the compute dtype), in the official checkpoint
layout via ``mstpp.weights.save_checkpoint``. The optimizer state needed for ``--resume`` goes to a
separate state file under ``outputs/`` (git-ignored) so the committed checkpoint stays small.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from architecture import MST_Plus_Plus
from mstpp.metrics import crop_border
from mstpp.synth import SyntheticGenerator, eval_scene
from mstpp.synth.evaluate import BORDER
from mstpp.errors import UserError
from mstpp.weights import check_state_dict, read_state_dict, save_checkpoint

LOSS_EPS = 1e-3
DEFAULT_ITERS = 100_000
#: Steps left out of the speed measurement (autotuning, prefetch start) and steps measured after them.
CALIB_SKIP, CALIB_STEPS = 30, 100
LR_MIN = 1e-6
REPO = Path(__file__).resolve().parent


class ArgError(Exception):
    """Bad command-line arguments: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage + message; keep it to one line
        raise ArgError(message)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(description="Train MST++ on synthetic NTIRE-2022-style data.")
    p.add_argument("--out", default="model/mstpp_synthetic.pth", help="checkpoint path (official layout)")
    p.add_argument("--state", default=None, help="resume state file (default outputs/<out stem>.state.pt)")
    p.add_argument("--resume", action="store_true", help="continue from --state")
    p.add_argument("--init", default=None,
                   help="start from these weights (any checkpoint get_weights.py reads) with a fresh optimizer "
                        "and schedule, e.g. to continue training on a machine without the resume state")
    p.add_argument("--iters", type=int, default=None,
                   help="iterations = cosine length (default 100000; with --resume: the stored length)")
    p.add_argument("--minutes", type=float, default=0.0, help="time budget; fits the cosine to it (0 = none)")
    p.add_argument("--session-minutes", type=float, default=0.0,
                   help="stop this run after N minutes, saving weights and resume state, without changing the "
                        "schedule; continue with --resume (for machines that limit one command's time; 0 = none)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patch", type=int, default=128, help="training patch size (multiple of 8)")
    p.add_argument("--scene-size", type=int, default=0, help="scene size patches are cut from (0 = 2 x patch)")
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--amp", choices=("none", "bf16"), default="none", help="autocast dtype for compute")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training step's model (CUDA; compiles once per run, ~1 min; "
                        "validation and saving use the plain module)")
    p.add_argument("--val-every", type=int, default=500, help="validate every N iterations (0 = only at end)")
    p.add_argument("--val-scenes", type=int, default=10, help="held-out eval scenes used for validation")
    p.add_argument("--val-crop", type=int, default=0,
                   help="run validation on this centre crop of each scene (0 = the whole 482x512 scene, scored "
                        f"like the evaluation on its centre after cropping {BORDER} px per border)")
    p.add_argument("--prefetch", type=int, default=1,
                   help="batches built ahead in background threads (raise it if the GPU waits for data)")
    p.add_argument("--patches-per-scene", type=int, default=1,
                   help="patches cut from each rendered scene: K cuts scene building per batch K-fold (the generator "
                        "limits training speed on a GPU), at the cost of K patches sharing a layout and illuminant")
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--photos", default="", help="comma-separated subset of training photos (tests; default all)")
    p.add_argument("--no-progress", action="store_true", help="disable the tqdm bar")
    args = p.parse_args(argv)
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
            raise ArgError(msg)
    from mstpp.synth.photos import TRAIN_PHOTOS
    args.photos = tuple(n for n in args.photos.split(",") if n) or None
    bad = [n for n in args.photos or () if n not in TRAIN_PHOTOS]
    if bad:
        raise ArgError(f"--photos: {bad[0]!r} is not a training photo ({', '.join(TRAIN_PHOTOS)})")
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise ArgError(f"--out {out} is a directory")
    args.state = Path(args.state) if args.state else REPO / "outputs" / f"{out.stem}.state.pt"
    if args.resume and not args.state.is_file():
        raise ArgError(f"--resume: no state file at {args.state}")
    if args.init and args.resume:
        raise ArgError("--init and --resume exclude each other (--resume restores the weights it saved)")
    if args.init and not Path(args.init).is_file():
        raise ArgError(f"--init: no file at {args.init}")
    args.device = resolve_device(args.device)
    if args.compile and args.device.type != "cuda":
        raise ArgError("--compile needs a CUDA device (CPU training is for smoke tests)")
    if args.amp == "bf16" and args.device.type == "cpu":
        args.amp = "none"  # CPU bf16 autocast is slow; nothing to gain
    return args


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ArgError(f"--device {name!r} is not a device name (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ArgError("--device cuda requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ArgError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type not in ("cpu", "cuda"):
        raise ArgError(f"--device {name!r}: only cpu and cuda are supported")
    return dev


def mrae_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """MRAE with +LOSS_EPS in the denominator (fp32)."""
    return ((pred.float() - gt).abs() / (gt + LOSS_EPS)).mean()


def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Same random rot90 / flips for input [B,3,P,P] and target [B,31,P,P], per sample."""
    k = torch.randint(4, (x.shape[0],), generator=gen).tolist()
    fv = torch.rand(x.shape[0], generator=gen).lt(0.5).tolist()
    xs, ys = [], []
    for i in range(x.shape[0]):
        a, b = torch.rot90(x[i], k[i], (1, 2)), torch.rot90(y[i], k[i], (1, 2))
        if fv[i]:
            a, b = a.flip(1), b.flip(1)
        xs.append(a)
        ys.append(b)
    return torch.stack(xs), torch.stack(ys)


def lr_at(step: int, total: int, lr0: float) -> float:
    """Cosine decay from lr0 to LR_MIN over ``total`` steps."""
    t = min(step / max(total, 1), 1.0)
    return LR_MIN + 0.5 * (lr0 - LR_MIN) * (1.0 + math.cos(math.pi * t))


class Prefetcher:
    """Builds the next ``workers`` batches in background threads while the current step trains.

    Torch and OpenCV release the GIL, so a few threads overlap scene building with the step. Batches come
    back in index order whatever the number of workers, so a run is reproducible for a given start index.
    """

    def __init__(self, gen: SyntheticGenerator, batch: int, patch: int, scene: int, start: int,
                 workers: int = 1, patches_per_scene: int = 1) -> None:
        self.gen, self.batch, self.patch, self.scene = gen, batch, patch, scene
        self.per_scene = patches_per_scene
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batches")
        self._pending = deque(self._submit(start + i) for i in range(workers))
        self._next = start + workers

    def _submit(self, index: int) -> Future:
        return self._pool.submit(self.gen.training_batch, index, self.batch, self.patch, self.scene, self.per_scene)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self._pending.popleft().result()  # re-raises a worker's exception here
        self._pending.append(self._submit(self._next))
        self._next += 1
        return batch.inputs, batch.cubes

    def close(self) -> None:
        for f in self._pending:
            f.cancel()
        self._pool.shutdown(wait=True)


@torch.no_grad()
def validate(model: torch.nn.Module, scenes: list[tuple[torch.Tensor, torch.Tensor]], amp: bool,
             border: int = 0) -> float:
    """Mean MRAE over scenes (inputs [1,3,H,W], cubes [1,31,H,W]), scored inside ``border`` px."""
    model.eval()
    vals = []
    for x, y in scenes:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(x)
        pred, y = crop_border(pred.float(), border), crop_border(y, border)
        vals.append(float(mrae_loss(pred, y)))
    model.train()
    return sum(vals) / max(len(vals), 1)


def _centre(t: torch.Tensor, crop: int) -> torch.Tensor:
    if crop <= 0:
        return t
    h, w = t.shape[-2:]
    top, left = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
    return t[..., top:top + crop, left:left + crop]


def _atomic_save_weights(model: torch.nn.Module, path: Path, step: int) -> None:
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    check_state_dict(state)  # fail here rather than ship an unreadable file
    tmp = path.with_name(path.name + ".tmp")
    save_checkpoint(state, tmp, epoch=0, iteration=step)
    os.replace(tmp, path)


def _save_state(path: Path, model, opt, step: int, total: int, elapsed: float, history: list,
                origin: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "total": total,
                "elapsed": elapsed, "history": history, "origin": origin}, tmp)
    os.replace(tmp, path)


def _previous_log(init: str | None) -> dict | None:
    """Summary of the training log next to ``--init`` weights (its own history dropped), if any."""
    if not init:
        return None
    path = Path(init).with_suffix(".train.json")
    if not path.is_file():
        return None
    log = json.loads(path.read_text())
    log.pop("history", None)
    return log


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    dev = args.device
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    use_amp = args.amp == "bf16"
    model = MST_Plus_Plus().to(dev).train()
    if args.init:
        model.load_state_dict(read_state_dict(args.init))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999))
    # The compiled wrapper shares the module's parameters; state_dict() and validation go through the plain
    # module so that checkpoints keep their official key names and other shapes do not trigger recompiles.
    step_model = torch.compile(model) if args.compile else model
    step, total, elapsed_before, history = 0, args.iters or DEFAULT_ITERS, 0.0, []
    # Where the starting weights came from; kept in the resume state so that every later log still says it.
    origin = {"init": args.init, "init_training": _previous_log(args.init)}
    if args.resume:
        st = torch.load(args.state, map_location=dev, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        step, total, elapsed_before, history = st["step"], st["total"], st["elapsed"], st["history"]
        origin = st.get("origin", origin)
        total = max(args.iters or total, step)  # an explicit --iters sets a new schedule length

    t_setup = time.time()
    gen = SyntheticGenerator("train", seed=args.seed, device=dev, photos=args.photos)
    val = []
    for i in range(args.val_scenes):
        s = eval_scene(i)
        val.append((_centre(s.inputs, args.val_crop).to(dev), _centre(s.cubes, args.val_crop).to(dev)))
    setup_s = time.time() - t_setup
    val_border = BORDER if args.val_crop == 0 else 0
    aug_gen = torch.Generator().manual_seed(args.seed * 7919 + step)
    scene = args.scene_size or 2 * args.patch
    fetch = Prefetcher(gen, args.batch_size, args.patch, scene, start=step, workers=args.prefetch,
                       patches_per_scene=args.patches_per_scene)

    budget = args.minutes * 60.0
    calibrated = args.resume or budget <= 0
    start = time.time()
    bar = None
    if not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=step, desc="train", dynamic_ncols=True, file=sys.stderr)
    last_val = float("nan")
    mark: tuple[int, float] | None = None
    loss_ema = None
    stop_reason = "iters"
    while step < total:
        x, y = fetch.next()
        x, y = augment(x, y, aug_gen)
        lr = lr_at(step, total, args.lr)
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            pred = step_model(x)
        loss = mrae_loss(pred, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 10 == 0 or step == total:
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise RuntimeError(f"loss became {lv} at step {step}")
            loss_ema = lv if loss_ema is None else 0.9 * loss_ema + 0.1 * lv
        elapsed = time.time() - start
        if step == CALIB_SKIP:
            mark = (step, elapsed)
        if not calibrated and mark and step >= mark[0] + CALIB_STEPS and elapsed > 20:
            # Fit the cosine schedule to the time budget, 5 % kept for validation and saving. The rate is
            # measured after the first steps: cuDNN autotuning and the prefetcher's start made an
            # H100 run under-estimate its speed 5x when they were included.
            rate = (elapsed - mark[1]) / (step - mark[0])
            remaining = budget * 0.95 - setup_s - elapsed
            total = max(step + 1, min(args.iters or DEFAULT_ITERS, step + int(remaining / rate)))
            calibrated = True
            if bar is not None:
                bar.total = total
                bar.refresh()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss="-" if loss_ema is None else f"{loss_ema:.4f}", lr=f"{lr:.2e}",
                            val="-" if math.isnan(last_val) else f"{last_val:.4f}")
        if args.val_every and step % args.val_every == 0 and val:
            last_val = validate(model, val, use_amp, val_border)
            history.append({"step": step, "val_mrae": last_val, "train_loss": loss_ema})
        if step % args.save_every == 0:
            _atomic_save_weights(model, Path(args.out), step)
            _save_state(args.state, model, opt, step, total, elapsed_before + elapsed, history, origin)
        if budget > 0 and elapsed + setup_s > budget:
            stop_reason = "time budget"
            break
        if args.session_minutes > 0 and elapsed + setup_s > args.session_minutes * 60.0:
            stop_reason = "session limit (continue with --resume)"
            break
    fetch.close()
    if bar is not None:
        bar.close()
    train_s = time.time() - start
    if val:
        last_val = validate(model, val, use_amp, val_border)
        history.append({"step": step, "val_mrae": last_val, "train_loss": loss_ema})
    out = Path(args.out)
    _atomic_save_weights(model, out, step)
    _save_state(args.state, model, opt, step, total, elapsed_before + train_s, history, origin)
    log = {
        "weights": str(out), "steps": step, "planned_steps": total, "stop_reason": stop_reason,
        "train_seconds": round(elapsed_before + train_s, 1), "setup_seconds": round(setup_s, 1),
        "iters_per_second": round(step / max(elapsed_before + train_s, 1e-9), 3),
        "batch_size": args.batch_size, "patch": args.patch, "scene_size": scene,
        "patches_per_scene": args.patches_per_scene, "lr": args.lr,
        "lr_schedule": f"cosine to {LR_MIN}", "optimizer": "Adam(0.9, 0.999)", "loss": f"MRAE, eps {LOSS_EPS}",
        "amp": args.amp, "prefetch": args.prefetch, "compile": args.compile, "seed": args.seed, "device": str(dev),
        **origin,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "final_val_mrae": last_val, "val_scenes": args.val_scenes,
        "val_crop": args.val_crop, "val_border": val_border, "weights_dtype": "float32", "history": history,
    }
    out.with_suffix(".train.json").write_text(json.dumps(log, indent=1) + "\n")
    print(f"saved {out} after {step} steps in {log['train_seconds']:.0f} s "
          f"({log['iters_per_second']:.2f} it/s, stop: {stop_reason}); val MRAE {last_val:.4f}")
    return log


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except ArgError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        train(args)
    except UserError as exc:  # e.g. an unreadable --init checkpoint
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())

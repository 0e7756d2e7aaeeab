"""Training MST++ on synthetic NTIRE-2022-style data (``mstpp.synth``): the loop behind train.py.

Recipe (MST++ paper/official code): Adam (betas 0.9, 0.999), lr 4e-4 with cosine decay to 1e-6,
MRAE loss, 128 x 128 patches with random flips and 90-degree rotations. The MRAE denominator gets
``+1e-3`` (``LOSS_EPS``) because synthetic labels can be ~0 in dark pixels / dark illuminant bands.
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from architecture import MST_Plus_Plus
from .metrics import crop_border
from .synth import SyntheticGenerator, eval_scene
from .synth.evaluate import BORDER
from .weights import check_state_dict, read_state_dict, save_checkpoint

LOSS_EPS = 1e-3
DEFAULT_ITERS = 100_000
#: Steps left out of the speed measurement (autotuning, prefetch start) and steps measured after them.
CALIB_SKIP, CALIB_STEPS = 30, 100
LR_MIN = 1e-6


@dataclass
class TrainConfig:
    """One training run (train.py's options, checked). ``state`` holds the optimizer state for resuming."""

    out: Path
    state: Path
    device: torch.device
    resume: bool = False
    init: str | None = None
    iters: int | None = None
    minutes: float = 0.0
    session_minutes: float = 0.0
    batch_size: int = 32
    patch: int = 128
    scene_size: int = 0
    lr: float = 4e-4
    seed: int = 0
    amp: str = "none"
    compile: bool = False
    val_every: int = 500
    val_scenes: int = 10
    val_crop: int = 0
    prefetch: int = 1
    patches_per_scene: int = 1
    save_every: int = 1000
    photos: tuple[str, ...] | None = None
    no_progress: bool = False


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


def train(args: TrainConfig) -> dict:
    """Run (or resume) a training run; writes the checkpoint, the resume state and ``<out>.train.json``,
    and returns that log."""
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

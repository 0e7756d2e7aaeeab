"""Evaluate MST++ weights on the held-out synthetic scenes, against per-pixel regression baselines.

Reports (all written to a JSON file and a section of ``model/MODEL_CARD.md``):

* MRAE / RMSE / PSNR / SAM (degrees) on the 128-px-border-cropped centre of each 482 x 512 scene,
  averaged over scenes as NTIRE does. MRAE is given twice: with the training epsilon (1e-3 added to the
  label in the denominator) and NTIRE-strict (no epsilon).
* The same for linear and root-polynomial (degree 2 and 3) regressions RGB -> 31 fitted on training scenes.
* Back-projection consistency on a real ARAD_1K RGB image: the predicted cube is rendered through the
  camera matrix and compared with the min-max-normalised input plus its black offset.
* Activation statistics (q/k RMS per S-MSA, LayerNorm input ranges) from forward hooks.
"""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..metrics import all_metrics, crop_border, error_stats
from .baselines import RegressionBaseline, pixels_from_batch
from .camera import minmax_normalise, render_linear
from .generator import EVAL_SEED, SyntheticGenerator, eval_scene
from .tables import camera_matrix

TRAIN_EPS = 1e-3
BORDER = 128
CARD_START, CARD_END = "<!-- synthetic-eval:start -->", "<!-- synthetic-eval:end -->"
BASELINES = ("linear", "rootpoly2", "rootpoly3")


def _scene_metrics(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    m = all_metrics(pred, gt, BORDER, mrae_eps=TRAIN_EPS)
    m["mrae_strict"] = all_metrics(pred, gt, BORDER, mrae_eps=0.0)["mrae"]
    return m


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = rows[0].keys() if rows else []
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def fit_baselines(n_batches: int = 8, batch: int = 8, seed: int = 12345) -> dict[str, RegressionBaseline]:
    """Fit the regressions on pixels of training-split scenes (256 x 256, same camera pipeline)."""
    gen = SyntheticGenerator("train", seed=seed, device="cpu")
    sample = torch.Generator().manual_seed(seed)
    rgbs, cubes = [], []
    for i in range(n_batches):
        b = gen.scenes(i, batch, (256, 256))
        r, c = pixels_from_batch(b.inputs, b.cubes, 4000, sample)
        rgbs.append(r)
        cubes.append(c)
    rgb, cube = torch.cat(rgbs), torch.cat(cubes)
    return {k: RegressionBaseline.fit(rgb, cube, k) for k in BASELINES}


class ActivationRecorder:
    """Forward hooks: RMS of q and k per S-MSA block, min/max/abs-max of every LayerNorm input.

    q and k are recomputed from the S-MSA block's input with its ``to_q`` / ``to_k`` weights (before
    L2 normalisation), so the statistics do not depend on how the block applies those projections
    (nn.Linear call, 1x1 convolution, fused kernel). The channel axis is found by its size.
    """

    def __init__(self, model: nn.Module) -> None:
        self.stats: dict[str, dict[str, float]] = {}
        self.handles = []
        for name, mod in model.named_modules():
            if isinstance(getattr(mod, "to_q", None), nn.Linear) and isinstance(getattr(mod, "to_k", None), nn.Linear):
                self.handles.append(mod.register_forward_pre_hook(self._qk(name, mod)))
            if isinstance(mod, nn.LayerNorm):
                self.handles.append(mod.register_forward_pre_hook(self._range(name)))

    def _qk(self, key: str, mod: nn.Module):
        def hook(_m, inputs):
            x = inputs[0].detach().float()
            dim = mod.to_q.in_features
            if x.shape[-1] == dim and x.shape[1] != dim:
                tokens = x.reshape(-1, dim)                        # channels-last [B, H, W, C]
            elif x.shape[1] == dim:
                tokens = x.movedim(1, -1).reshape(-1, dim)         # NCHW
            else:
                return
            for tag, lin in (("q", mod.to_q), ("k", mod.to_k)):
                o = tokens @ lin.weight.detach().float().T
                s = self.stats.setdefault(f"{key}.{tag}", {"rms_sum": 0.0, "n": 0, "absmax": 0.0})
                s["rms_sum"] += float(o.pow(2).mean().sqrt())
                s["n"] += 1
                s["absmax"] = max(s["absmax"], float(o.abs().max()))
        return hook

    def _range(self, key: str):
        def hook(_m, inputs):
            x = inputs[0].detach().float()
            s = self.stats.setdefault(key, {"min": math.inf, "max": -math.inf, "absmax": 0.0})
            s["min"] = min(s["min"], float(x.min()))
            s["max"] = max(s["max"], float(x.max()))
            s["absmax"] = max(s["absmax"], float(x.abs().max()))
        return hook

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for k, s in self.stats.items():
            if "rms_sum" in s:
                out[k] = {"rms": s["rms_sum"] / max(s["n"], 1), "absmax": s["absmax"]}
            else:
                out[k] = {"min": s["min"], "max": s["max"], "absmax": s["absmax"]}
        return out

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def read_rgb(path: str | Path) -> torch.Tensor:
    """An 8-bit RGB image file -> float [1, 3, H, W] in 0..255 (OpenCV reads BGR; converted)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return torch.from_numpy(np.ascontiguousarray(img[..., ::-1])).permute(2, 0, 1)[None].float()


def back_projection(cube: torch.Tensor, rgb: torch.Tensor) -> dict[str, float]:
    """Render cube [1,31,H,W] through the camera and compare with rgb [1,3,H,W] (0..255) normalised.

    The target is ``(rgb - min) / (max - min) + min / (max - min)`` = rgb / (max - min): the cube has no
    black offset, so the offset removed by min-max normalisation is added back.
    """
    cam = camera_matrix().to(cube.device)
    _, lo, hi = minmax_normalise(rgb)
    target = rgb / (hi - lo).clamp_min(1.0)[:, None, None, None]
    rendered = render_linear(cube.float(), cam)
    full, centre = error_stats(rendered, target), error_stats(crop_border(rendered), crop_border(target))
    mse = float(((crop_border(rendered) - crop_border(target)) ** 2).mean())
    return {"abs_mean": full["abs_mean"], "abs_p99": full["abs_p99"], "rel_median": full["rel_median"],
            "centre_abs_mean": centre["abs_mean"], "centre_psnr": 10 * math.log10(1.0 / max(mse, 1e-20))}


def _grouped(rows: dict[str, list[dict]], labels: list[str]) -> dict:
    """Per-label means of every method's per-scene metrics ({label: {method: {metric: mean}}})."""
    return {label: {k: _mean([r for r, lab in zip(v, labels) if lab == label]) for k, v in rows.items()}
            for label in sorted(set(labels))}


@torch.no_grad()
def evaluate(model: nn.Module, device: torch.device, n_scenes: int = 50, arad: str | Path | None = None,
             baseline_batches: int = 8, amp: bool = False, log=print) -> dict:
    """Run all evaluations; returns a JSON-ready dict."""
    model = model.eval().to(device)
    t0 = time.time()
    log(f"fitting baselines on {baseline_batches} x 8 training scenes ...")
    baselines = fit_baselines(baseline_batches)
    rows: dict[str, list[dict]] = {"mst_plus_plus": [], **{k: [] for k in BASELINES}}
    kinds, families, gt_bp, out_stats = [], [], [], []
    recorder = ActivationRecorder(model)
    for i in range(n_scenes):
        s = eval_scene(i)
        x, y = s.inputs.to(device), s.cubes
        if i >= 3:
            recorder.close()  # activation statistics from the first three synthetic scenes (+ ARAD)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(x).float().cpu()
        out_stats.append(error_stats(pred, y))
        rows["mst_plus_plus"].append(_scene_metrics(pred, y))
        for k, b in baselines.items():
            rows[k].append(_scene_metrics(b.predict(s.inputs), y))
        gt_bp.append(back_projection(y, s.rendered.rgb8.float()))
        kinds.append(s.meta[0]["kind"])
        families.append(s.meta[0]["illuminant_family"])
        log(f"scene {i:2d} {s.meta[0].get('photo', s.meta[0]['kind']):>12s} {s.meta[0]['illuminant']:>18s}: "
            f"MRAE {rows['mst_plus_plus'][-1]['mrae']:.4f} (rootpoly3 {rows['rootpoly3'][-1]['mrae']:.4f})")
    result: dict = {
        "n_scenes": n_scenes, "eval_seed": EVAL_SEED, "scene_size_hw": [482, 512], "border_crop": BORDER,
        "mrae_eps": TRAIN_EPS, "sam_unit": "degrees",
        "metrics": {k: _mean(v) for k, v in rows.items()},
        "metrics_by_kind": _grouped(rows, kinds),
        # The illuminant family dominates the error (fluorescent and LED spectra have bands with almost no power).
        "metrics_by_illuminant_family": _grouped(rows, families),
        "scenes_by_illuminant_family": {f: families.count(f) for f in sorted(set(families))},
        "prediction_error_stats_mean": _mean([{k: float(v) for k, v in e.items()} for e in out_stats]),
        "ground_truth_back_projection": _mean(gt_bp),
    }
    if arad is not None:
        rgb = read_rgb(arad)
        x, _, _ = minmax_normalise(rgb)
        recorder_arad = ActivationRecorder(model)
        recorder_arad.stats = recorder.stats  # same accumulators: stats cover synthetic + real input
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(x.to(device)).float().cpu()
        recorder_arad.close()
        base = baselines["rootpoly3"].predict(x)
        result["arad_back_projection"] = {
            "image": Path(arad).name, "size_hw": list(rgb.shape[-2:]),
            "mst_plus_plus": back_projection(pred, rgb), "rootpoly3": back_projection(base, rgb),
            "pred_range": [float(pred.min()), float(pred.max())],
            "pred_nonfinite": int((~torch.isfinite(pred)).sum()),
        }
    recorder.close()
    result["activations"] = recorder.summary()
    result["eval_seconds"] = round(time.time() - t0, 1)
    return result


def _fmt(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.4g}"


def _per_scene(train_log: dict) -> str:
    k = train_log.get("patches_per_scene", 1)
    return f" ({k} per scene)" if k > 1 else ""


def _val_region(train_log: dict) -> str:
    if train_log.get("val_crop"):
        return f"{train_log['val_crop']}-px centre crop"
    return f"whole scenes scored inside a {train_log.get('val_border', 0)}-px border"


def card_section(result: dict, train_log: dict | None, weights: str) -> str:
    """Markdown for the model card, between the synthetic-eval markers."""
    L = [CARD_START, "## Synthetic training and evaluation", ""]
    L += ["**Weights:** `" + weights + "` (fp32, official checkpoint layout)."]
    if train_log:
        L += [f"**Training:** {train_log['steps']} iterations, batch {train_log['batch_size']}, "
              f"{train_log['patch']}x{train_log['patch']} patches cut from {train_log['scene_size']}-px scenes"
              f"{_per_scene(train_log)}, "
              f"{train_log['optimizer']}, lr {train_log['lr']} {train_log['lr_schedule']}, loss {train_log['loss']}, "
              f"AMP {train_log['amp']}, seed {train_log['seed']}; {train_log['train_seconds']:.0f} s on "
              f"{train_log['device_name']} ({train_log['iters_per_second']:.2f} it/s, torch {train_log['torch']}). "
              f"Final validation MRAE ({train_log['val_scenes']} held-out scenes, {_val_region(train_log)}): "
              f"{train_log['final_val_mrae']:.4f}."]
        first = train_log.get("init_training")
        if first:
            L[-1] += (f" These iterations continued from `{train_log['init']}` as an earlier run had left it, "
                      f"after {first['steps']} iterations ({first['train_seconds']:.0f} s, "
                      f"{first['iters_per_second']:.2f} it/s; same recipe, then a fresh cosine): "
                      f"{first['steps'] + train_log['steps']} iterations and "
                      f"{first['train_seconds'] + train_log['train_seconds']:.0f} s in all.")
    L += ["",
          "**Data:** synthetic scenes from `mstpp.synth` — measured reflectances (AMPAS 190 patches, PMC chart, "
          "CIE TCS; held out: ColorChecker BabelColor average, NIST CQS VS, CIE 1995 TCS) under CIE daylight "
          "(train 4000-6000 K and 7000-10000 K; eval 6000-7000 K) and tabulated A/fluorescent/discharge/LED sources "
          "(disjoint train/eval lists), laid out by SLIC superpixels of scikit-image's bundled photos (eval photos: "
          "chelsea, coffee, coins, page) and dead-leaves patterns, rendered with the NTIRE 2022 camera pipeline "
          "(camera QE, gains, Poisson noise at 750 e-, 8 bit, JPEG q65). Targets are radiance in the units of the "
          "min-max-normalised input (see `mstpp/synth/camera.py`). **Not real hyperspectral data**: the numbers "
          "below measure the synthetic task and are no substitute for ARAD_1K scores.", "",
          f"**Held-out evaluation:** {result['n_scenes']} scenes of 482x512 (H x W), seed {result['eval_seed']}, "
          f"metrics on the centre after cropping {result['border_crop']} px per border; MRAE with label + "
          f"{result['mrae_eps']} (strict: no epsilon); SAM in degrees.", "",
          "| method | MRAE | MRAE strict | RMSE | PSNR (dB) | SAM (deg) |", "|---|---|---|---|---|---|"]
    for k, m in result["metrics"].items():
        L.append(f"| {k} | {_fmt(m['mrae'])} | {_fmt(m['mrae_strict'])} | {_fmt(m['rmse'])} | "
                 f"{_fmt(m['psnr'])} | {_fmt(m['sam_deg'])} |")
    L += ["", "By scene kind (MRAE): " + "; ".join(
        f"{kind}: " + ", ".join(f"{k} {_fmt(m['mrae'])}" for k, m in v.items())
        for kind, v in result["metrics_by_kind"].items()), ""]
    if "metrics_by_illuminant_family" in result:
        counts = result.get("scenes_by_illuminant_family", {})
        L += ["By illuminant family (MRAE, scenes): " + "; ".join(
            f"{fam} ({counts.get(fam, '?')}): " + ", ".join(f"{k} {_fmt(m['mrae'])}" for k, m in v.items()
                                                           if k in ("mst_plus_plus", "rootpoly3"))
            for fam, v in result["metrics_by_illuminant_family"].items()), ""]
    gt = result["ground_truth_back_projection"]
    L += [f"Back-projection floor (ground-truth cube rendered vs. its own noisy JPEG input, synthetic): "
          f"mean abs {_fmt(gt['abs_mean'])}, centre PSNR {_fmt(gt['centre_psnr'])} dB."]
    if "arad_back_projection" in result:
        a = result["arad_back_projection"]
        L += ["", f"**Real image back-projection** ({a['image']}, {a['size_hw'][0]}x{a['size_hw'][1]}): predicted cube "
              "rendered through the camera vs. the normalised input (+ black offset).", "",
              "| method | mean abs | p99 abs | median rel | centre PSNR (dB) |", "|---|---|---|---|---|"]
        for k in ("mst_plus_plus", "rootpoly3"):
            b = a[k]
            L.append(f"| {k} | {_fmt(b['abs_mean'])} | {_fmt(b['abs_p99'])} | {_fmt(b['rel_median'])} | "
                     f"{_fmt(b['centre_psnr'])} |")
        L.append(f"\nPrediction range on the real image: [{_fmt(a['pred_range'][0])}, {_fmt(a['pred_range'][1])}], "
                 f"non-finite values: {a['pred_nonfinite']}.")
    L += ["", "**Activation statistics** (forward hooks; first 3 synthetic eval scenes"
          + (" + the real image" if "arad_back_projection" in result else "") + "): q/k = RMS (abs-max) of the "
          "S-MSA query/key projections before L2 normalisation; LN = LayerNorm input min / max / abs-max.", "",
          "| block | q RMS (absmax) | k RMS (absmax) | LN in min | LN in max | LN in absmax |", "|---|---|---|---|---|---|"]
    acts = result["activations"]
    blocks = sorted({re.sub(r"\.(q|k)$", "", k) for k in acts if k.endswith((".q", ".k"))}, key=_natural)
    for blk in blocks:
        q, k = acts.get(blk + ".q", {}), acts.get(blk + ".k", {})
        ln_key = re.sub(r"\.0$", ".1.norm", blk)
        ln = acts.get(ln_key, {})
        L.append(f"| {blk} | {_fmt(q.get('rms', float('nan')))} ({_fmt(q.get('absmax', float('nan')))}) | "
                 f"{_fmt(k.get('rms', float('nan')))} ({_fmt(k.get('absmax', float('nan')))}) | "
                 f"{_fmt(ln.get('min', float('nan')))} | {_fmt(ln.get('max', float('nan')))} | "
                 f"{_fmt(ln.get('absmax', float('nan')))} |")
    L += ["", "Regenerate: `python evaluate_weights.py --weights " + weights + " --arad PATH/TO/ARAD_1K_0912.jpg`.",
          CARD_END]
    return "\n".join(L) + "\n"


def _natural(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def write_card(path: str | Path, section: str) -> None:
    """Insert or replace the synthetic-eval section of the model card, keeping anything else in it."""
    path = Path(path)
    text = path.read_text() if path.is_file() else "# MST++ model card\n\n"
    if CARD_START in text and CARD_END in text:
        head, rest = text.split(CARD_START, 1)
        tail = rest.split(CARD_END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def save_json(result: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1, default=float) + "\n")

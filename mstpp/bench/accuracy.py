"""Accuracy of a route against PyTorch FP32 (TF32 off), and against ground truth where it exists.

Inputs are ``Sample``s: an RGB image [3, H, W] in [0, 1] with an optional ground-truth cube [31, H, W]
(the synthetic evaluation scenes have one; real photos do not). Every route runs one image at a time
through the runner interface, so images of any size work and the numbers are per image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..backends import Runner, make_runner
from ..io import find_images, read_rgb
from ..metrics import all_metrics, crop_border, error_stats
from .runner_loop import classify, free_device_memory

REFERENCE_ROUTE = "torch-fp32"
#: NTIRE 2022 scores the centre: 128 px off every border.
CENTRE_BORDER = 128


@dataclass
class Sample:
    """One test image: ``rgb`` [3, H, W] float32 in [0, 1]; ``gt`` [31, H, W] or None; ``source``
    says where it came from (``real`` or ``synthetic``)."""

    name: str
    rgb: np.ndarray
    gt: np.ndarray | None = None
    source: str = "real"


def real_samples(paths: Sequence[str | Path]) -> list[Sample]:
    """Real RGB images (files or folders); no ground truth."""
    return [Sample(p.stem, read_rgb(p)) for p in find_images(paths)]


def synthetic_samples(n: int, crop: int | None = None) -> list[Sample]:
    """The first ``n`` held-out synthetic scenes (482x512) with their ground-truth cubes; ``crop``
    takes a centre crop of that many pixels (the quick CPU profile)."""
    from ..synth.generator import eval_scene

    out = []
    for i in range(n):
        scene = eval_scene(i)
        rgb, gt = scene.inputs[0].numpy(), scene.cubes[0].numpy()
        if crop:
            top, left = (rgb.shape[1] - crop) // 2, (rgb.shape[2] - crop) // 2
            rgb, gt = rgb[:, top:top + crop, left:left + crop], gt[:, top:top + crop, left:left + crop]
        out.append(Sample(f"synthetic_{i:02d}", np.ascontiguousarray(rgb), np.ascontiguousarray(gt), "synthetic"))
    return out


def run_route(runner: Runner, samples: Sequence[Sample], progress: Callable[[], None] | None = None) -> list[np.ndarray]:
    """Cubes [31, H, W] (float32, on the host) of ``runner`` for every sample, in order."""
    outs, prepared = [], None
    for s in samples:
        shape = (1, 3, *s.rgb.shape[1:])
        if shape != prepared:
            runner.prepare(shape)
            prepared = shape
        y = runner.run(runner.make_input(torch.from_numpy(s.rgb)[None]))
        outs.append(y[0].float().cpu().numpy())
        if progress:
            progress()
    return outs


def _centre(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[-2:]
    # Small (quick-profile) images have no 128 px border to spare; score them whole.
    return crop_border(x, CENTRE_BORDER) if min(h, w) > 2 * CENTRE_BORDER else x


def compare(outs: Sequence[np.ndarray], refs: Sequence[np.ndarray], samples: Sequence[Sample]) -> dict[str, Any]:
    """Aggregate error statistics of ``outs`` against ``refs`` (and ground truth where present).

    Full-image statistics: mean of per-image means, median of per-image medians, mean of per-image
    p99s, max of maxima (abs and rel error). ``centre_*``: the same on the NTIRE centre crop. NaN/Inf
    counts are totals. Ground-truth metrics (MRAE, RMSE, PSNR, SAM in degrees) average over the
    samples that have ground truth, on the centre crop.
    """
    per_image = [error_stats(o, r) for o, r in zip(outs, refs)]
    centre = [error_stats(_centre(o), _centre(r)) for o, r in zip(outs, refs)]
    row: dict[str, Any] = {"n_images": len(outs), "nan_count": sum(s["nan"] for s in per_image),
                           "inf_count": sum(s["inf"] for s in per_image)}
    for prefix, stats in (("", per_image), ("centre_", centre)):
        for kind in ("abs", "rel"):
            vals = [s for s in stats if f"{kind}_mean" in s]
            if not vals:
                continue
            row[f"{prefix}mean_{kind}"] = float(np.mean([s[f"{kind}_mean"] for s in vals]))
            row[f"{prefix}median_{kind}"] = float(np.median([s[f"{kind}_median"] for s in vals]))
            row[f"{prefix}p99_{kind}"] = float(np.mean([s[f"{kind}_p99"] for s in vals]))
            row[f"{prefix}max_{kind}"] = float(np.max([s[f"{kind}_max"] for s in vals]))
    row["per_image_mean_abs"] = [s.get("abs_mean", math.nan) for s in per_image]
    with_gt = [(o, s.gt) for o, s in zip(outs, samples) if s.gt is not None]
    if with_gt:
        metrics = [all_metrics(o, g, border=CENTRE_BORDER if min(g.shape[-2:]) > 2 * CENTRE_BORDER else 0)
                   for o, g in with_gt]
        for key in metrics[0]:
            row[key] = float(np.mean([m[key] for m in metrics]))
    return row


def evaluate_routes(routes: Sequence[str], samples: Sequence[Sample], state_dict: Mapping[str, torch.Tensor],
                    device: str, runner_options: Mapping[str, Any] | None = None,
                    progress: bool = True) -> list[dict[str, Any]]:
    """One accuracy row per route (the reference route first, compared with itself and ground truth)."""
    from tqdm import tqdm

    routes = [REFERENCE_ROUTE] + [r for r in routes if r != REFERENCE_ROUTE]
    bar = tqdm(total=len(routes) * len(samples), desc="accuracy", unit="img", disable=not progress)
    rows, refs = [], None
    for route in routes:
        row: dict[str, Any] = {"route": route, "status": "ok", "reason": ""}
        runner = None
        try:
            runner = make_runner(route, state_dict, device=device, **(runner_options or {}))
            outs = run_route(runner, samples, lambda: bar.update(1))
            row["settings"] = runner.describe()
            if refs is None:
                refs = outs
            row.update(compare(outs, refs, samples))
        except Exception as exc:  # one route failing never stops the study
            row["status"], row["reason"] = classify(exc)
            if route == REFERENCE_ROUTE:
                raise
        finally:
            if runner is not None:
                runner.close()
            free_device_memory()
        rows.append(row)
    bar.close()
    return rows


def write_accuracy(rows: Sequence[Mapping[str, Any]], environment: Mapping[str, Any],
                   metadata: Mapping[str, Any], out_dir: str | Path, tag: str) -> tuple[Path, Path]:
    """``<tag>.json`` (the accuracy envelope read by the report) and ``<tag>.csv`` (scalar columns)."""
    import pandas as pd

    from .results import write_envelope

    envelope = {"kind": "accuracy", "schema": 1, "metadata": dict(metadata), "environment": dict(environment),
                "rows": [dict(r) for r in rows]}
    flat = [{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in rows]
    return write_envelope(envelope, pd.DataFrame(flat), out_dir, tag, indent=1)

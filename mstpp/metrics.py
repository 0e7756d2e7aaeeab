"""Spectral-recovery metrics (NTIRE 2022 style) and error statistics.

All functions take torch tensors or numpy arrays shaped [B, 31, H, W] (or [31, H, W]; the band axis is
the third from last) and return Python floats averaged over all pixels and images.
"""
from __future__ import annotations

import math

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray


def _t(x: ArrayLike) -> torch.Tensor:
    return (torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x).to(torch.float64)


def crop_border(x: ArrayLike, border: int = 128) -> ArrayLike:
    """Drop ``border`` pixels on each side of the last two axes (NTIRE scores the centre only)."""
    if border <= 0:
        return x
    return x[..., border:-border, border:-border]


def mrae(pred: ArrayLike, gt: ArrayLike, eps: float = 0.0) -> float:
    """Mean relative absolute error mean(|pred - gt| / (gt + eps)). NTIRE uses eps = 0."""
    p, g = _t(pred), _t(gt)
    return float(((p - g).abs() / (g + eps)).mean())


def rmse(pred: ArrayLike, gt: ArrayLike) -> float:
    """Root mean squared error over all elements."""
    p, g = _t(pred), _t(gt)
    return float(((p - g) ** 2).mean().sqrt())


def psnr(pred: ArrayLike, gt: ArrayLike, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(data_range^2 / MSE) (inf when identical)."""
    p, g = _t(pred), _t(gt)
    mse = float(((p - g) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def sam(pred: ArrayLike, gt: ArrayLike, eps: float = 1e-12) -> float:
    """Mean spectral angle in DEGREES between per-pixel spectra (band axis -3)."""
    p, g = _t(pred), _t(gt)
    dot = (p * g).sum(-3)
    norm = p.norm(dim=-3) * g.norm(dim=-3)
    cos = (dot / norm.clamp_min(eps)).clamp(-1.0, 1.0)
    return float(torch.rad2deg(torch.arccos(cos)).mean())


#: Floor added to |reference| in relative errors: |a - ref| / (|ref| + REL_ERROR_FLOOR). MST++ outputs are
#: reflectances in [0, 1], so 1e-6 only guards the division; where the reference is ~0 (dark pixels and
#: bands) the relative error of a tiny absolute error is still large, which is why reports show max_rel
#: beside the absolute errors and name this floor.
REL_ERROR_FLOOR = 1e-6


def error_stats(a: ArrayLike, ref: ArrayLike, rel_eps: float = REL_ERROR_FLOOR) -> dict[str, float | int]:
    """Absolute and relative error of ``a`` against ``ref``: mean/median/p99/max, plus NaN/Inf counts.

    Relative error is |a - ref| / (|ref| + rel_eps). Non-finite elements of ``a`` are counted and left
    out of the statistics so that one NaN does not hide the rest.
    """
    x, r = _t(a).flatten(), _t(ref).flatten()
    finite = torch.isfinite(x) & torch.isfinite(r)
    out: dict[str, float | int] = {"n": int(x.numel()), "nan": int(torch.isnan(x).sum()),
                                   "inf": int(torch.isinf(x).sum())}
    if not bool(finite.any()):
        return out
    ab = (x[finite] - r[finite]).abs()
    rel = ab / (r[finite].abs() + rel_eps)
    for name, v in (("abs", ab), ("rel", rel)):
        # quantile() has an input-size limit; a strided sample is plenty for a p99.
        sample = v if v.numel() <= 4_000_000 else v[:: v.numel() // 4_000_000 + 1]
        out.update({f"{name}_mean": float(v.mean()), f"{name}_median": float(sample.median()),
                    f"{name}_p99": float(torch.quantile(sample, 0.99)), f"{name}_max": float(v.max())})
    return out


def all_metrics(pred: ArrayLike, gt: ArrayLike, border: int = 128, mrae_eps: float = 0.0) -> dict[str, float]:
    """MRAE, RMSE, PSNR (data range 1), SAM (degrees) on the border-cropped centre."""
    p, g = crop_border(pred, border), crop_border(gt, border)
    return {"mrae": mrae(p, g, mrae_eps), "rmse": rmse(p, g), "psnr": psnr(p, g, 1.0), "sam_deg": sam(p, g)}

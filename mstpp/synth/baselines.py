"""Per-pixel regression baselines RGB -> 31 bands: linear and root-polynomial (Finlayson et al. 2015).

Root-polynomial terms are degree-1 homogeneous (e.g. sqrt(r g), cbrt(r g^2)), so like the linear map
they scale with exposure - a fair baseline for exposure-normalised inputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def features(rgb: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-pixel features: rgb [P, 3] -> [P, F]. kind: 'linear' (3), 'rootpoly2' (6), 'rootpoly3' (13)."""
    x = rgb.clamp_min(0.0).to(torch.float64)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    cols = [r, g, b]
    if kind in ("rootpoly2", "rootpoly3"):
        cols += [(r * g).sqrt(), (g * b).sqrt(), (r * b).sqrt()]
    if kind == "rootpoly3":
        c = lambda t: t.pow(1.0 / 3.0)  # noqa: E731
        cols += [c(r * g * g), c(g * b * b), c(r * b * b), c(g * r * r), c(b * g * g), c(b * r * r), c(r * g * b)]
    if kind not in ("linear", "rootpoly2", "rootpoly3"):
        raise ValueError(f"unknown baseline {kind!r}")
    return torch.stack(cols, 1)


@dataclass
class RegressionBaseline:
    """A fitted per-pixel map. weights: [F, 31]."""

    kind: str
    weights: torch.Tensor

    @classmethod
    def fit(cls, rgb: torch.Tensor, cube: torch.Tensor, kind: str, ridge: float = 1e-6) -> "RegressionBaseline":
        """Least squares on pixels: rgb [P, 3], cube [P, 31] (a tiny ridge keeps it well posed)."""
        f = features(rgb, kind)
        a = f.T @ f + ridge * torch.eye(f.shape[1], dtype=f.dtype) * f.pow(2).mean()
        w = torch.linalg.solve(a, f.T @ cube.to(torch.float64))
        return cls(kind, w)

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs [B, 3, H, W] -> cube [B, 31, H, W] (float32, clamped at 0)."""
        b, _, h, w = inputs.shape
        px = inputs.permute(0, 2, 3, 1).reshape(-1, 3).cpu()
        out = (features(px, self.kind) @ self.weights).clamp_min(0.0).float()
        return out.reshape(b, h, w, -1).permute(0, 3, 1, 2).to(inputs.device)


def pixels_from_batch(inputs: torch.Tensor, cubes: torch.Tensor, per_image: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pixel sample: inputs [B,3,H,W], cubes [B,31,H,W] -> ([B*per_image, 3], [B*per_image, 31])."""
    b, _, h, w = inputs.shape
    idx = torch.randint(h * w, (b, per_image), generator=gen).to(inputs.device)
    rgb = torch.gather(inputs.flatten(2), 2, idx[:, None].expand(-1, 3, -1)).permute(0, 2, 1).reshape(-1, 3)
    cube = torch.gather(cubes.flatten(2), 2, idx[:, None].expand(-1, cubes.shape[1], -1)).permute(0, 2, 1)
    return rgb.cpu(), cube.reshape(-1, cubes.shape[1]).cpu()

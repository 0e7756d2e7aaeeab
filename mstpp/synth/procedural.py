"""Procedural scene layouts: dead-leaves (occluding random discs and rectangles) with smooth shading.

Dead-leaves images have the scale-invariant edge statistics of natural images, which gives the network
sharp boundaries at every scale that the photo layouts may lack.
"""
from __future__ import annotations

import math

import torch


def dead_leaves(batch: int, height: int, width: int, n_leaves: int, gen: torch.Generator,
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Random occlusion layouts.

    Returns:
        labels: int64 [B, H, W], leaf id in 0..n_leaves (0 = background, later leaves cover earlier).
        shading: float32 [B, H, W] in about [0.05, 1]: per-leaf brightness x a global linear ramp.
    All random numbers come from the CPU generator ``gen`` so layouts do not depend on the device.
    """
    size = float(max(height, width))
    # Radii with density ~ r^-2 between r_min and r_max (inverse-CDF sampling): 1/r is uniform, which
    # leaves enough large leaves to cover the canvas with a few dozen of them.
    r_min, r_max = 0.015 * size, 0.4 * size
    u = torch.rand(batch, n_leaves, generator=gen)
    radius = 1.0 / (1.0 / r_min - u * (1.0 / r_min - 1.0 / r_max))
    cy = torch.rand(batch, n_leaves, generator=gen) * height
    cx = torch.rand(batch, n_leaves, generator=gen) * width
    is_rect = torch.rand(batch, n_leaves, generator=gen) < 0.4
    aspect = torch.exp((torch.rand(batch, n_leaves, generator=gen) - 0.5) * 1.5)
    leaf_shade = 0.25 + 0.75 * torch.rand(batch, n_leaves + 1, generator=gen)
    ramp_angle = torch.rand(batch, generator=gen) * 2 * math.pi
    ramp_strength = torch.rand(batch, generator=gen) * 0.7

    dev = torch.device(device)
    ys = torch.arange(height, device=dev, dtype=torch.float32)[:, None]
    xs = torch.arange(width, device=dev, dtype=torch.float32)[None, :]
    labels = torch.zeros(batch, height, width, dtype=torch.int64, device=dev)
    radius, cy, cx, is_rect, aspect = (t.to(dev) for t in (radius, cy, cx, is_rect, aspect))
    # Paint leaf by leaf (a loop over leaves keeps memory at one [B, H, W] mask instead of [B, K, H, W]).
    for k in range(n_leaves):
        dy = (ys[None] - cy[:, k, None, None]) / aspect[:, k, None, None]
        dx = (xs[None] - cx[:, k, None, None]) * aspect[:, k, None, None]
        r = radius[:, k, None, None]
        disc = dy * dy + dx * dx <= r * r
        rect = (dy.abs() <= r) & (dx.abs() <= r)
        inside = torch.where(is_rect[:, k, None, None], rect, disc)
        labels = torch.where(inside, torch.full_like(labels, k + 1), labels)

    shade = leaf_shade.to(dev).gather(1, labels.flatten(1)).view(batch, height, width)
    # Global illumination ramp in a random direction, in [1 - strength, 1].
    yn, xn = ys[None] / max(height - 1, 1), xs[None] / max(width - 1, 1)
    proj = (torch.cos(ramp_angle).to(dev)[:, None, None] * xn + torch.sin(ramp_angle).to(dev)[:, None, None] * yn)
    proj = (proj - proj.flatten(1).amin(1)[:, None, None]) / (proj.flatten(1).amax(1) - proj.flatten(1).amin(1)).clamp_min(1e-6)[:, None, None]
    ramp = 1.0 - ramp_strength.to(dev)[:, None, None] * proj
    return labels, (shade * ramp).clamp(0.05, 1.0)

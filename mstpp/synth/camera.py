"""The NTIRE 2022 RGB camera simulation, batched in torch.

Pipeline per image (radiance cube L [31, H, W], any scale):

1. ``lin = M @ L``: project through the camera response with the NTIRE analog gains (``tables.camera_matrix``).
2. Exposure: scale so that the mean of ``lin`` over pixels and channels is 1.
3. Shot noise: Poisson with ``PHOTONS_AT_MEAN`` (750) photo-electrons at that mean level.
4. Scale to a mean of 0.18 x 255, round and clip to 8 bits.
5. JPEG, quality 65 (OpenCV), decoded back to uint8 RGB.

Model input: the decoded RGB, min-max normalised per image over all pixels and channels (as MST++ does
at inference). Target cube: the radiance in the same unit as that input -
``cube = L * (0.18 * 255 / mean(lin)) / (max8 - min8)`` - so rendering the target through ``M`` gives the
normalised input (plus its black offset ``min8 / (max8 - min8)``) up to noise, clipping, rounding and
JPEG. This makes the cube's scale predictable from the normalised input, and white pixels near the top
of the input range have cube values near 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

PHOTONS_AT_MEAN = 750.0
MEAN_LEVEL = 0.18 * 255.0
JPEG_QUALITY = 65


@dataclass
class Rendered:
    """Camera output for a batch.

    rgb8: uint8 [B, 3, H, W] camera image after JPEG. inputs: float32 [B, 3, H, W] min-max normalised rgb8.
    cubes: float32 [B, 31, H, W] target radiance in input units (see module doc).
    """

    rgb8: torch.Tensor
    inputs: torch.Tensor
    cubes: torch.Tensor


def render_linear(cube: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """Noise-free linear camera signal: cube [B, 31, H, W], cam [3, 31] -> [B, 3, H, W]."""
    return torch.einsum("cl,blhw->bchw", cam.to(cube.dtype), cube)


def minmax_normalise(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image min-max over all pixels and channels: [B, 3, H, W] -> (normalised, min [B], max [B])."""
    flat = rgb.flatten(1).float()
    lo, hi = flat.amin(1), flat.amax(1)
    span = (hi - lo).clamp_min(1e-6)  # a constant image would divide by zero
    return (rgb.float() - lo[:, None, None, None]) / span[:, None, None, None], lo, hi


def jpeg_roundtrip(rgb8: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
    """JPEG-encode and decode each image with OpenCV: uint8 [B, 3, H, W] -> uint8 [B, 3, H, W] (CPU work)."""
    out = []
    arr = rgb8.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    for img in arr:
        # OpenCV expects BGR; the order matters because JPEG converts to YCbCr with fixed weights.
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise RuntimeError("OpenCV failed to encode a JPEG")
        out.append(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return torch.from_numpy(np.ascontiguousarray(np.stack(out))).permute(0, 3, 1, 2).to(rgb8.device)


def simulate(radiance: torch.Tensor, cam: torch.Tensor, generator: torch.Generator | None = None,
             noise: bool = True, jpeg: bool = True) -> Rendered:
    """Run the NTIRE camera on radiance cubes [B, 31, H, W] (non-negative, any scale).

    Args:
        cam: camera matrix [3, 31] from ``tables.camera_matrix``.
        generator: random generator on ``radiance.device`` for the shot noise (determinism).
        noise, jpeg: switch off shot noise / JPEG (tests of the deterministic part of the pipeline).
    """
    lin = render_linear(radiance, cam).clamp_min(0.0)
    mean = lin.flatten(1).mean(1).clamp_min(1e-12)[:, None, None, None]
    rel = lin / mean  # exposure: mean signal 1
    if noise:
        rel = torch.poisson(rel * PHOTONS_AT_MEAN, generator=generator) / PHOTONS_AT_MEAN
    rgb8 = (rel * MEAN_LEVEL).round().clamp(0, 255).to(torch.uint8)
    if jpeg:
        rgb8 = jpeg_roundtrip(rgb8)
    inputs, lo, hi = minmax_normalise(rgb8)
    scale = MEAN_LEVEL / mean / (hi - lo).clamp_min(1.0)[:, None, None, None]
    cubes = (radiance * scale).clamp_min(0.0).float()
    return Rendered(rgb8=rgb8, inputs=inputs, cubes=cubes)

"""What one request may hold, and the checks that turn a bad request into an error naming the problem.

Triton itself rejects a wrong datatype, rank or channel count (the model configuration declares them);
these checks cover what a configuration cannot say.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from architecture import MIN_SIZE as MIN_SIDE  # smallest H or W MST++ takes (its reflect padding needs it)

from ..errors import ImageError
from ..io import decode_rgb


class RequestError(ValueError):
    """A request the server cannot answer; the message names the problem and goes back to the client."""


@dataclass(frozen=True)
class RequestLimits:
    """Caps on one request.

    Attributes:
        max_side: largest H or W accepted (the model's memory grows with H*W).
        max_image_bytes: largest encoded image accepted by the ``mstpp_image`` model.
    """

    max_side: int = 4096
    max_image_bytes: int = 32 << 20

    def check_size(self, height: int, width: int, what: str = "image") -> None:
        """Raise RequestError when H or W is under :data:`MIN_SIDE` or over ``max_side``."""
        if min(height, width) < MIN_SIDE:
            raise RequestError(f"{what} is {height}x{width}; MST++ needs at least {MIN_SIDE}x{MIN_SIDE}")
        if max(height, width) > self.max_side:
            raise RequestError(f"{what} is {height}x{width}; this server accepts at most "
                               f"{self.max_side} pixels a side (serve.py --max-side)")

    def check_rgb(self, rgb: np.ndarray) -> None:
        """rgb: [B, 3, H, W] float32 as Triton delivered it (dtype and channels already checked)."""
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise RequestError(f"input 'rgb' has shape {list(rgb.shape)}; expected [B, 3, H, W]")
        self.check_size(rgb.shape[2], rgb.shape[3], "input 'rgb'")
        if not np.isfinite(rgb).all():
            raise RequestError("input 'rgb' contains NaN or Inf values")

    def decode(self, blobs: Sequence[bytes]) -> np.ndarray:
        """Encoded images of one request -> [B, 3, H, W] float32 (``infer.py``'s preprocessing).

        Raises:
            RequestError: an image over ``max_image_bytes``, undecodable, grayscale, constant, under the
                minimum or over the maximum side, or images of different sizes in one request.
        """
        images = []
        for i, blob in enumerate(blobs):
            origin = f"image {i} of the request"
            if len(blob) > self.max_image_bytes:
                raise RequestError(f"{origin} is {len(blob)} bytes; this server accepts at most "
                                   f"{self.max_image_bytes} bytes an image (serve.py --max-image-bytes)")
            try:
                rgb = decode_rgb(bytes(blob), origin)
            except ImageError as exc:
                raise RequestError(str(exc)) from None
            self.check_size(rgb.shape[1], rgb.shape[2], origin)
            images.append(rgb)
        sizes = sorted({img.shape[1:] for img in images})
        if len(sizes) > 1:
            raise RequestError(f"the images of one request must share a size, got {sizes}; send them separately")
        return np.stack(images)

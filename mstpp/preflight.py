"""Checks made before a route runs on user images: every size is one MST++ accepts and every batch
fits the device's free memory. Both raise UserError with one line, before any pixel is decoded."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import torch

from .input_size import check_input_size
from .io import image_size
from .memory import check_fits


def check_images(paths: Sequence[Path], route: str, batch_size: int, device: str | torch.device) -> None:
    """Check the images ``infer.py`` is about to run through ``route`` on ``device``.

    Images of one size are batched together up to ``batch_size``, so each size is checked at the
    largest batch it will run at.

    Raises:
        UserError: an image smaller than MST++ accepts, or a batch whose estimated peak memory exceeds
            what is available (``mstpp.memory.MemoryShortage``).
    """
    first: dict[tuple[int, int], Path] = {}
    counts: Counter = Counter()
    for path in paths:
        h, w = image_size(path)
        check_input_size(h, w, str(path))
        first.setdefault((h, w), path)
        counts[h, w] += 1
    for (h, w), path in first.items():
        batch = min(batch_size, counts[(h, w)])
        check_fits(route, (batch, 3, h, w), device, what=f"{path} ({h}x{w})")

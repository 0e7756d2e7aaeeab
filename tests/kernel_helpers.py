"""Helpers shared by the CUDA kernel tests: building the library on demand and NaN-poisoned outputs."""
from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from mstpp import kernels

PLUGINS_DIR = Path(__file__).resolve().parent.parent / "plugins"
GUARD = 64  # NaN elements on each side of every output; a multiple of 16 bytes for every dtype


def ensure_kernels_built() -> None:
    """Build plugins/build/libmstpp_kernels.so if it is missing (GPU test modules call this once)."""
    if not kernels.library_path().is_file():
        subprocess.run(["make", "-C", str(PLUGINS_DIR), "-j4"], check=True)
    assert kernels.library_path().is_file()


class Poisoned:
    """A NaN-filled output with NaN guard bands around it: a missed element or a stray write shows up."""

    def __init__(self, like: torch.Tensor):
        self.buffer = torch.full((like.numel() + 2 * GUARD,), float("nan"), dtype=like.dtype, device=like.device)
        self.out = self.buffer[GUARD:GUARD + like.numel()].view(like.shape)

    def check(self) -> torch.Tensor:
        torch.cuda.synchronize()
        assert torch.isnan(self.buffer[:GUARD]).all() and torch.isnan(self.buffer[-GUARD:]).all(), \
            "kernel wrote outside its output"
        assert torch.isfinite(self.out).all(), "output has NaN/Inf (unwritten or overflowed elements)"
        return self.out

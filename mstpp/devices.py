"""Which torch device a run uses: the one place that picks the default and checks a requested one."""
from __future__ import annotations

import torch

from .errors import UserError


def default_device() -> str:
    """``"cuda"`` when PyTorch sees a CUDA GPU, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(requested: str | None = None) -> str:
    """The device to run on: ``requested`` (``cpu``, ``cuda``, ``cuda:N``) checked against this machine,
    or :func:`default_device` for ``None`` / ``"auto"``.

    Raises:
        UserError: not a device name, or a CUDA device this machine does not have.
    """
    if requested in (None, "", "auto"):
        return default_device()
    try:
        dev = torch.device(requested)
    except (RuntimeError, TypeError):
        raise UserError(f"--device {requested!r} is not a device name (auto, cpu, cuda, cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device {requested!r}: only cpu and cuda are supported")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {requested} requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s)")
    return str(dev)

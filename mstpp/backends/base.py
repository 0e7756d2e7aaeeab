"""The one interface every inference route implements.

A runner owns whatever its route needs (a module, an ONNX Runtime session, a TensorRT context),
is prepared once for an input shape, and then maps an RGB batch to a spectral cube:

    runner = make_runner("torch-fp16", state_dict, device="cuda")
    runner.prepare((1, 3, 512, 482))
    x = runner.make_input(rgb)          # [B, 3, H, W] on runner.device, runner.input_dtype
    y = runner.run(x)                   # [B, 31, H, W] on runner.device
    runner.close()

``run`` only enqueues GPU work on the current CUDA stream where the route allows it, so a caller can
time the GPU work with CUDA events; it never copies to the host.

Who owns the output: the runner. The tensor ``run`` returns is valid until the next ``run`` (or ``close``)
of the same runner, which may write the next result into the same memory (TensorRT's bound output buffer, a
replayed CUDA graph's static output, ONNX Runtime's IOBinding). A caller that keeps an output past the next
call copies it (``y.clone()``, or a copy to the host). Runners that allocate per call satisfy this too; no
runner copies its output only to give the caller ownership.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from ..input_size import check_input_size


class RouteUnavailable(RuntimeError):
    """The route cannot run here (missing package, no GPU, unsupported precision...).

    The message says why in one line; callers report the route as skipped with that reason.
    """


class Runner(ABC):
    """Base class of all routes.

    Attributes:
        route: registry name, e.g. ``"torch-fp32"``.
        precision: ``"fp32"``, ``"tf32"``, ``"fp16"``, ``"bf16"`` or ``"int8"``.
        device: torch device the inputs and outputs live on.
        input_dtype: dtype ``run`` expects its input in.
        replays_cuda_graph: ``run`` replays a CUDA graph of its own, so a benchmark must not capture it again.
    """

    route: str = "base"
    precision: str = "fp32"
    replays_cuda_graph: bool = False

    def __init__(self, device: str | torch.device = "cpu", route: str | None = None) -> None:
        """``route``: the registry name ``make_runner`` passes; a runner made directly names itself."""
        if route is not None:
            self.route = route
        self.device = torch.device(device)
        self.input_dtype: torch.dtype = torch.float32
        self.shape: tuple[int, int, int, int] | None = None

    def prepare(self, shape: tuple[int, int, int, int]) -> None:
        """Get ready for inputs of ``shape`` = (B, 3, H, W): build, allocate, warm caches.

        Raises:
            UserError: H or W below the smallest size MST++ accepts (checked before any route runs).
        """
        check_input_size(shape[2], shape[3], f"input {tuple(int(s) for s in shape)}")
        self.shape = tuple(int(s) for s in shape)  # type: ignore[assignment]

    def make_input(self, rgb: torch.Tensor) -> torch.Tensor:
        """Move an RGB batch [B, 3, H, W] (float, [0, 1]) to this route's device and dtype."""
        return rgb.to(device=self.device, dtype=self.input_dtype).contiguous()

    @abstractmethod
    def run(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] from ``make_input`` -> cube [B, 31, H, W] on ``self.device``."""

    def describe(self) -> dict[str, Any]:
        """Settings that decide speed and accuracy, saved beside every result."""
        return {"route": self.route, "precision": self.precision, "device": str(self.device)}

    def close(self) -> None:
        """Free what the route holds. The runner is unusable afterwards."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def set_tf32(enabled: bool) -> None:
    """Set TF32 for both matmuls and cuDNN convolutions (PyTorch defaults differ between the two)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def require_cuda(route: str) -> None:
    """Raise ``RouteUnavailable`` when no CUDA device is visible."""
    if not torch.cuda.is_available():
        raise RouteUnavailable(f"{route}: needs a CUDA GPU and none is visible")

"""PyTorch routes: eager (FP32 with TF32 stated, FP16, BF16) and torch.compile."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from architecture import build_model

from .base import RouteUnavailable, Runner, require_cuda, set_tf32

_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchRunner(Runner):
    """MST++ as a PyTorch module, eager or compiled.

    Args:
        state_dict: MST++ weights (float32).
        precision: ``fp32`` (TF32 off), ``tf32`` (TF32 on), ``fp16`` or ``bf16`` (whole model cast).
        device: ``cuda`` or ``cpu`` (FP16/BF16 need CUDA).
        channels_last: run convolutions in NHWC memory format.
        compile_mode: ``None`` for eager, else a ``torch.compile`` mode (``default``,
            ``reduce-overhead`` (CUDA graphs), ``max-autotune``, ``max-autotune-no-cudagraphs``).
        cudnn_benchmark: let cuDNN time its convolution algorithms for the shape (PyTorch's default
            is off; it is a free speed-up for fixed-shape inference).
        route: registry name (``make_runner`` passes it); default ``torch-<precision>`` / ``compile-<precision>[mode]``.
    """

    def __init__(self, state_dict: Mapping[str, torch.Tensor], precision: str = "fp32",
                 device: str = "cuda", channels_last: bool = False, compile_mode: str | None = None,
                 cudnn_benchmark: bool = False, route: str | None = None) -> None:
        if precision not in _DTYPES:
            raise ValueError(f"precision must be one of {sorted(_DTYPES)}, got {precision!r}")
        if route is None:
            kind = "compile" if compile_mode else "torch"
            route = f"{kind}-{precision}" + ("-cl" if channels_last else "")
            if compile_mode:
                route += f"[{compile_mode}]"
        super().__init__(device, route)
        if self.device.type == "cuda":
            require_cuda(self.route)
        elif precision in ("fp16", "bf16", "tf32"):
            raise RouteUnavailable(f"{self.route}: {precision} is only run on a CUDA GPU")
        self.precision = precision
        self.channels_last = channels_last
        self.compile_mode = compile_mode
        self.cudnn_benchmark = cudnn_benchmark
        self.input_dtype = _DTYPES[precision]
        model = build_model("mst_plus_plus")
        model.load_state_dict(state_dict, strict=True)
        model = model.eval().to(self.device, self.input_dtype)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.forward = torch.compile(model, mode=compile_mode, dynamic=False) if compile_mode else model

    def make_input(self, rgb: torch.Tensor) -> torch.Tensor:
        x = super().make_input(rgb)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def run(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            set_tf32(self.precision == "tf32")
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
        with torch.inference_mode():
            return self.forward(x)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(framework=f"torch {torch.__version__}", tf32=self.precision == "tf32",
                    channels_last=self.channels_last, compile_mode=self.compile_mode,
                    cudnn_benchmark=self.cudnn_benchmark)
        return info

    def close(self) -> None:
        del self.model, self.forward

"""Route registry: every way of running MST++ behind the one ``Runner`` interface.

    from mstpp.backends import ROUTES, make_runner
    runner = make_runner("torch-fp16", state_dict, device="cuda")

Backends import their heavy dependencies (onnxruntime, TensorRT, CUDA kernels) only when a runner of
theirs is made, so listing routes is cheap and works everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from .base import RouteUnavailable, Runner, require_cuda


@dataclass(frozen=True)
class RouteSpec:
    """One registered route: ``factory(state_dict, device, **defaults, **options) -> Runner``."""

    name: str
    description: str
    factory: Callable[..., Runner]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    cuda_only: bool = True


def _torch(state_dict, device, **kw) -> Runner:
    from .torch_eager import TorchRunner
    return TorchRunner(state_dict, device=device, **kw)


def _ort(state_dict, device, **kw) -> Runner:
    from .onnxruntime_runner import OrtRunner
    return OrtRunner(state_dict, device=device, **kw)


def _trt(state_dict, device, **kw) -> Runner:
    from .tensorrt_runner import TensorRTRunner
    return TensorRTRunner(state_dict, device=device, **kw)


def _fused(state_dict, device, **kw) -> Runner:
    from .fused import FusedRunner
    return FusedRunner(state_dict, device=device, **kw)


ROUTES: dict[str, RouteSpec] = {}


def _add(name: str, description: str, factory: Callable[..., Runner], cuda_only: bool = True, **defaults: Any) -> None:
    ROUTES[name] = RouteSpec(name, description, factory, defaults, cuda_only)


_add("torch-fp32", "PyTorch eager FP32, TF32 off (the baseline)", _torch, cuda_only=False, precision="fp32")
_add("torch-tf32", "PyTorch eager FP32 with TF32 on (PyTorch's cuDNN default)", _torch, precision="tf32")
_add("torch-fp16", "PyTorch eager, model cast to FP16", _torch, precision="fp16")
_add("torch-bf16", "PyTorch eager, model cast to BF16", _torch, precision="bf16")
_add("torch-fp16-cl", "PyTorch eager FP16, channels_last", _torch, precision="fp16", channels_last=True)
# torch.compile: the default mode compiles in about a minute; max-autotune takes five or more.
_add("compile-fp32", "torch.compile (default mode) FP32, TF32 off", _torch, precision="fp32", compile_mode="default")
_add("compile-fp16", "torch.compile (default mode) FP16", _torch, precision="fp16", compile_mode="default")
_add("compile-fp16-graphs", "torch.compile (reduce-overhead: CUDA graphs) FP16", _torch,
     precision="fp16", compile_mode="reduce-overhead")
_add("compile-fp16-autotune", "torch.compile (max-autotune, CUDA graphs) FP16", _torch,
     precision="fp16", compile_mode="max-autotune")
_add("ort-cpu", "ONNX Runtime CPU EP, FP32", _ort, cuda_only=False, provider="cpu")
_add("ort-cuda", "ONNX Runtime CUDA EP, FP32, IOBinding on device buffers", _ort, provider="cuda")
_add("ort-cuda-fp16", "ONNX Runtime CUDA EP on the FP16 ONNX (FP32 statistics), IOBinding", _ort,
     provider="cuda", precision="fp16")
_add("ort-cpu-int8", "ONNX Runtime CPU EP on the Q/DQ INT8 ONNX", _ort, cuda_only=False, provider="cpu",
     precision="int8")
_add("ort-cuda-int8", "ONNX Runtime CUDA EP on the Q/DQ INT8 ONNX, IOBinding", _ort, provider="cuda", precision="int8")
_add("ort-trt", "ONNX Runtime TensorRT EP, FP32", _ort, provider="tensorrt")
for _path in ("parser", "api"):
    for _prec in ("fp32", "fp16", "int8"):
        _add(f"trt-{_path}-{_prec}", f"TensorRT, {'ONNX parser' if _path == 'parser' else 'network API'}, "
             f"{_prec.upper()}", _trt, path=_path, precision=_prec)
_add("trt-api-fp16-plugins", "TensorRT network API FP16 with our CUDA plugins", _trt,
     path="api", precision="fp16", plugins="ours")
_add("trt-api-fp16-fused", "TensorRT network API FP16 with our fused attention and feed-forward plugins (MstMsa, MstFfn)", _trt,
     path="api", precision="fp16", plugins="fused")
for _prec in ("fp32", "fp16", "bf16"):
    _add(f"fused-{_prec}", f"our fused attention and feed-forward kernels, {_prec.upper()} storage "
         "(sampling, embedding, mapping: PyTorch eager)", _fused, precision=_prec)


def make_runner(route: str, state_dict: Mapping[str, torch.Tensor], device: str | None = None,
                **options: Any) -> Runner:
    """Create the runner for ``route`` (a key of ``ROUTES``).

    Raises:
        ValueError: unknown route name.
        RouteUnavailable: the route cannot run on this machine; the message says why.
    """
    try:
        spec = ROUTES[route]
    except KeyError:
        raise ValueError(f"unknown route {route!r}; known routes: {', '.join(ROUTES)}") from None
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.cuda_only:
        require_cuda(route)
    return spec.factory(state_dict, device, route=route, **{**spec.defaults, **options})


__all__ = ["ROUTES", "RouteSpec", "RouteUnavailable", "Runner", "make_runner"]

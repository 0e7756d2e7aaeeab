"""TensorRT routes: engines from the ONNX parser or the network API, run on torch's CUDA stream.

Without a plan file the runner builds one for the prepared shape and caches it under build/cache
(keyed by weights, route, precision, shape and TensorRT version), so a benchmark builds each engine
once. Buffers are torch tensors; ``execute_async_v3`` is enqueued on the current torch stream, so CUDA
events around ``run`` time exactly the engine.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import UserError
from .base import RouteUnavailable, Runner
from ..onnx.cache import cache_dir, cached_onnx
from ..weights import state_fingerprint

# TensorRT-RTX runs on these compute capabilities only (its support matrix); not on Hopper.
_RTX_CAPABILITIES = {(8, 0), (8, 6), (8, 9), (12, 0), (12, 1)}


class TensorRTRunner(Runner):
    """MST++ under TensorRT (10.x, 11.x or TensorRT-RTX).

    Args:
        state_dict: MST++ weights (used when the engine has to be built).
        path: ``parser`` (ONNX parser) or ``api`` (network API).
        precision: ``fp32``, ``fp16`` or ``int8``.
        plugins: ``none``, ``ours`` or ``fused`` (API path; the last two need the plugin library loaded).
        plan_path: an existing plan to load instead of building one.
        flavour: ``tensorrt`` or ``tensorrt_rtx`` (default: whichever imports first).
        route: registry name (``make_runner`` passes it).
    """

    def __init__(self, state_dict: Mapping[str, torch.Tensor], device: str = "cuda", path: str = "parser",
                 precision: str = "fp32", plugins: str = "none", plan_path: str | Path | None = None,
                 flavour: str | None = None, route: str | None = None) -> None:
        super().__init__(device, route)
        from ..trt.version import detect

        try:
            self.info = detect(flavour)
        except UserError as exc:
            raise RouteUnavailable(f"trt-{path}-{precision}: {exc}") from None
        cap = torch.cuda.get_device_capability(self.device)
        if self.info.is_rtx and cap not in _RTX_CAPABILITIES:
            raise RouteUnavailable(f"trt-{path}-{precision}: only {self.info.summary} is installed and it does "
                                   f"not run on compute capability {cap[0]}.{cap[1]}; install TensorRT 10/11")
        if plugins != "none":
            self._load_plugins()
        self.state_dict = state_dict
        self.path, self.precision, self.plugins = path, precision, plugins
        self.plan_path = Path(plan_path) if plan_path else None
        self.engine = self.context = self.runtime = None

    def _load_plugins(self) -> None:
        from ..trt.plugins import load_plugin_library

        try:
            load_plugin_library(self.info)
        except UserError as exc:
            raise RouteUnavailable(str(exc)) from None

    def _cached_plan(self, shape: tuple[int, int, int, int]) -> Path:
        from ..trt.builder import BuildSettings, ShapeRange
        from ..trt.engines import build_api_engine, build_parser_engine

        cache = cache_dir()
        tag = f"{state_fingerprint(self.state_dict)}_{self.path}_{self.precision}_{self.plugins}_" \
              f"{'x'.join(map(str, shape))}_{self.info.flavour}{self.info.version}"
        plan = cache / f"trt_{tag}.plan"
        if plan.is_file():
            return plan
        settings = BuildSettings(route=self.path, precision=self.precision, shapes=ShapeRange.static(shape),
                                 plugins=self.plugins, timing_cache=str(cache / "trt.timing.cache"))
        if self.path == "api":
            amax = self._api_ranges() if self.precision == "int8" else None
            weights = {k: v.detach().cpu().numpy() for k, v in self.state_dict.items()}
            return build_api_engine(self.info, weights, settings, plan, amax, progress=False)
        # The same cached FP32 / FP16 / Q/DQ INT8 files the ONNX Runtime routes use.
        onnx_file = cached_onnx(self.state_dict, shape, self.precision)
        return build_parser_engine(self.info, onnx_file, settings, plan, progress=False)

    def _api_ranges(self) -> dict[str, float]:
        from ..calibration import calibrate, calibration_images

        ranges = calibrate(self.state_dict, calibration_images(), progress=False)
        return {k: v[next(key for key in v if key.startswith("p"))] for k, v in ranges.items()}

    def prepare(self, shape: tuple[int, int, int, int]) -> None:
        super().prepare(shape)
        from ..trt.plan import deserialize

        plan = self.plan_path or self._cached_plan(self.shape)
        cap = torch.cuda.get_device_capability(self.device)
        try:
            self.runtime, self.engine = deserialize(self.info, plan, torch.cuda.get_device_name(self.device),
                                                    f"{cap[0]}.{cap[1]}")
        except UserError as exc:
            raise RouteUnavailable(str(exc)) from None
        trt = self.info.module
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.in_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.out_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.input_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.in_name))
        self.context = self.engine.create_execution_context()
        if not self.context.set_input_shape(self.in_name, self.shape):
            raise RouteUnavailable(f"{plan}: the engine does not accept input shape {self.shape}")
        out_shape = tuple(self.context.get_tensor_shape(self.out_name))
        self.output = torch.empty(out_shape, device=self.device,
                                  dtype=_torch_dtype(trt, self.engine.get_tensor_dtype(self.out_name)))
        self.context.set_tensor_address(self.out_name, self.output.data_ptr())

    def run(self, x: torch.Tensor) -> torch.Tensor:
        self.context.set_tensor_address(self.in_name, x.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return self.output

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(framework=self.info.summary, path=self.path, plugins=self.plugins,
                    plan=str(self.plan_path) if self.plan_path else "built and cached by the runner")
        return info

    def close(self) -> None:
        self.context = self.engine = self.runtime = None


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int8: torch.int8,
             trt.int32: torch.int32, trt.bfloat16: torch.bfloat16}
    return table[dtype]

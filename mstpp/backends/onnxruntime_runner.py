"""ONNX Runtime routes: CPU EP, CUDA EP with IOBinding on device buffers, TensorRT EP.

The runner exports (and caches) an ONNX file for the prepared shape unless it is given one. On the
CUDA EP, inputs and outputs stay on the GPU (IOBinding to torch tensors) and ONNX Runtime runs on
torch's current stream, so CUDA events around ``run`` time exactly the GPU work.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import UserError
from .base import RouteUnavailable, Runner
from ..onnx.cache import cached_onnx

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
              "tensorrt": "TensorrtExecutionProvider"}
_NP = {torch.float32: np.float32, torch.float16: np.float16}
_ORT_TYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}


class OrtRunner(Runner):
    """MST++ under onnxruntime.

    Args:
        state_dict: MST++ weights (used to export the ONNX file when ``onnx_path`` is None).
        provider: ``cpu``, ``cuda`` or ``tensorrt``.
        precision: ``fp32``, ``fp16`` (the FP16 ONNX with FP32 statistics) or ``int8`` (the explicit
            Q/DQ ONNX of the TensorRT parser route, calibrated on calibrator.py's default images).
        onnx_path: an existing MST++ ONNX file (static or dynamic) instead of a fresh export.
        profile: write onnxruntime's per-node profile (JSON) to this path prefix.
        threads: intra-op threads for the CPU EP (default: onnxruntime's choice).
        l2_form: how the exported graph writes the q/k L2 norms (``mstpp.onnx.rewrite.L2_FORMS``);
            default ``reducesum``: the CUDA EP runs ReduceL2 through a cuDNN reduction that took 93% of
            its time on an H100; Sqrt(ReduceSum(x*x)) is as fast as the GEMV form without its 30 MB of
            ones vectors (docs/ort_cuda_notes.md).
        tf32: let the CUDA EP use TF32 in MatMul/Gemm (its default is on; ours is off, so that an
            "FP32" route is FP32 like the PyTorch baseline).
        route: registry name (``make_runner`` passes it).
    """

    def __init__(self, state_dict: Mapping[str, torch.Tensor], device: str = "cuda", provider: str = "cuda",
                 precision: str = "fp32", onnx_path: str | Path | None = None, profile: str | None = None,
                 threads: int | None = None, l2_form: str = "reducesum", tf32: bool = False,
                 route: str | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RouteUnavailable(f"ort-{provider}: onnxruntime is not installed") from None
        want = _PROVIDERS[provider]
        if want not in ort.get_available_providers():
            raise RouteUnavailable(f"ort-{provider}: this onnxruntime {ort.__version__} has no {want} "
                                   f"(available: {', '.join(ort.get_available_providers())}); "
                                   + ("install onnxruntime-gpu" if provider != "cpu" else ""))
        super().__init__("cpu" if provider == "cpu" else device, route)
        if precision not in ("fp32", "fp16", "int8"):
            raise RouteUnavailable(f"ort-{provider}: precision {precision} is not supported (fp32, fp16, int8)")
        self.ort = ort
        self.provider = provider
        self.precision = precision
        self.state_dict = state_dict
        self.onnx_path = Path(onnx_path) if onnx_path else None
        self.profile = profile
        self.threads = threads
        self.l2_form = l2_form
        self.tf32 = tf32
        self.input_dtype = torch.float16 if precision == "fp16" else torch.float32
        self.session = None

    def prepare(self, shape: tuple[int, int, int, int]) -> None:
        super().prepare(shape)
        path = self.onnx_path or cached_onnx(self.state_dict, shape, precision=self.precision, l2_form=self.l2_form)
        self.model_path = path
        opts = self.ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            opts.intra_op_num_threads = self.threads
        if self.profile:
            opts.enable_profiling = True
            opts.profile_file_prefix = self.profile
        providers: list[Any]
        if self.provider == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            cuda_opts = {"device_id": self.device.index or 0,
                         # ORT's default (EXHAUSTIVE) is what PyTorch's cudnn.benchmark does too.
                         "cudnn_conv_algo_search": "EXHAUSTIVE",
                         "cudnn_conv_use_max_workspace": "1",
                         "use_tf32": "1" if self.tf32 else "0",
                         "do_copy_in_default_stream": "1",
                         "has_user_compute_stream": "1",
                         "user_compute_stream": str(torch.cuda.current_stream(self.device).cuda_stream)}
            providers = [("CUDAExecutionProvider", cuda_opts)]
            if self.provider == "tensorrt":
                providers.insert(0, ("TensorrtExecutionProvider", {"device_id": self.device.index or 0,
                                                                   "trt_fp16_enable": self.precision == "fp16"}))
        try:
            self.session = self.ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types per failure
            raise RouteUnavailable(f"ort-{self.provider}: session creation failed: "
                                   f"{str(exc).splitlines()[0][:200]}") from None
        self.in_name = self.session.get_inputs()[0].name
        self.out_name = self.session.get_outputs()[0].name
        # The FP16 ONNX keeps FP32 inputs and outputs; bind whatever the file declares.
        self.input_dtype = _ORT_TYPES[self.session.get_inputs()[0].type]
        self.output_dtype = _ORT_TYPES[self.session.get_outputs()[0].type]
        self._binding = None

    def _bind(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        out = torch.empty((b, 31, h, w), dtype=self.output_dtype, device=self.device)
        io = self.session.io_binding()
        dev = self.device.index or 0
        io.bind_input(self.in_name, "cuda", dev, _NP[x.dtype], tuple(x.shape), x.data_ptr())
        io.bind_output(self.out_name, "cuda", dev, _NP[out.dtype], tuple(out.shape), out.data_ptr())
        self._binding = (x.data_ptr(), tuple(x.shape), io, out)
        return out

    def run(self, x: torch.Tensor) -> torch.Tensor:
        if self.session is None:
            raise UserError("OrtRunner.run called before prepare()")
        if self.provider == "cpu":
            return torch.from_numpy(self.session.run([self.out_name], {self.in_name: x.numpy()})[0])
        # Re-binding costs host time; reuse the binding while the caller passes the same buffer.
        if self._binding is None or self._binding[:2] != (x.data_ptr(), tuple(x.shape)):
            self._bind(x)
        _, _, io, out = self._binding
        io.synchronize_inputs()
        self.session.run_with_iobinding(io)
        return out

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(framework=f"onnxruntime {self.ort.__version__}", provider=self.provider,
                    providers=self.session.get_providers() if self.session else None,
                    iobinding=self.provider != "cpu", tf32=self.tf32, l2_form=self.l2_form)
        return info

    def end_profiling(self) -> str | None:
        """Stop profiling and return the profile file's path (when ``profile`` was set)."""
        return self.session.end_profiling() if self.session and self.profile else None

    def close(self) -> None:
        self.session = None
        self._binding = None

"""How much memory a route needs for an input shape, how much there is, and what would fit.

Every model is ``fixed + per_pixel * B*H*W + per_image * B`` bytes, fitted to measurements (see
docs/memory_estimates.md for how each was measured):

* CPU routes: peak RSS growth of one forward pass, measured on a 2-core x86 machine (torch 2.13).
* GPU routes: device memory taken by the runner (``device_mem_mib``) in the committed H100 results of
  docs/results, fitted by tools/fit_memory_models.py; the fused FP16/BF16 routes also use their
  single-image 24 MP (4000x6000) measurement of 5.0 GB.

Routes without a model (TensorRT, ONNX Runtime CPU) are not estimated; a real out-of-memory error
still becomes an ``oom`` result row in the benchmark.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError
from .input_size import MIN_INPUT_SIZE

MIB = 1 << 20
GB = 1e9

Shape = tuple[int, int, int, int]


@dataclass(frozen=True)
class MemoryModel:
    """Peak memory of one route: ``fixed + per_pixel * B*H*W + per_image * B`` bytes.

    Attributes:
        fixed: bytes independent of the input (weights, workspaces, allocator pools).
        per_pixel: bytes per input pixel over the whole batch.
        per_image: bytes per image of the batch, whatever its size.
        source: where the coefficients come from.
    """

    fixed: float
    per_pixel: float
    per_image: float = 0.0
    source: str = ""

    def bytes_for(self, shape: Shape) -> float:
        """Estimated peak bytes for an input of ``shape`` = (B, 3, H, W)."""
        b, _, h, w = shape
        return self.fixed + self.per_pixel * b * h * w + self.per_image * b

    def largest_size(self, budget: float, batch: int, height: int, width: int) -> tuple[int, int] | None:
        """Largest (H', W') with the aspect ratio of ``height`` x ``width`` whose batch fits ``budget``
        bytes, or None when not even the smallest input fits."""
        room = budget - self.fixed - self.per_image * batch
        if room <= 0:
            return None
        scale = math.sqrt(room / (self.per_pixel * batch * height * width))
        h, w = int(height * scale), int(width * scale)
        if h < MIN_INPUT_SIZE or w < MIN_INPUT_SIZE:
            return None
        return h, w


# --- CPU: measured ---------------------------------------------------------------------------------
# Peak RSS growth (VmHWM after the forward minus VmRSS before it, high-water mark reset first) of one
# torch.inference_mode forward of MST_Plus_Plus in float32, 2 threads, torch 2.13 on a 2-core x86
# machine, at 1x128x128, 1x256x256, 1x512x512, 2x512x512, 1x768x768 and 1x1024x1024 (the numbers are in
# docs/memory_estimates.md). Least-squares slope, intercept lifted above every point: 352 MB + 1833 B
# per pixel, i.e. about 44 GB for one 24 MP (4000x6000) image.
CPU_MODELS: dict[str, MemoryModel] = {
    "torch-fp32": MemoryModel(fixed=352e6, per_pixel=1833.0,
                              source="peak RSS growth measured on a 2-core x86 CPU, torch 2.13"),
}

# --- GPU: fitted from committed H100 results ---------------------------------------------------------
#: Result files (in docs/results) each GPU route's coefficients are fitted from.
GPU_SOURCES: dict[str, tuple[str, ...]] = {
    "torch-fp32": ("h100-torch.json",),
    "torch-tf32": ("h100-torch.json",),
    "torch-fp16": ("h100-torch.json",),
    "torch-bf16": ("h100-torch.json",),
    "torch-fp16-cl": ("h100-torch.json",),
    "compile-fp32": ("h100-compile-fp32.json", "h100-compile-fp32-b8.json"),
    "compile-fp16": ("h100-compile-fp16.json",),
    "compile-fp16-graphs": ("h100-compile-graphs.json",),
    "compile-fp16-autotune": tuple(f"h100-compile-autotune-b{b}.json" for b in (1, 2, 4, 8, 16)),
    "fused-fp32": ("h100-step6b.json",),
    "fused-fp16": ("h100-step6b.json",),
    "fused-bf16": ("h100-step6b.json",),
    "ort-cuda": ("h100-ort.json",),
    "ort-cuda-fp16": ("h100-ort.json",),
    "ort-cuda-int8": ("h100-ort-int8-all.json",),
}

#: (fixed MiB, bytes per pixel) as printed by tools/fit_memory_models.py from GPU_SOURCES.
GPU_FITS: dict[str, tuple[float, float]] = {
    "torch-fp32": (21, 3435),
    "torch-tf32": (34, 2666),
    "torch-fp16": (31, 1333),
    "torch-bf16": (0, 1791),
    "torch-fp16-cl": (36, 1366),
    "compile-fp32": (212, 2546),
    "compile-fp16": (20, 1052),
    "compile-fp16-graphs": (120, 947),
    "compile-fp16-autotune": (217, 1137),
    "fused-fp32": (106, 1213),
    "fused-fp16": (78, 747),
    "fused-bf16": (78, 747),
    "ort-cuda": (1086, 9075),
    "ort-cuda-fp16": (369, 8400),
    "ort-cuda-int8": (769, 16249),
}

#: The fused FP16 route measured on one 4000x6000 image (24 MP) on an H100: 5.0 GB of device memory.
FUSED_24MP_BYTES = 5.0 * GB
FUSED_24MP_PIXELS = 4000 * 6000


def _fused_large_image(fixed_mib: float, per_px: float, batch_pixels: int = 512 * 482) -> MemoryModel:
    """The batch fit at 512x482 charges every pixel what a 512x482 image costs per image; one 24 MP image
    takes far less per pixel. Split the per-image slope into a per-image and a per-pixel part so that
    the model meets both the batch measurements and the 24 MP one."""
    fixed = fixed_mib * MIB
    slope_per_image = per_px * batch_pixels
    per_pixel = (FUSED_24MP_BYTES - fixed - slope_per_image) / (FUSED_24MP_PIXELS - batch_pixels)
    per_image = slope_per_image - per_pixel * batch_pixels
    return MemoryModel(fixed, per_pixel, per_image,
                       source=f"fit of {', '.join(GPU_SOURCES['fused-fp16'])} and 5.0 GB at 24 MP (H100)")


def _gpu_models() -> dict[str, MemoryModel]:
    models = {}
    for route, (fixed_mib, per_px) in GPU_FITS.items():
        if route in ("fused-fp16", "fused-bf16"):
            models[route] = _fused_large_image(fixed_mib, per_px)
        else:
            models[route] = MemoryModel(fixed_mib * MIB, per_px,
                                        source=f"fit of docs/results/{', '.join(GPU_SOURCES[route])} (H100)")
    return models


GPU_MODELS: dict[str, MemoryModel] = _gpu_models()


def route_device_type(route: str, device: str | torch.device) -> str:
    """``cpu`` or ``cuda``: where ``route`` keeps its tensors when run on ``device``."""
    if route.startswith("ort-cpu"):
        return "cpu"
    return torch.device(device).type


def memory_model(route: str, device: str | torch.device) -> MemoryModel | None:
    """The model of ``route`` on ``device``, or None when it has not been measured."""
    table = CPU_MODELS if route_device_type(route, device) == "cpu" else GPU_MODELS
    return table.get(route)


def estimate_bytes(route: str, shape: Shape, device: str | torch.device) -> float | None:
    """Estimated peak bytes of ``route`` for input ``shape`` (B, 3, H, W) on ``device``; None if unknown."""
    model = memory_model(route, device)
    return None if model is None else model.bytes_for(shape)


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_host_bytes() -> int:
    """Memory a new allocation can get: /proc/meminfo MemAvailable, or what the cgroup limit leaves
    (v2 memory.max - memory.current, v1 limit - usage), whichever is smaller."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    if avail is None:  # not Linux: ask psutil if present, else assume plenty (no refusal)
        try:
            import psutil

            avail = int(psutil.virtual_memory().available)
        except ImportError:
            avail = 1 << 62
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < (1 << 60):
            avail = min(avail, max(limit - usage, 0))
    return avail


def available_bytes(device: str | torch.device) -> int:
    """Free memory on ``device``: host memory for ``cpu``, cudaMemGetInfo's free bytes for a GPU."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    return available_host_bytes()


class MemoryShortage(UserError):
    """The estimated peak memory of a route for a shape exceeds what the device has free."""


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


def check_fits(route: str, shape: Shape, device: str | torch.device, what: str = "the input") -> float | None:
    """Raise MemoryShortage (one line: need, have, what would fit) when ``route`` cannot fit ``shape``.

    Returns the estimate in bytes (None when the route has no memory model: nothing is checked).
    """
    model = memory_model(route, device)
    if model is None:
        return None
    need = model.bytes_for(shape)
    dev_type = route_device_type(route, device)
    have = available_bytes("cpu" if dev_type == "cpu" else device)
    if need <= have:
        return need
    b, _, h, w = shape
    where = "in RAM" if dev_type == "cpu" else f"on {torch.device(device)}"
    options = []
    if b > 1:
        fit_b = max((n for n in range(1, b) if model.bytes_for((n, 3, h, w)) <= have), default=0)
        if fit_b:
            options.append(f"a batch of {fit_b}")
    size = model.largest_size(0.9 * have, 1, h, w)  # 10% headroom: the estimate is not exact
    if size:
        options.append(f"an image of at most {size[0]}x{size[1]} (same aspect ratio)")
    if dev_type == "cpu":
        fused = GPU_MODELS.get("fused-fp16")
        gpu = f" (about {_gb(fused.bytes_for((b, 3, h, w)))} of GPU memory)" if fused else ""
        options.append(f"on a machine with a GPU, --route fused-fp16{gpu}")
    fits = "; what would fit: " + " or ".join(options) if options else "; not even the smallest input fits"
    raise MemoryShortage(f"{what}: {route} needs about {_gb(need)} {where} for a {b}x3x{h}x{w} batch, "
                         f"and {_gb(have)} is available{fits}")

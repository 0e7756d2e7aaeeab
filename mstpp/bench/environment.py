"""What the machine was when a benchmark ran: GPU, driver, clocks, library versions, TF32 flags.

Every probe is optional and never raises: a missing ``nvidia-smi``, package or GPU leaves its field
``None``. Hostnames, user names and file paths are deliberately not recorded, so result files can be
committed as they are.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from typing import Any, Callable

#: nvidia-smi fields (``--query-gpu``), mapped to the keys we store. Units are fixed by ``nounits``.
_SMI_FIELDS = {
    "uuid": "uuid",
    "name": "smi_name",
    "driver_version": "driver",
    "pstate": "pstate",
    "clocks.sm": "sm_clock_mhz",
    "clocks.mem": "mem_clock_mhz",
    "clocks.max.sm": "sm_clock_max_mhz",
    "clocks.max.mem": "mem_clock_max_mhz",
    "power.draw": "power_draw_w",
    "power.limit": "power_limit_w",
    "temperature.gpu": "temperature_c",
}

#: Optional packages whose versions matter for the routes, probed by import name.
_OPTIONAL_MODULES = ("onnxruntime", "onnx", "tensorrt", "tensorrt_rtx", "numpy")


def _safe(probe: Callable[[], Any]) -> Any:
    """Run one probe; any failure means "unknown" (None), never a failed benchmark."""
    try:
        return probe()
    except Exception:
        return None


def _module_version(name: str) -> str | None:
    """``name.__version__`` if the module can be imported here, else None."""
    if importlib.util.find_spec(name) is None:
        return None
    module = importlib.import_module(name)
    return str(getattr(module, "__version__", "unknown"))


def _number(text: str) -> float | str | None:
    text = text.strip()
    if text in ("", "[N/A]", "N/A", "[Not Supported]"):
        return None
    try:
        return float(text)
    except ValueError:
        return text


def query_nvidia_smi(uuid: str | None = None, timeout_s: float = 10.0) -> dict[str, Any] | None:
    """Clocks (MHz), power (W), temperature (C), driver and P-state of one GPU, or None.

    Args:
        uuid: pick the GPU whose UUID matches (torch's ``device_properties.uuid``); default: the first.
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    cmd = [exe, f"--query-gpu={','.join(_SMI_FIELDS)}", "--format=csv,noheader,nounits"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True).stdout
    rows = [[c.strip() for c in line.split(",")] for line in out.strip().splitlines() if line.strip()]
    rows = [r for r in rows if len(r) == len(_SMI_FIELDS)]
    if not rows:
        return None
    chosen = rows[0]
    if uuid:
        # torch prints UUIDs without the "GPU-" prefix nvidia-smi uses.
        bare = uuid.removeprefix("GPU-")
        chosen = next((r for r in rows if r[0].removeprefix("GPU-") == bare), rows[0])
    info = {key: _number(v) for key, v in zip(_SMI_FIELDS.values(), chosen)}
    info["driver"] = chosen[list(_SMI_FIELDS).index("driver_version")]  # keep "550.54.15" a string
    info.pop("uuid", None)  # identifies one physical board; not needed to read a benchmark
    return info


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _torch_info(device: str | None) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cudnn": _safe(lambda: torch.backends.cudnn.version()),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if not torch.cuda.is_available() or (device is not None and not str(device).startswith("cuda")):
        return info
    dev = torch.device(device or "cuda")
    props = torch.cuda.get_device_properties(dev)
    info.update(
        gpu=props.name,
        compute_capability=f"{props.major}.{props.minor}",
        gpu_memory_gib=round(props.total_memory / 2**30, 2),
        sm_count=props.multi_processor_count,
        l2_cache_bytes=getattr(props, "L2_cache_size", None),
    )
    info["_uuid"] = str(getattr(props, "uuid", "") or "")
    return info


def capture_environment(device: str | None = None) -> dict[str, Any]:
    """A JSON-ready description of this machine and software for ``device`` ("cuda", "cuda:1", "cpu").

    TF32 flags are the global PyTorch flags at capture time; each runner states its own TF32 setting in
    its ``describe()``, which is what a result row's ``settings`` holds.
    """
    env: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "python": platform.python_version(),
        "os": platform.platform(terse=True),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    env.update(_safe(lambda: _torch_info(device)) or {})
    uuid = env.pop("_uuid", None)
    if env.get("gpu"):
        smi = _safe(lambda: query_nvidia_smi(uuid))
        if smi:
            env.update(smi)
    for name in _OPTIONAL_MODULES:
        version = _safe(lambda n=name: _module_version(n))
        if version is not None:
            env[name] = version
    if "onnxruntime" in sys.modules:
        env["onnxruntime_providers"] = _safe(lambda: sys.modules["onnxruntime"].get_available_providers())
    return env


def gpu_state(device: str | None = None) -> dict[str, Any] | None:
    """nvidia-smi's clocks, power and temperature for ``device`` now, or None; never raises."""
    def probe() -> dict[str, Any] | None:
        import torch

        props = torch.cuda.get_device_properties(torch.device(device or "cuda"))
        return query_nvidia_smi(str(getattr(props, "uuid", "") or "") or None)

    return _safe(probe)


def environment_slug(env: dict[str, Any]) -> str:
    """A short file-name-safe name of the hardware, e.g. ``nvidia-h100-80gb-hbm3`` or ``cpu``."""
    name = str(env.get("gpu") or "cpu").lower()
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-") or "cpu"

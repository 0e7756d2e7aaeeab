"""One way to turn a network into a plan: strongly typed, workspace limit, timing cache, shape profile,
progress bar, and a JSON beside the plan that says how it was built.

Used by both routes (ONNX parser and network API); they differ only in how the network is filled.
"""
from __future__ import annotations

import datetime as _dt
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..errors import UserError
from ..input_size import check_input_size
from .version import TrtInfo

Shape = tuple[int, int, int, int]


class BuildError(UserError):
    """The builder rejected the network; the message carries TensorRT's own error lines."""


@dataclass
class ShapeRange:
    """Input shapes (B, 3, H, W) of the optimisation profile; all equal for a static engine."""

    min: Shape
    opt: Shape
    max: Shape

    @classmethod
    def static(cls, shape: Shape) -> "ShapeRange":
        return cls(tuple(shape), tuple(shape), tuple(shape))  # type: ignore[arg-type]

    @property
    def is_static(self) -> bool:
        return self.min == self.opt == self.max

    def validate(self) -> None:
        for lo, mid, hi in zip(self.min, self.opt, self.max):
            if not 1 <= lo <= mid <= hi:
                raise UserError(f"shape range must satisfy 1 <= min <= opt <= max per dimension, got "
                                f"min {self.min}, opt {self.opt}, max {self.max}")
        if self.min[1] != 3:
            raise UserError("MST++ takes 3 input channels")
        # opt and max are at least min per dimension, so the profile's minimum decides.
        check_input_size(self.min[2], self.min[3],
                         "the engine's smallest input" if not self.is_static else "the engine input")


@dataclass
class BuildSettings:
    """Everything that decides what the builder produces; saved as JSON beside the plan."""

    route: str  # "parser" or "api"
    precision: str  # "fp32", "fp16" or "int8"
    shapes: ShapeRange
    workspace_gib: float = 4.0
    tf32: bool = True
    optimization_level: int | None = None
    timing_cache: str | None = None
    plugins: str = "none"
    notes: dict[str, Any] = field(default_factory=dict)


def make_logger(trt, verbose: bool = False):
    """A TensorRT logger that prints warnings (or everything when ``verbose``) and keeps errors."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg: str) -> None:  # noqa: D401 - TensorRT callback
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(msg)
                print(f"[TensorRT] ERROR: {msg}")
            elif severity == trt.ILogger.Severity.WARNING or verbose:
                print(f"[TensorRT] {severity.name}: {msg}")

    return _Logger()


def make_progress_monitor(trt):
    """A progress monitor that shows each builder phase as a tqdm bar (nested phases indented)."""
    from tqdm import tqdm

    class _Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, Any] = {}

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            depth = 0 if parent_phase is None else len(self.bars)
            self.bars[phase_name] = tqdm(total=num_steps, desc=("  " * depth) + phase_name, leave=depth == 0,
                                         position=depth, dynamic_ncols=True)

        def step_complete(self, phase_name, step) -> bool:
            bar = self.bars.get(phase_name)
            if bar is not None:
                bar.update(step + 1 - bar.n)
            return True  # never cancel

        def phase_finish(self, phase_name) -> None:
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return _Progress()


def create_network(info: TrtInfo, builder):
    """A strongly typed network: TensorRT 10 opts in with the flag; 11 and TensorRT-RTX always are."""
    trt = info.module
    if info.strongly_typed_only:
        return builder.create_network(0)
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))


def _device_description(info: TrtInfo) -> dict[str, Any]:
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return {"gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}
    except Exception:  # a plan can be built without torch seeing a GPU
        pass
    if info.is_rtx:
        return {"gpu": None, "compute_capability": None,
                "note": "TensorRT-RTX ahead-of-time build on the CPU (runs on its supported RTX-class GPUs)"}
    return {"gpu": None, "compute_capability": None}


def build_plan(info: TrtInfo, fill_network: Callable[[Any, Any], str], settings: BuildSettings,
               plan_path: str | Path, verbose: bool = False, progress: bool = True) -> Path:
    """Build and save a plan.

    Args:
        info: the detected TensorRT.
        fill_network: ``fill_network(network, logger) -> input_name`` adds every layer (parser or API).
        settings: precision, shapes, workspace, cache...
        plan_path: where the plan goes; ``<plan_path>.json`` gets the build record.

    Raises:
        BuildError: the network or the build failed; TensorRT's error lines are in the message.
    """
    trt = info.module
    settings.shapes.validate()
    logger = make_logger(trt, verbose)
    builder = trt.Builder(logger)
    network = create_network(info, builder)
    input_name = fill_network(network, logger)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gib * (1 << 30)))
    if not settings.tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if settings.optimization_level is not None:
        config.builder_optimization_level = settings.optimization_level
    cache = _load_timing_cache(config, settings.timing_cache)
    if not settings.shapes.is_static or any(d == -1 for d in network.get_input(0).shape):
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, settings.shapes.min, settings.shapes.opt, settings.shapes.max)
        config.add_optimization_profile(profile)
    if progress and sys.stderr.isatty():  # a redirected log would get one line per bar update
        config.progress_monitor = make_progress_monitor(trt)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        detail = "; ".join(logger.errors[-3:]) or "no error text from TensorRT"
        raise BuildError(f"TensorRT could not build the {settings.route} {settings.precision} engine: {detail}")
    plan_path = Path(plan_path)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(memoryview(plan))
    if cache is not None and settings.timing_cache:
        Path(settings.timing_cache).write_bytes(memoryview(config.get_timing_cache().serialize()))
    record = {
        "toolkit": f"mstpp {__version__}",
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tensorrt": {"flavour": info.flavour, "version": info.version},
        "device": _device_description(info),
        "input": {"name": input_name, "min": list(settings.shapes.min), "opt": list(settings.shapes.opt),
                  "max": list(settings.shapes.max)},
        "settings": {k: v for k, v in asdict(settings).items() if k != "shapes"},
        "layers": network.num_layers,
        "plan_bytes": plan_path.stat().st_size,
    }
    plan_record_path(plan_path).write_text(json.dumps(record, indent=2) + "\n")
    return plan_path


def plan_record_path(plan_path: str | Path) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + ".json")


def cuda_device_usable() -> bool:
    """True when the CUDA driver loads, initialises and sees at least one GPU (no torch needed)."""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    return False


def timing_cache_problem(path: str | None) -> str | None:
    """Why the timing cache at ``path`` cannot be used on this machine, or None when it can.

    Reading a non-empty timing cache makes TensorRT(-RTX) open a CUDA stream; with no usable GPU that
    fails inside TensorRT (cudaError 35 "CUDA driver version is insufficient") and it logs two ERROR
    lines before going on without the cache. A CPU-only (ahead-of-time) build times no tactics, so the
    cache would hold nothing either: it is skipped up front instead.
    """
    if path and not cuda_device_usable():
        return (f"timing cache {path} not used: reading one needs a CUDA GPU and none is usable here "
                "(a CPU-only build times no tactics, so nothing is lost)")
    return None


def _load_timing_cache(config, path: str | None):
    """Attach a timing cache (read from ``path`` when it exists) so rebuilds skip tactic timing."""
    problem = timing_cache_problem(path)
    if problem:
        print(problem)
        return None
    blob = b""
    if path and Path(path).is_file():
        blob = Path(path).read_bytes()
    cache = config.create_timing_cache(blob)
    if cache is None:
        return None
    config.set_timing_cache(cache, ignore_mismatch=True)
    return cache

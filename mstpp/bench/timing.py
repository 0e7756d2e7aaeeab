"""Timing of one callable: warm-up, then a measured loop; CUDA events for GPU work, perf_counter on CPU.

Each timed run is synchronised before the next starts, so a sample is the latency of one request
(one batch) with nothing else in flight, which is what the latency tables report; throughput is
derived as batch / median. Also here: CUDA-graph capture of a callable, the end-to-end step with
pinned host buffers, and device-memory probes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .. import cuda_graphs

#: What ``TimingResult.method`` can say.
CUDA_EVENTS = "cuda-events"
WALL_SYNC = "wall-clock (perf_counter, synchronised)"
PERF_COUNTER = "perf_counter"


@dataclass(frozen=True)
class TimingConfig:
    """Bounds of one measurement (docs/DESIGN.md section 7).

    Warm-up lasts until both ``warmup_ms`` have passed and ``warmup_runs`` runs were made. Measuring
    stops as soon as ``min_ms`` have passed or ``min_runs`` runs were timed, whichever comes first, but
    not before ``floor_runs`` runs (so a run longer than ``min_ms`` still gives a few samples).
    """

    warmup_ms: float = 200.0
    warmup_runs: int = 20
    min_ms: float = 3000.0
    min_runs: int = 100
    floor_runs: int = 5

    def __post_init__(self) -> None:
        if self.warmup_ms < 0 or self.min_ms < 0:
            raise ValueError("timing durations must be >= 0 ms")
        if self.warmup_runs < 0 or self.min_runs < 1 or self.floor_runs < 1:
            raise ValueError("need warmup_runs >= 0, min_runs >= 1 and floor_runs >= 1")

    def as_dict(self) -> dict[str, float]:
        return {"warmup_ms": self.warmup_ms, "warmup_runs": self.warmup_runs, "min_ms": self.min_ms,
                "min_runs": self.min_runs, "floor_runs": self.floor_runs}


@dataclass
class TimingResult:
    """Samples of one measurement, one per run, in milliseconds.

    Attributes:
        samples_ms: the reported latency per run (CUDA events, or wall clock; see ``method``).
        wall_ms: host wall clock of the same runs, each synchronised.
        warmup_runs / warmup_ms: how much warm-up was actually done.
    """

    samples_ms: list[float]
    wall_ms: list[float]
    method: str
    warmup_runs: int
    warmup_ms: float


def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _warm_up(fn: Callable[[], Any], sync: Callable[[], None], config: TimingConfig) -> tuple[int, float]:
    runs, start = 0, time.perf_counter()
    while True:
        elapsed_ms = (time.perf_counter() - start) * 1e3
        if runs >= config.warmup_runs and elapsed_ms >= config.warmup_ms:
            return runs, elapsed_ms
        fn()
        sync()
        runs += 1


def _done(runs: int, spent_ms: float, config: TimingConfig) -> bool:
    if runs < min(config.floor_runs, config.min_runs):
        return False
    return runs >= config.min_runs or spent_ms >= config.min_ms


def time_callable(fn: Callable[[], Any], device: str | torch.device, config: TimingConfig = TimingConfig(),
                  use_events: bool = True) -> TimingResult:
    """Warm ``fn`` up, then time it run by run.

    Args:
        fn: one inference; on CUDA it enqueues work on the current stream (it may return early).
        device: where the work runs; CPU work is timed with ``time.perf_counter``.
        use_events: on CUDA, report CUDA-event times of the work on the current stream (the GPU
            time); ``False`` reports the synchronised host wall clock instead (end-to-end timing).
    """
    device = torch.device(device)
    sync = _synchronizer(device)
    warm_runs, warm_ms = _warm_up(fn, sync, config)
    events = device.type == "cuda" and use_events
    if events:
        stream = torch.cuda.current_stream(device)
        start_ev = torch.cuda.Event(enable_timing=True)
        end_ev = torch.cuda.Event(enable_timing=True)
    samples: list[float] = []
    wall: list[float] = []
    spent_ms = 0.0
    while not _done(len(samples), spent_ms, config):
        t0 = time.perf_counter()
        if events:
            start_ev.record(stream)
            fn()
            end_ev.record(stream)
            end_ev.synchronize()
        else:
            fn()
            sync()
        wall_ms = (time.perf_counter() - t0) * 1e3
        wall.append(wall_ms)
        samples.append(start_ev.elapsed_time(end_ev) if events else wall_ms)
        spent_ms += wall_ms
    method = CUDA_EVENTS if events else (WALL_SYNC if device.type == "cuda" else PERF_COUNTER)
    return TimingResult(samples, wall, method, warm_runs, warm_ms)


@dataclass
class GraphCapture:
    """Outcome of :func:`capture_cuda_graph`: ``replay`` is None when capture failed, and ``reason``
    says why (reported as a skipped row, never dropped silently)."""

    replay: Callable[[], torch.Tensor] | None
    reason: str = ""
    graph: Any = field(default=None, repr=False)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``ExcType: first line of the message``, at most ``limit`` characters."""
    text = str(exc).strip().splitlines()
    msg = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def capture_cuda_graph(fn: Callable[[], torch.Tensor], device: str | torch.device, warmup_runs: int = 3,
                       tolerance: float = 1e-2) -> GraphCapture:
    """Capture one call of ``fn`` into a CUDA graph and check that replaying it reproduces ``fn``.

    ``fn`` must read a static input and return the output tensor; replay writes to the same output.
    The check catches routes whose work is not on the capturing stream (replay would then compute
    nothing): the replayed output must match an eager output within ``tolerance`` x max(1, max|y|).
    """
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return GraphCapture(None, "CUDA graphs need a CUDA device")
    try:
        reference = fn().detach().float().clone()
        graph, static_out = cuda_graphs.capture(fn, device, warmup_runs)
        graph.replay()
        torch.cuda.synchronize(device)
        err = (static_out.detach().float() - reference).abs().max().item()
        scale = max(1.0, reference.abs().max().item())
    except Exception as exc:  # capture fails in many ways (sync inside, host copies, other streams)
        _recover_after_capture(device)
        return GraphCapture(None, f"CUDA graph capture failed: {one_line(exc)}")
    if not err <= tolerance * scale:  # also catches NaN
        return GraphCapture(None, f"CUDA graph replay differs from an eager run (max abs diff {err:.3g}); "
                                  "the route's work is not captured on the current stream")

    def replay() -> torch.Tensor:
        graph.replay()
        return static_out

    return GraphCapture(replay, "", graph)


def _recover_after_capture(device: torch.device) -> None:
    # A failed capture can leave the stream in capture mode or an error pending; clear what we can so
    # the next route starts clean.
    try:
        torch.cuda.synchronize(device)
    except Exception:
        pass


class EndToEndStep:
    """One end-to-end request: pinned host input -> device -> run -> pinned host output.

    The copies use the runner's own ``make_input`` (its dtype/layout conversion included) and a
    non-blocking device->host copy into a pinned buffer; the timing loop synchronises each run.
    """

    def __init__(self, runner: Any, rgb: torch.Tensor) -> None:
        self.runner = runner
        self.host_in = rgb.detach().to("cpu", torch.float32).contiguous().pin_memory()
        y = runner.run(runner.make_input(self.host_in))
        self.host_out = torch.empty(y.shape, dtype=y.dtype, device="cpu").pin_memory()

    def __call__(self) -> torch.Tensor:
        y = self.runner.run(self.runner.make_input(self.host_in))
        self.host_out.copy_(y, non_blocking=True)
        return self.host_out


class MemoryProbe:
    """Device memory used by one runner, in MiB, two ways (see ``Row.peak_torch_mib``/``device_mem_mib``).

    ``start()`` once before the runner is made; ``begin_phase()`` before each timed phase;
    ``sample()`` at points of interest; ``phase_result()`` after the phase.
    """

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.enabled = self.device.type == "cuda" and torch.cuda.is_available()
        self.free_before: int | None = None
        self.min_free: int | None = None

    @property
    def method(self) -> str:
        if not self.enabled:
            return "not measured (CPU)"
        return ("peak_torch_mib: torch.cuda.max_memory_allocated during the phase; device_mem_mib: drop "
                "of cudaMemGetInfo free memory since before the runner was made (whole device)")

    def start(self) -> None:
        if self.enabled:
            torch.cuda.synchronize(self.device)
            self.free_before = torch.cuda.mem_get_info(self.device)[0]
            self.begin_phase()

    def begin_phase(self) -> None:
        if self.enabled:
            torch.cuda.reset_peak_memory_stats(self.device)
            self.min_free = None
            self.sample()

    def sample(self) -> None:
        if self.enabled:
            free = torch.cuda.mem_get_info(self.device)[0]
            self.min_free = free if self.min_free is None else min(self.min_free, free)

    def phase_result(self) -> dict[str, Any]:
        """``peak_torch_mib``, ``device_mem_mib`` (None on CPU) and ``mem_method``."""
        if not self.enabled:
            return {"peak_torch_mib": None, "device_mem_mib": None, "mem_method": self.method}
        self.sample()
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        used = None
        if self.free_before is not None and self.min_free is not None:
            used = max(0, self.free_before - self.min_free) / 2**20
        return {"peak_torch_mib": peak, "device_mem_mib": used, "mem_method": self.method}

"""Benchmark routes through the runner interface and turn every outcome into result rows.

A route that cannot run here becomes a ``skipped`` row with its reason, running out of memory an
``oom`` row (after freeing what the runner held; a batch whose estimated peak memory exceeds the free
memory is an ``oom`` row without being run, see ``mstpp.memory``), anything else an ``error`` row with a one-line
reason; the benchmark as a whole never stops because of one route.
"""
from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from ..backends import RouteUnavailable, Runner, make_runner
from ..memory import MemoryShortage, check_fits
from .results import BASELINE_ROUTE, Row
from .stats import median, summarize
from .timing import (EndToEndStep, MemoryProbe, TimingConfig, TimingResult, capture_cuda_graph,
                     one_line, time_callable)

RunnerFactory = Callable[..., Runner]


@dataclass
class BenchOptions:
    """How each (route, batch) job is measured.

    Attributes:
        timing: warm-up and measurement bounds.
        cuda_graphs: also time a CUDA-graph-replayed variant (rows with ``cuda_graph=True``).
        e2e: also time end to end with host<->device copies (rows with ``mode='e2e'``).
        runner_options: extra keyword arguments for ``make_runner`` (route defaults apply first).
        seed: seed of the random RGB input (uniform in [0, 1]).
    """

    timing: TimingConfig = field(default_factory=TimingConfig)
    cuda_graphs: bool = False
    e2e: bool = False
    runner_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def is_oom(exc: BaseException) -> bool:
    """True for torch's OutOfMemoryError and for other libraries' errors that say "out of memory"."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "out_of_memory" in text


def classify(exc: BaseException) -> tuple[str, str]:
    """(status, one-line reason) for an exception raised while benchmarking a route."""
    if isinstance(exc, MemoryShortage):
        return "oom", f"not run: {exc}"
    if isinstance(exc, RouteUnavailable):
        return "skipped", str(exc).strip().splitlines()[0] if str(exc).strip() else "route unavailable"
    if is_oom(exc):
        return "oom", one_line(exc)
    if isinstance(exc, ImportError):
        # A backend module or package that is not installed (or not written yet) in this checkout.
        return "skipped", f"not importable here: {one_line(exc)}"
    return "error", one_line(exc)


def free_device_memory() -> None:
    """Give cached memory back after a failed or finished route, so the next one starts clean."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def spin_up(device: torch.device, seconds: float = 2.0) -> None:
    """Keep the GPU busy for ``seconds`` so the first route is not measured while clocks ramp up
    from idle (the per-route warm-up of 200 ms is too short for that)."""
    if device.type != "cuda":
        return
    import time

    a = torch.randn(4096, 4096, device=device)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = torch.tanh(a @ a)
        torch.cuda.synchronize(device)


def random_rgb(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A reproducible RGB batch [B, 3, H, W], float32 in [0, 1], on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((batch, 3, height, width), generator=gen, dtype=torch.float32)


def _stat_fields(timing: TimingResult, batch: int) -> dict[str, Any]:
    stats = summarize(timing.samples_ms, batch)
    stats.update(timing_method=timing.method, warmup_runs=timing.warmup_runs, warmup_ms=timing.warmup_ms,
                 wall_median_ms=median(timing.wall_ms))
    return stats


def _derive(template: Row, **changes: Any) -> Row:
    """A copy of ``template`` with ``changes`` (its own settings dict, so rows never share one)."""
    return dataclasses.replace(template, settings=dict(template.settings), **changes)


def _check_output(y: Any, batch: int, height: int, width: int) -> None:
    expected = (batch, 31, height, width)
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != expected:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"runner returned {got}, expected a tensor of shape {expected}")


def _measure(template: Row, step: Callable[[], Any], device: torch.device, config: TimingConfig,
             probe: MemoryProbe, use_events: bool = True, **variant: Any) -> Row:
    """Time ``step`` into a row; any exception becomes that row's status instead of propagating."""
    probe.begin_phase()
    try:
        timing = time_callable(step, device, config, use_events=use_events)
        outcome = _stat_fields(timing, template.batch)
    except Exception as exc:
        status, reason = classify(exc)
        outcome = {"status": status, "reason": reason}
    return _derive(template, **variant, **outcome, **probe.phase_result())


def benchmark_route(route: str, state_dict: Mapping[str, torch.Tensor], batch: int, height: int, width: int,
                    device: str | None = None, options: BenchOptions | None = None, repeat: int = 0,
                    factory: RunnerFactory = make_runner) -> list[Row]:
    """Measure one route at one input shape.

    Args:
        route: a key of ``mstpp.backends.ROUTES``.
        state_dict: MST++ weights.
        batch, height, width: input shape [batch, 3, height, width].
        device: ``cuda``/``cuda:N``/``cpu``; default CUDA when available.
        options: what to measure (graph and end-to-end variants) and how long.
        repeat: stored in the rows (1 for the baseline's repeat measurement).
        factory: ``make_runner`` or a stand-in with its signature (tests).

    Returns:
        the ``gpu`` row first, then the graph and ``e2e`` rows when asked for. If the runner cannot be
        made or prepared, a single row whose status says why.
    """
    options = options or BenchOptions()
    dev = torch.device(device or default_device())
    template = Row(route=route, batch=batch, height=height, width=width, device=str(dev), repeat=repeat)
    probe = MemoryProbe(dev)
    runner: Runner | None = None
    rows: list[Row] = []
    try:
        probe.start()
        # A batch estimated not to fit is an ``oom`` row before anything is allocated.
        check_fits(route, (batch, 3, height, width), dev, what="estimate")
        runner = factory(route, state_dict, device=str(dev), **options.runner_options)
        runner.prepare((batch, 3, height, width))
        template.settings = dict(runner.describe())
        x = runner.make_input(random_rgb(batch, height, width, options.seed))
        _check_output(runner.run(x), batch, height, width)
        probe.sample()
        rows.append(_measure(template, lambda: runner.run(x), dev, options.timing, probe))
        if options.cuda_graphs:
            rows.append(_guarded(template, probe, lambda: _graph_row(template, runner, x, dev, options.timing,
                                                                      probe), cuda_graph=True))
        if options.e2e:
            rows.append(_guarded(template, probe, lambda: _e2e_row(template, runner, dev, options, probe),
                                 mode="e2e"))
    except Exception as exc:
        status, reason = classify(exc)
        rows = [_derive(template, status=status, reason=reason, **probe.phase_result())]
    finally:
        x = None  # drop the input before freeing, or its memory stays cached
        if runner is not None:
            try:
                runner.close()
            except Exception:
                pass  # closing a half-built runner must not hide the row that says what went wrong
        runner = None
        free_device_memory()
    return rows


def _guarded(template: Row, probe: MemoryProbe, phase: Callable[[], Row], **variant: Any) -> Row:
    """Run one optional phase; if it fails, a row for that variant says why and the others stand."""
    try:
        return phase()
    except Exception as exc:
        status, reason = classify(exc)
        row = _derive(template, **variant, status=status, reason=reason, **probe.phase_result())
    free_device_memory()
    return row


def _graph_row(template: Row, runner: Runner, x: torch.Tensor, dev: torch.device, config: TimingConfig,
               probe: MemoryProbe) -> Row:
    probe.begin_phase()
    if runner.replays_cuda_graph:
        return _derive(template, cuda_graph=True, status="skipped", **probe.phase_result(),
                       reason="the route replays its own CUDA graph in every run (its plain row is the graph)")
    capture = capture_cuda_graph(lambda: runner.run(x), dev)
    if capture.replay is None:
        return _derive(template, cuda_graph=True, status="skipped", reason=capture.reason, **probe.phase_result())
    # The graph (and its private memory pool) is released when ``capture`` goes out of scope here.
    return _measure(template, capture.replay, dev, config, probe, cuda_graph=True)


def _e2e_row(template: Row, runner: Runner, dev: torch.device, options: BenchOptions, probe: MemoryProbe) -> Row:
    if dev.type != "cuda":
        return _derive(template, mode="e2e", status="skipped",
                       reason="end-to-end rows need a CUDA device (no host<->device copies on CPU)")
    step = EndToEndStep(runner, random_rgb(template.batch, template.height, template.width, options.seed))
    # Host wall clock: an end-to-end request is over when the host holds the output.
    return _measure(template, step, dev, options.timing, probe, use_events=False, mode="e2e")


def run_benchmark(routes: Sequence[str], batches: Sequence[int], height: int, width: int,
                  state_dict: Mapping[str, torch.Tensor], device: str | None = None,
                  options: BenchOptions | None = None, repeat_check: bool = False,
                  baseline: str = BASELINE_ROUTE, progress: bool = True,
                  factory: RunnerFactory = make_runner,
                  on_job_done: Callable[[list[Row]], None] | None = None) -> list[Row]:
    """Every (route, batch) job in order, with a progress bar.

    ``on_job_done(rows_so_far)`` runs after every job, so a caller can save partial results: a long
    run cut short (a time limit, a crash in a vendor library) then keeps what it measured.

    After a route runs out of memory at some batch, its larger batches are recorded as skipped rather
    than run (they would only run out again). With ``repeat_check`` the baseline route is measured a
    second time at every batch after all other jobs (rows with ``repeat=1``), so drift over the run
    shows up as a difference between the two.
    """
    jobs: list[tuple[str, int, int]] = [(r, b, 0) for r in routes for b in batches]
    if repeat_check:
        jobs += [(baseline, b, 1) for b in batches]
    spin_up(torch.device(device or default_device()))
    bar = _progress(jobs, progress)
    rows: list[Row] = []
    oom_at: dict[str, int] = {}
    for route, batch, rep in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"{route} b={batch}" + (" (repeat)" if rep else ""))
        if route in oom_at and batch > oom_at[route] and rep == 0:
            rows.append(Row(route=route, batch=batch, height=height, width=width,
                            device=str(torch.device(device or default_device())),
                            status="skipped", reason=f"not run: out of memory at batch {oom_at[route]}"))
            continue
        new = benchmark_route(route, state_dict, batch, height, width, device, options, rep, factory)
        if any(r.status == "oom" for r in new):
            oom_at.setdefault(route, batch)
        rows.extend(new)
        if on_job_done is not None:
            on_job_done(rows)
    return rows


def _progress(jobs: Iterable, enabled: bool):
    if not enabled:
        return jobs
    from tqdm import tqdm

    return tqdm(jobs, desc="benchmark", unit="job", dynamic_ncols=True)

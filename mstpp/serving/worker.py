"""One route's runner on one device: warmed up before the server says it is ready, used by one thread at a time."""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Mapping, Sequence

import numpy as np
import torch

from ..backends import RouteUnavailable, Runner, make_runner
from ..backends.fused import MAX_CACHED_GRAPHS
from ..errors import UserError


def batch_buckets(max_batch: int, graphs: int) -> list[int]:
    """Batch sizes a graph-replaying runner is run at: every batch is padded up to the next one.

    A runner that replays one CUDA graph per input shape keeps only a few graphs; letting the dynamic batcher's
    every batch size 1..max_batch through would capture graph after graph. ``graphs`` sizes spread from 1 to
    ``max_batch`` (roughly doubling) keep each batch within 2x of its padded size.
    """
    sizes = {1, max_batch}
    size = max_batch
    while len(sizes) < graphs and size > 1:
        size = max(1, size // 2)
        sizes.add(size)
    return sorted(sizes)


class RouteWorker:
    """``make_runner(route)`` on one device, with the padding, warm-up and locking serving needs.

    Args:
        route: a key of ``mstpp.backends.ROUTES``.
        state_dict: MST++ weights.
        device: ``cpu`` or ``cuda:N``.
        max_batch: the largest batch the server forms.
        output_dtype: ``np.float32`` or ``np.float16``: the dtype of the cubes returned.

    Raises:
        UserError: the route cannot run here (its RouteUnavailable message).
    """

    def __init__(self, route: str, state_dict: Mapping[str, torch.Tensor], device: str, max_batch: int,
                 output_dtype: type = np.float32) -> None:
        self.device = torch.device(device)
        self.max_batch = max_batch
        self.output_dtype = np.dtype(output_dtype)
        self._lock = threading.Lock()
        try:
            with self._on_device():
                self.runner: Runner = make_runner(route, state_dict, device=str(self.device))
        except RouteUnavailable as exc:
            raise UserError(f"route {route} cannot start: {exc}") from None
        graphed = bool(getattr(self.runner, "replays_cuda_graph", False))
        self.buckets = batch_buckets(max_batch, MAX_CACHED_GRAPHS) if graphed else None

    def _on_device(self):
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def padded_batch(self, batch: int) -> int:
        """The batch size ``batch`` images are run at (itself unless the runner replays CUDA graphs)."""
        if self.buckets is None:
            return batch
        return next(b for b in self.buckets if b >= batch)

    def warm_up(self, height: int, width: int) -> float:
        """Run every batch size the server will use at H x W once (captures the graphs); returns seconds."""
        start = time.perf_counter()
        sizes = self.buckets or sorted({1, self.max_batch})
        rng = np.random.default_rng(0)
        try:
            for b in sizes:
                self.infer(rng.random((b, 3, height, width), dtype=np.float32))
        except RouteUnavailable as exc:  # some routes find out only when preparing a shape
            raise UserError(f"route {self.runner.route} cannot start: {exc}") from None
        return time.perf_counter() - start

    def infer(self, rgb: np.ndarray) -> np.ndarray:
        """rgb: [B, 3, H, W] float32 in [0, 1] -> cube [B, 31, H, W] in ``output_dtype`` (host memory)."""
        batch = rgb.shape[0]
        padded = self.padded_batch(batch)
        x = torch.from_numpy(np.ascontiguousarray(rgb))
        if padded > batch:  # repeat the last image: the extra rows are computed and dropped
            x = torch.cat([x, x[-1:].expand(padded - batch, *x.shape[1:])])
        with self._lock, self._on_device():
            # A graph-replaying runner captures on the first call of each shape; prepare() would run it once more.
            if self.buckets is None and self.runner.shape != tuple(x.shape):
                self.runner.prepare(tuple(x.shape))
            y = self.runner.run(self.runner.make_input(x))[:batch]
            y = y.to(torch.float16 if self.output_dtype == np.float16 else torch.float32)
            return y.cpu().numpy()

    def describe(self) -> dict:
        info = dict(self.runner.describe())
        info.update(serving_device=str(self.device), batch_buckets=self.buckets)
        return info

    def close(self) -> None:
        with self._lock:
            self.runner.close()


def parse_gpus(text: str, available: int) -> list[int]:
    """``all`` or ``0,1,...`` -> GPU indices; raises UserError for an index that does not exist."""
    if text == "all":
        return list(range(available))
    try:
        wanted = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--gpus must be 'all' or comma-separated GPU indices, got {text!r}") from None
    if not wanted:
        raise UserError("--gpus names no GPU")
    missing = [g for g in wanted if not 0 <= g < available]
    if missing:
        raise UserError(f"--gpus {text}: GPU {missing[0]} does not exist ({available} visible)")
    if len(set(wanted)) != len(wanted):
        raise UserError(f"--gpus {text}: a GPU is listed twice")
    return wanted


def serving_devices(gpus: str | None) -> list[str]:
    """The devices instances run on: one per listed GPU; the CPU once when no GPU is visible."""
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        if gpus not in (None, "all"):
            raise UserError(f"--gpus {gpus}: no CUDA GPU is visible")
        return ["cpu"]
    return [f"cuda:{g}" for g in parse_gpus(gpus or "all", available)]


def default_route(devices: Sequence[str]) -> str:
    """fused-fp16 on GPUs, torch-fp32 on the CPU."""
    return "fused-fp16" if devices and devices[0].startswith("cuda") else "torch-fp32"


def serving_plan(route: str | None, gpus: str | None) -> tuple[str, list[str]]:
    """(route, devices) a server runs: ``route`` or the default for the devices ``gpus`` names.

    Raises:
        UserError: an unknown route, a GPU list that does not match this machine, or a CUDA-only route
            where no GPU is visible.
    """
    from ..backends import ROUTES

    devices = serving_devices(gpus)
    route = route or default_route(devices)
    if route not in ROUTES:
        raise UserError(f"unknown route {route!r}; see performance_latency.py --list-routes")
    if devices == ["cpu"] and ROUTES[route].cuda_only:
        raise UserError(f"route {route} cannot start: it needs a CUDA GPU and none is visible")
    return route, devices

"""Clients of the served models (tritonclient) and the load generator of ``performance_serving.py``.

One client object per thread: tritonclient's HTTP and gRPC clients are not meant to be shared between
threads that each wait for their own answer.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .server import INPUT_IMAGE, INPUT_RGB, MODEL_IMAGE, MODEL_RGB, OUTPUT

PROTOCOLS = ("grpc", "http")


def connect(protocol: str, url: str, timeout_s: float = 60.0) -> Any:
    """A tritonclient ``InferenceServerClient`` for ``protocol`` (grpc or http) at ``host:port``."""
    if protocol == "grpc":
        import tritonclient.grpc as module

        return module.InferenceServerClient(url)
    if protocol == "http":
        import tritonclient.http as module

        return module.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def _module(client: Any):
    if type(client).__module__.startswith("tritonclient.grpc"):
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module


def infer_rgb(client: Any, rgb: np.ndarray, timeout_s: float = 60.0) -> np.ndarray:
    """rgb: [B, 3, H, W] (any dtype: the server checks it) -> cube [B, 31, H, W] from model ``mstpp``."""
    from tritonclient.utils import np_to_triton_dtype

    mod = _module(client)
    inp = mod.InferInput(INPUT_RGB, list(rgb.shape), np_to_triton_dtype(rgb.dtype))
    inp.set_data_from_numpy(rgb)
    return _call(client, mod, MODEL_RGB, inp, timeout_s)


def infer_images(client: Any, blobs: Sequence[bytes], timeout_s: float = 60.0) -> np.ndarray:
    """Encoded images (one request, same size) -> cube [B, 31, H, W] from model ``mstpp_image``."""
    mod = _module(client)
    arr = np.array([[bytes(b)] for b in blobs], dtype=object)
    inp = mod.InferInput(INPUT_IMAGE, list(arr.shape), "BYTES")
    inp.set_data_from_numpy(arr)
    return _call(client, mod, MODEL_IMAGE, inp, timeout_s)


def _call(client: Any, mod: Any, model: str, inp: Any, timeout_s: float) -> np.ndarray:
    outputs = [mod.InferRequestedOutput(OUTPUT)]
    if mod.__name__.endswith("grpc"):
        result = client.infer(model, [inp], outputs=outputs, client_timeout=timeout_s)
    else:
        result = client.infer(model, [inp], outputs=outputs)
    return result.as_numpy(OUTPUT)


def error_text(exc: BaseException) -> str:
    """The problem an error response names, without the PyTriton traceback around it."""
    text = str(exc)
    found = re.findall(r"PyTritonValidationError: (.+)", text)
    return found[-1].strip() if found else text.strip().splitlines()[0]


def wait_ready(protocol: str, url: str, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll until the server and both models are ready; TimeoutError / RuntimeError (server died) otherwise."""
    deadline = time.monotonic() + timeout_s
    client = connect(protocol, url)
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the server exited before it was ready")
        try:
            if client.is_server_ready() and all(client.is_model_ready(m) for m in (MODEL_RGB, MODEL_IMAGE)):
                return
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server at {url} not ready after {timeout_s:g} s")


@dataclass
class LoadResult:
    """What a load run saw: one latency per answered request, and the failures."""

    concurrency: int
    batch: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def images(self) -> int:
        return len(self.latencies_ms) * self.batch


def run_load(protocol: str, url: str, concurrency: int, make_input: Callable[[int, int], np.ndarray],
             check: Callable[[np.ndarray, np.ndarray], None] | None = None, requests_per_client: int | None = None,
             duration_s: float | None = None, timeout_s: float = 120.0) -> LoadResult:
    """``concurrency`` threads, each with its own client, send requests back to back to model ``mstpp``.

    Each thread stops after ``requests_per_client`` requests or once ``duration_s`` has passed (at least one
    must be given). ``make_input(client_index, request_index)`` gives each request its input; ``check(input,
    cube)`` may raise to mark an answer wrong (counted in ``errors``).
    """
    if requests_per_client is None and duration_s is None:
        raise ValueError("give requests_per_client or duration_s")
    probe = make_input(0, 0)
    result = LoadResult(concurrency=concurrency, batch=int(probe.shape[0]))
    lock = threading.Lock()
    start_barrier = threading.Barrier(concurrency + 1)

    def worker(index: int) -> None:
        client = connect(protocol, url, timeout_s)
        start_barrier.wait()
        deadline = time.perf_counter() + duration_s if duration_s is not None else None
        i = 0
        while (requests_per_client is None or i < requests_per_client) and (deadline is None or time.perf_counter() < deadline):
            x = make_input(index, i)
            t0 = time.perf_counter()
            try:
                cube = infer_rgb(client, x, timeout_s)
                ms = (time.perf_counter() - t0) * 1e3
                if check is not None:
                    check(x, cube)
            except Exception as exc:  # every failure is counted, none ends the run
                with lock:
                    result.errors.append(f"client {index} request {i}: {error_text(exc)}")
            else:
                with lock:
                    result.latencies_ms.append(ms)
            i += 1
        client.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    start_barrier.wait()
    t_start = time.perf_counter()
    for t in threads:
        t.join(timeout=(duration_s or 0) + timeout_s * (requests_per_client or 1) + 30)
    result.wall_s = time.perf_counter() - t_start
    if any(t.is_alive() for t in threads):
        result.errors.append("a client thread did not finish in time")
    return result


def _load_in_process(protocol: str, url: str, threads: int, shape: tuple[int, ...], duration_s: float,
                     seed: int) -> LoadResult:
    """One client process of :func:`run_load_processes` (module level, so ``spawn`` can start it)."""
    inputs = np.random.default_rng(seed).random((8, *shape), dtype=np.float32)
    return run_load(protocol, url, threads, lambda c, i: inputs[(c + i) % len(inputs)], duration_s=duration_s)


def run_load_processes(protocol: str, url: str, concurrency: int, processes: int, shape: tuple[int, ...],
                       duration_s: float) -> LoadResult:
    """:func:`run_load` spread over ``processes`` client processes (one Python process cannot decode
    large cubes for many clients at the speed of a GPU); random inputs of ``shape`` = (1, 3, H, W).
    Throughput is the sum of the processes' throughputs; latencies and errors are pooled."""
    import multiprocessing

    processes = max(1, min(processes, concurrency))
    if processes == 1:
        return _load_in_process(protocol, url, concurrency, shape, duration_s, 1)
    shares = [concurrency // processes + (1 if k < concurrency % processes else 0) for k in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.starmap(_load_in_process, [(protocol, url, n, shape, duration_s, k + 1)
                                                for k, n in enumerate(shares)])
    merged = LoadResult(concurrency=concurrency, batch=parts[0].batch)
    for part in parts:
        merged.latencies_ms += part.latencies_ms
        merged.errors += part.errors
    # Wall time such that images / wall_s is the summed throughput of the processes.
    rate = sum(p.images / p.wall_s for p in parts if p.wall_s)
    merged.wall_s = merged.images / rate if rate else 0.0
    return merged

"""The PyTriton server: models ``mstpp`` (RGB tensors) and ``mstpp_image`` (encoded image bytes).

``mstpp``        input ``rgb``   FP32 [B, 3, H, W] in [0, 1]  -> output ``cube`` [B, 31, H, W]
``mstpp_image``  input ``image`` BYTES [B, 1] (JPEG/PNG/TIFF/BMP, ``infer.py``'s preprocessing; the images of
                 one request share a size)                    -> output ``cube`` [B, 31, H, W]

``cube`` is FP32, or FP16 with ``output_dtype="fp16"``. ``mstpp`` has Triton's dynamic batcher (it only
batches requests of the same shape, so a batch never mixes image sizes); ``mstpp_image`` runs each request
alone, so one bad image fails only its own request. Each model gets one instance per device.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .environment import check_serving_environment, put_libpython_on_loader_path
from .limits import RequestError, RequestLimits
from .worker import RouteWorker

MODEL_RGB = "mstpp"
MODEL_IMAGE = "mstpp_image"
INPUT_RGB = "rgb"
INPUT_IMAGE = "image"
OUTPUT = "cube"
OUTPUT_DTYPES = {"fp32": np.float32, "fp16": np.float16}


@dataclass
class ServeOptions:
    """Everything ``serve.py`` decides. Ports bind on ``address`` (default loopback only)."""

    route: str
    devices: Sequence[str]
    max_batch: int = 16
    queue_delay_us: int = 1000
    output_dtype: str = "fp32"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    address: str = "127.0.0.1"
    warmup_size: tuple[int, int] = (512, 482)
    limits: RequestLimits = field(default_factory=RequestLimits)
    drain_timeout_s: float = 30.0


class InFlight:
    """Counts the batches being computed, so a shutdown can wait for them."""

    def __init__(self) -> None:
        self._count = 0
        self._last_change = time.monotonic()
        self._cv = threading.Condition()

    def __enter__(self) -> None:
        with self._cv:
            self._count += 1
            self._last_change = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        with self._cv:
            self._count -= 1
            self._last_change = time.monotonic()
            self._cv.notify_all()

    def wait_idle(self, quiet_s: float, timeout_s: float) -> bool:
        """Wait until nothing has run for ``quiet_s`` seconds; False when ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while True:
                now = time.monotonic()
                if self._count == 0 and now - self._last_change >= quiet_s:
                    return True
                if now >= deadline:
                    return False
                self._cv.wait(timeout=min(quiet_s, deadline - now))


def _request_error(exc: RequestError) -> Exception:
    # PyTriton sends an exception raised by the callable back as the request's error; this type
    # does not stop the server (PyTritonUnrecoverableError would).
    from pytriton.exceptions import PyTritonValidationError

    return PyTritonValidationError(str(exc))


def make_rgb_infer(worker: RouteWorker, limits: RequestLimits, inflight: InFlight) -> Callable:
    """The ``mstpp`` callable of one instance: a dynamic batch of RGB tensors -> cubes."""
    from pytriton.decorators import batch

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        with inflight:
            rgb = inputs[INPUT_RGB]
            try:
                limits.check_rgb(rgb)
            except RequestError as exc:
                raise _request_error(exc) from None
            return {OUTPUT: worker.infer(rgb)}

    return infer


def make_image_infer(worker: RouteWorker, limits: RequestLimits, inflight: InFlight) -> Callable:
    """The ``mstpp_image`` callable of one instance: one request's encoded images -> cubes."""
    from pytriton.decorators import batch

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        with inflight:
            try:
                rgb = limits.decode([item for item in inputs[INPUT_IMAGE].reshape(-1)])
            except RequestError as exc:
                raise _request_error(exc) from None
            return {OUTPUT: worker.infer(rgb)}

    return infer


def bind_models(triton: Any, workers: Sequence[RouteWorker], options: ServeOptions, inflight: InFlight) -> None:
    """Bind ``mstpp`` and ``mstpp_image`` with one instance per worker."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    out_dtype = OUTPUT_DTYPES[options.output_dtype]
    outputs = [Tensor(name=OUTPUT, dtype=out_dtype, shape=(31, -1, -1))]
    buckets = workers[0].buckets
    batcher = DynamicBatcher(max_queue_delay_microseconds=options.queue_delay_us,
                             preferred_batch_size=buckets if buckets and len(buckets) > 1 else None)
    triton.bind(model_name=MODEL_RGB,
                infer_func=[make_rgb_infer(w, options.limits, inflight) for w in workers],
                inputs=[Tensor(name=INPUT_RGB, dtype=np.float32, shape=(3, -1, -1))], outputs=outputs,
                config=ModelConfig(max_batch_size=options.max_batch, batcher=batcher), strict=True)
    triton.bind(model_name=MODEL_IMAGE,
                infer_func=[make_image_infer(w, options.limits, inflight) for w in workers],
                inputs=[Tensor(name=INPUT_IMAGE, dtype=bytes, shape=(1,))], outputs=outputs,
                config=ModelConfig(max_batch_size=options.max_batch, batcher=None), strict=True)


def build_workers(options: ServeOptions, state_dict: Mapping[str, Any], log: Callable[[str], None]) -> list[RouteWorker]:
    """One warmed-up worker per device (UserError when the route cannot start)."""
    workers = []
    for device in options.devices:
        worker = RouteWorker(options.route, state_dict, device, options.max_batch, OUTPUT_DTYPES[options.output_dtype])
        seconds = worker.warm_up(*options.warmup_size)
        log(f"{options.route} on {device}: warmed up at {options.warmup_size[0]}x{options.warmup_size[1]}, "
            f"batch {worker.buckets or sorted({1, options.max_batch})} in {seconds:.1f} s")
        workers.append(worker)
    return workers


def serve(options: ServeOptions, state_dict: Mapping[str, Any], log: Callable[[str], None] = print) -> int:
    """Start Triton with both models, answer until SIGINT/SIGTERM, drain, stop. Returns the exit code (0)."""
    check_serving_environment()
    put_libpython_on_loader_path()

    def stop_now(*_: object) -> None:
        raise _StopBeforeReady()

    # Until the server answers there is nothing to drain: a signal ends the start-up at once.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop_now)
    workers: list[RouteWorker] = []
    try:
        workers = build_workers(options, state_dict, log)
        return _serve_until_signal(options, workers, log)
    except _StopBeforeReady:
        log("stopped before the server was ready")
        return 0
    finally:
        for worker in workers:
            worker.close()


class _StopBeforeReady(Exception):
    """SIGINT/SIGTERM while warming up or starting Triton."""


def _serve_until_signal(options: ServeOptions, workers: Sequence[RouteWorker], log: Callable[[str], None]) -> int:
    """Run Triton with both models until SIGINT/SIGTERM, then drain and stop it."""
    from pytriton.triton import Triton, TritonConfig

    config = TritonConfig(http_address=options.address, http_port=options.http_port,
                          grpc_address=options.address, grpc_port=options.grpc_port,
                          metrics_address=options.address, metrics_port=options.metrics_port,
                          exit_timeout_secs=max(1, int(options.drain_timeout_s)))
    inflight = InFlight()
    stop = threading.Event()
    triton = Triton(config=config)
    try:
        bind_models(triton, workers, options, inflight)
        triton.run()
        for sig in (signal.SIGINT, signal.SIGTERM):  # from now on a signal drains
            signal.signal(sig, lambda *_: stop.set())
        log(f"ready: models {MODEL_RGB!r} and {MODEL_IMAGE!r}, route {options.route}, "
            f"{len(workers)} instance(s) on {', '.join(options.devices)}; HTTP {options.address}:{options.http_port}, "
            f"gRPC {options.address}:{options.grpc_port}, metrics {options.address}:{options.metrics_port}")
        sys.stdout.flush()
        while not stop.wait(1.0):
            if not triton.is_alive():
                log("error: Triton Inference Server stopped unexpectedly (see its log above)")
                return 1
        log("stopping: finishing the requests in flight")
        if not inflight.wait_idle(quiet_s=0.5, timeout_s=options.drain_timeout_s):
            log(f"warning: requests still running after {options.drain_timeout_s:g} s; stopping anyway")
    finally:
        triton.stop()
    log("stopped")
    return 0

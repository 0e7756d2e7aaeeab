"""A real Triton server (serve.py, torch-fp32 on the CPU) answering over HTTP and gRPC.

Runs in the serving environment (PyTriton needs numpy < 2): `./build.sh test` runs this file with
.venv-serve/bin/python; in any other environment it is skipped.
"""
from __future__ import annotations

import signal
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("pytriton", reason="serving environment only (./build.sh serve-env; .venv-serve/bin/python -m pytest)")
if int(np.__version__.split(".")[0]) >= 2:
    pytest.skip("serving environment only: numpy < 2", allow_module_level=True)

from mstpp.backends import make_runner  # noqa: E402
from mstpp.serving import client as sc  # noqa: E402
from mstpp.serving.launcher import ServerProcess, wait_exit  # noqa: E402
from mstpp.serving.limits import MIN_SIDE  # noqa: E402
from mstpp.weights import resolve_weights  # noqa: E402

MAX_IMAGE_BYTES = 100_000
MAX_SIDE = 256


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    srv = ServerProcess(["--route", "torch-fp32", "--max-batch", "8", "--warmup-size", "32", "32",
                         "--queue-delay-us", "2000", "--max-side", str(MAX_SIDE),
                         "--max-image-bytes", str(MAX_IMAGE_BYTES), "--drain-timeout", "20"], log)
    try:
        srv.wait_ready(timeout_s=300)
        yield srv
    finally:
        srv.kill()


@pytest.fixture(scope="module")
def direct():
    """The direct runner's cube for an RGB batch: what every served answer must equal."""
    from concurrent.futures import ThreadPoolExecutor

    state, _ = resolve_weights(None)
    runner = make_runner("torch-fp32", state, device="cpu")
    # Off the main thread, as the server computes: PyTorch's CPU threading in the main thread was up to 30x
    # slower on a busy 2-core machine.
    pool = ThreadPoolExecutor(1)

    def run(rgb: np.ndarray) -> np.ndarray:
        return pool.submit(lambda: runner.run(runner.make_input(torch.from_numpy(rgb))).numpy()).result()

    yield run
    pool.shutdown()


def _rgb(seed: int, h: int = 32, w: int = 32, b: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((b, 3, h, w), dtype=np.float32)


@pytest.mark.parametrize("protocol", sc.PROTOCOLS)
def test_round_trip_equals_direct_runner(server, direct, protocol):
    url = server.url(protocol)
    client = sc.connect(protocol, url)
    for seed, (h, w, b) in enumerate([(32, 32, 1), (64, 48, 2)]):
        x = _rgb(seed, h, w, b)
        cube = sc.infer_rgb(client, x)
        assert cube.dtype == np.float32 and cube.shape == (b, 31, h, w)
        np.testing.assert_allclose(cube, direct(x), rtol=1e-4, atol=1e-5)


def test_image_bytes_use_infer_preprocessing(server, direct, tmp_path):
    import cv2

    from mstpp.io import read_rgb

    img = (np.random.default_rng(5).random((40, 56, 3)) * 255).astype(np.uint8)
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), img)
    expected = direct(read_rgb(path)[None])  # what infer.py computes for the file
    cube = sc.infer_images(sc.connect("grpc", server.url("grpc")), [path.read_bytes(), path.read_bytes()])
    assert cube.shape == (2, 31, 40, 56)
    np.testing.assert_allclose(cube[0], expected[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cube[1], expected[0], rtol=1e-4, atol=1e-5)


def _png(h: int, w: int, channels: int = 3) -> bytes:
    import cv2

    img = (np.random.default_rng(h * w).random((h, w, channels)) * 255).astype(np.uint8)
    return cv2.imencode(".png", img if channels > 1 else img[:, :, 0])[1].tobytes()


BAD_RGB = {
    "wrong dtype": (lambda: _rgb(1).astype(np.float64), "FP64"),
    "wrong rank": (lambda: _rgb(1)[0], "unexpected shape"),
    "wrong channels": (lambda: np.zeros((1, 4, 32, 32), np.float32), "unexpected shape"),
    "under minimum": (lambda: _rgb(1, MIN_SIDE - 1, 32), f"needs at least {MIN_SIDE}x{MIN_SIDE}"),
    "over maximum": (lambda: _rgb(1, 16, MAX_SIDE + 8), "at most 256 pixels a side"),
    "NaN values": (lambda: np.full((1, 3, 32, 32), np.nan, np.float32), "NaN or Inf"),
}
BAD_IMAGES = {
    "undecodable bytes": (lambda: [b"this is not an image"], "cannot be decoded"),
    "empty bytes": (lambda: [b""], "empty"),
    "oversized bytes": (lambda: [b"\x89PNG" + bytes(MAX_IMAGE_BYTES)], f"at most {MAX_IMAGE_BYTES} bytes"),
    "grayscale image": (lambda: [_png(32, 32, 1)], "grayscale"),
    "under minimum": (lambda: [_png(MIN_SIDE - 1, 40)], f"needs at least {MIN_SIDE}x{MIN_SIDE}"),
    "mixed sizes": (lambda: [_png(32, 32), _png(32, 48)], "must share a size"),
}


@pytest.mark.parametrize("protocol", sc.PROTOCOLS)
@pytest.mark.parametrize("case", sorted(BAD_RGB))
def test_bad_rgb_request_is_named_and_server_keeps_serving(server, protocol, case):
    make, expected = BAD_RGB[case]
    client = sc.connect(protocol, server.url(protocol))
    with pytest.raises(Exception) as err:
        sc.infer_rgb(client, make())
    assert expected in sc.error_text(err.value), sc.error_text(err.value)
    assert sc.infer_rgb(client, _rgb(2)).shape == (1, 31, 32, 32)  # still answering


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image_request_is_named_and_server_keeps_serving(server, case):
    make, expected = BAD_IMAGES[case]
    client = sc.connect("http", server.url("http"))
    with pytest.raises(Exception) as err:
        sc.infer_images(client, make())
    assert expected in sc.error_text(err.value), sc.error_text(err.value)
    assert sc.infer_images(client, [_png(32, 32)]).shape == (1, 31, 32, 32)


def test_concurrent_clients_get_their_own_cubes(server, direct):
    """8 clients x 50 requests, two image sizes interleaved: every answer is its own input's cube."""
    clients, per_client = 8, 50
    sizes = [(32, 32), (32, 48)]
    inputs = {(c, i): _rgb(1000 + c * per_client + i, *sizes[(c + i) % 2]) for c in range(clients)
              for i in range(per_client)}
    expected = {}
    for size in sizes:  # the direct runner in batches, per size
        keys = [k for k, x in inputs.items() if x.shape[2:] == size]
        for start in range(0, len(keys), 50):
            chunk = keys[start:start + 50]
            out = direct(np.concatenate([inputs[k] for k in chunk]))
            expected.update({k: out[j:j + 1] for j, k in enumerate(chunk)})
    by_id = {id(x): k for k, x in inputs.items()}

    def check(x: np.ndarray, cube: np.ndarray) -> None:
        np.testing.assert_allclose(cube, expected[by_id[id(x)]], rtol=1e-4, atol=1e-5)

    result = sc.run_load("grpc", server.url("grpc"), clients, lambda c, i: inputs[(c, i)], check=check,
                         requests_per_client=per_client, timeout_s=120)
    assert result.errors == []
    assert len(result.latencies_ms) == clients * per_client


def test_sigterm_drains_in_flight_requests_and_exits_0(server):
    """Last test of the module: it stops the server."""
    results: list[object] = []

    def request() -> None:
        try:
            results.append(sc.infer_rgb(sc.connect("http", server.url("http")), _rgb(3, 128, 128, 4), timeout_s=120).shape)
        except Exception as exc:  # recorded, asserted below
            results.append(exc)

    threads = [threading.Thread(target=request) for _ in range(3)]
    for t in threads:
        t.start()
    # Wait until the server is computing (the requests are in; a 128x128 batch of 4 takes a while on a CPU).
    import time
    time.sleep(1.0)
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=180)
    code = wait_exit(server.proc, 120)
    assert code == 0, server.log()[-3000:]
    assert results == [(4, 31, 128, 128)] * 3, results
    assert "stopping: finishing the requests in flight" in server.log()

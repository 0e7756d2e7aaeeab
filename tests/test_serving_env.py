"""Serving pieces that need no server: request limits, batch buckets, the environment checks, and
serve.py's start-up refusals (run with the serving environment's interpreter when there is one)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mstpp.errors import UserError
from mstpp.io import decode_rgb, read_rgb
from mstpp.serving.environment import check_serving_environment, put_libpython_on_loader_path
from mstpp.serving.limits import MIN_SIDE, RequestError, RequestLimits
from mstpp.serving.worker import batch_buckets

REPO = Path(__file__).resolve().parents[1]


def _serve_python() -> str:
    """The serving environment's interpreter (build.sh test names it; else .venv-serve)."""
    path = os.environ.get("MSTPP_SERVE_PYTHON") or str(REPO / ".venv-serve" / "bin" / "python")
    if not Path(path).is_file():
        pytest.skip("no serving environment (./build.sh serve-env creates .venv-serve)")
    return path


def test_decode_rgb_equals_read_rgb(tmp_path):
    import cv2

    img = (np.random.default_rng(0).random((20, 30, 3)) * 65535).astype(np.uint16)  # 16 bit, like read_rgb keeps
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), img)
    np.testing.assert_array_equal(decode_rgb(path.read_bytes()), read_rgb(path))


def test_limits_name_the_problem():
    limits = RequestLimits(max_side=64, max_image_bytes=10)
    with pytest.raises(RequestError, match=f"at least {MIN_SIDE}x{MIN_SIDE}"):
        limits.check_rgb(np.zeros((1, 3, MIN_SIDE - 1, 32), np.float32))
    with pytest.raises(RequestError, match="at most 64 pixels"):
        limits.check_rgb(np.zeros((1, 3, 32, 65), np.float32))
    with pytest.raises(RequestError, match="NaN or Inf"):
        limits.check_rgb(np.full((1, 3, 32, 32), np.inf, np.float32))
    limits.check_rgb(np.zeros((2, 3, MIN_SIDE, 64), np.float32))
    with pytest.raises(RequestError, match="at most 10 bytes"):
        limits.decode([b"x" * 11])
    with pytest.raises(RequestError, match="cannot be decoded"):
        limits.decode([b"x" * 10])


def test_batch_buckets():
    assert batch_buckets(16, 4) == [1, 4, 8, 16]
    assert batch_buckets(1, 4) == [1]
    assert batch_buckets(3, 4) == [1, 3]
    assert batch_buckets(8, 2) == [1, 8]


def test_numpy2_environment_is_refused_here():
    # This environment has numpy 2 (the project's .venv): a server here would answer with empty arrays.
    if int(np.__version__.split(".")[0]) < 2:
        pytest.skip("this environment has numpy < 2")
    with pytest.raises(UserError, match=r"numpy 2\..* PyTriton needs numpy < 2"):
        check_serving_environment()


def test_libpython_goes_first_on_the_loader_path():
    from mstpp.serving.environment import libpython_dir

    env = {"LD_LIBRARY_PATH": "/x"}
    added = put_libpython_on_loader_path(env)
    assert added == libpython_dir()
    if added is None:
        assert env == {"LD_LIBRARY_PATH": "/x"}
    else:
        assert env["LD_LIBRARY_PATH"] == f"{added}{os.pathsep}/x"
        put_libpython_on_loader_path(env)  # idempotent
        assert env["LD_LIBRARY_PATH"].count(added) == 1


def _run_serve(python: str, args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([python, "serve.py", *args], cwd=REPO, capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def test_server_with_numpy2_next_to_pytriton_refuses_to_start(tmp_path):
    """The real wrong environment: PyTriton installed and numpy 2 importable first. One line, exit 2."""
    serve_python = _serve_python()
    if int(np.__version__.split(".")[0]) < 2:
        pytest.skip("needs a numpy 2 to put in front of the serving environment's numpy")
    (tmp_path / "numpy").symlink_to(Path(np.__file__).parent)  # this (project) environment's numpy 2
    proc = _run_serve(serve_python, ["--route", "torch-fp32"], env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: numpy {np.__version__} is installed"), proc.stderr
    assert "ready" not in proc.stdout


@pytest.mark.parametrize("args, expected", [
    (["--route", "fused-fp16"], "route fused-fp16 cannot start"),
    (["--route", "nope"], "unknown route 'nope'"),
    (["--gpus", "0"], "--gpus 0: no CUDA GPU is visible"),
    (["--http-port", "9000", "--grpc-port", "9000"], "must differ"),
])
def test_serve_refuses_bad_start_in_one_line(args, expected):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the refusals checked here are the CPU-only ones")
    proc = _run_serve(_serve_python(), args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr


def test_write_repository_refusals_are_one_line(tmp_path):
    proc = _run_serve(sys.executable, ["--write-repository", str(tmp_path / "r")])
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --write-repository needs --plan and/or --onnx"
    bare = tmp_path / "bare.plan"
    bare.write_bytes(b"x")
    proc = _run_serve(sys.executable, ["--write-repository", str(tmp_path / "r"), "--plan", str(bare)])
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "no build record" in proc.stderr


def test_serving_results_reach_the_report(tmp_path):
    from mstpp.bench.report import build_report
    from mstpp.bench.serving import load_serving_results, write_serving_results

    base = {"route": "fused-fp16", "queue_delay_us": 1000, "protocol": "grpc", "output_dtype": "fp16",
            "request_batch": 1, "height": 512, "width": 482, "status": "ok", "reason": ""}
    rows = [{**base, "kind": "direct", "max_batch": 16, "concurrency": 0, "throughput_ips": 200.0, "p50_ms": 80.0}]
    for c, ips in ((1, 50.0), (8, 120.0), (32, 170.0)):
        rows.append({**base, "kind": "served", "max_batch": 16, "concurrency": c, "requests": 100, "errors": 0,
                     "throughput_ips": ips, "p50_ms": 10.0 * c, "p90_ms": 12.0 * c, "p99_ms": 15.0 * c})
    json_path, csv_path = write_serving_results(rows, {"gpu": "NVIDIA H100 80GB HBM3"}, {"command": "x"},
                                                tmp_path / "results", "serving-test")
    assert csv_path.read_text().splitlines()[0].startswith("route,")
    (loaded,) = load_serving_results(tmp_path / "results")
    assert loaded["rows"] == rows and loaded["metadata"]["source"] == "serving-test.json"
    report = build_report(tmp_path / "results", tmp_path / "REPORT.md").read_text()
    assert "## Serving" in report and "NVIDIA H100 80GB HBM3: fused-fp16, 3x512x482" in report
    assert "| dynamic batch <= 16, delay 1000 us, grpc, fp16 out | 32 | 100 | 0 | 170 | 85% | 320 | 384 | 480 |" in report
    assert "batch 16: 200 img/s" in report
    assert (tmp_path / "figures" / "serving-test.png").stat().st_size > 10_000
    assert "](figures/serving-test.png)" in report

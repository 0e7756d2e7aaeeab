"""What a user of a CPU machine reads: the report names its results folder, labels CPU rows and figures
as CPU, shows the INT8 speeds and the relative-error floor; printed speeds carry units."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cpu_results(tmp_path_factory) -> Path:
    """A real CPU latency run (torch-fp32, quick profile) plus an INT8 result file written by the same writer
    performance_int8.py uses (its speeds, as that script records them)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the labels of a run on a machine without a GPU")
    results = tmp_path_factory.mktemp("cpu") / "results"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "performance_latency.py", "--routes", "torch-fp32", "--out-dir",
                           str(results), "--tag", "lat", "--no-progress"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]

    from mstpp.bench.accuracy import write_accuracy
    from mstpp.bench.environment import capture_environment

    speed = [{"route": "ort-cpu", "status": "ok", "reason": "", "median_ms": 210.5, "batch": 1, "height": 128,
              "width": 128},
             {"route": "ort-cpu-int8", "status": "ok", "reason": "", "median_ms": 640.0, "batch": 1, "height": 128,
              "width": 128}]
    rows = [{"route": "torch-fp32", "status": "ok", "mean_abs": 0.0, "max_abs": 0.0, "mean_rel": 0.0, "max_rel": 0.0},
            {"route": "ort-cpu-int8", "status": "ok", "mean_abs": 2e-3, "max_abs": 0.05, "mean_rel": 0.02,
             "max_rel": 9.9e3}]
    meta = {"tag": "i8", "size": [128, 128], "speed": speed, "rel_error_floor": 1e-6}
    write_accuracy(rows, capture_environment("cpu"), meta, results, "i8")
    return results


def test_cpu_report_labels(cpu_results, tmp_path):
    from mstpp.bench.report import build_report

    cwd = os.getcwd()
    os.chdir(cpu_results.parent)  # the report names the folder the way the user typed it
    try:
        report = build_report("results", tmp_path / "REPORT.md")
    finally:
        os.chdir(cwd)
    text = report.read_text()
    assert "result files in `results/`" in text and "docs/results" not in text
    assert "CPU: no GPU on this machine" in text
    details = text.split("### All statistics")[1].split("###")[0]
    assert "| torch-fp32 | cpu | 1 |" in details and "| gpu |" not in details
    figures = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert any(n.endswith("_latency_throughput_cpu.png") for n in figures), figures
    assert not any(n.endswith("_gpu.png") for n in figures), figures
    assert "INT8 speed at 128x128" in text and "| ort-cpu-int8 | ok | 1x3x128x128 | 640 ms | 1.56 img/s |" in text
    assert "floor = 1e-06" in text and "max_rel" in text


def test_int8_speed_line_has_units():
    from mstpp.scripts.performance_int8 import speed_line

    line = speed_line("ort-cpu", "ok", 210.50631900004646, "", 1, 128, 128)
    assert line == "speed ort-cpu: ok, 210.5 ms median per batch of 1 at 128x128 (4.75 img/s)"
    assert speed_line("trt-api-int8", "skipped", None, "no TensorRT", 1, 64, 64) == \
        "speed trt-api-int8: skipped (no TensorRT)"


def test_dynamic_export_shape_text():
    from mstpp.scripts.torch2onnx import export_shape_text

    assert export_shape_text(1, 512, 482, dynamic=True) == "Bx3xHxW dynamic"
    assert export_shape_text(4, 512, 482, dynamic=False) == "4x3x512x482"

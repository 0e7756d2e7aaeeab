"""Benchmark toolkit on the CPU: statistics, timing loop, result files, skip/OOM/error rows, report,
figures and the performance_latency.py CLI. No GPU needed; no dependence on the ONNX Runtime backend."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mstpp.backends import ROUTES, RouteSpec, RouteUnavailable, Runner
from mstpp.bench import stats
from mstpp.bench.environment import capture_environment, environment_slug
from mstpp.bench.report import build_report, latency_table, render_report
from mstpp.bench.results import (BenchResult, Row, attach_speedups, load_results_dir, merge_results, read_results, read_rows_csv,
                                 repeat_check, write_results)
from mstpp.bench.runner_loop import BenchOptions, benchmark_route, classify, run_benchmark
from mstpp.bench.timing import TimingConfig, capture_cuda_graph, time_callable
from mstpp.weights import seeded_state_dict

REPO = Path(__file__).resolve().parent.parent
TINY = TimingConfig(warmup_ms=0.0, warmup_runs=1, min_ms=0.0, min_runs=3, floor_runs=2)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny convolutions on a shared 2-core machine are dominated by thread contention; one thread keeps
    # the CPU runs fast and steady.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def weights():
    return seeded_state_dict()


# ---------------------------------------------------------------- statistics

def test_percentiles_match_linear_interpolation():
    xs = [float(v) for v in range(1, 11)]  # 1..10
    assert stats.median([3.0, 1.0, 2.0, 4.0]) == 2.5
    assert stats.percentile(xs, 90) == pytest.approx(9.1)
    assert stats.percentile(xs, 99) == pytest.approx(9.91)
    assert stats.percentile(xs, 0) == 1.0 and stats.percentile(xs, 100) == 10.0
    assert stats.percentile([7.0], 99) == 7.0


def test_summary_and_derived_numbers():
    xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    s = stats.summarize(xs, batch=4)
    assert set(s) == set(stats.SUMMARY_KEYS)
    assert s["n_runs"] == 8 and s["min_ms"] == 2.0 and s["max_ms"] == 9.0
    assert s["mean_ms"] == 5.0 and s["median_ms"] == 4.5
    assert s["std_ms"] == pytest.approx(math.sqrt(32 / 7))
    assert s["throughput_ips"] == pytest.approx(4 / 0.0045)
    assert stats.std([3.0]) == 0.0
    assert stats.throughput(4, 100.0) == pytest.approx(40.0)
    assert stats.speedup(43.4, 14.5) == pytest.approx(2.993, abs=1e-3)
    assert stats.relative_difference_pct(100.0, 103.0) == pytest.approx(300 / 101.5)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")]])
def test_summary_rejects_bad_samples(bad):
    with pytest.raises(ValueError):
        stats.summarize(bad, batch=1)
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


# ---------------------------------------------------------------- timing

def test_timing_bounds_runs_and_duration():
    calls = []
    cfg = TimingConfig(warmup_ms=0.0, warmup_runs=3, min_ms=1e9, min_runs=5, floor_runs=2)
    res = time_callable(lambda: calls.append(1), "cpu", cfg)
    assert res.warmup_runs == 3 and len(res.samples_ms) == 5 and len(calls) == 8
    assert res.method == "perf_counter" and res.samples_ms == res.wall_ms
    # min_ms reached at once: stop after floor_runs, not min_runs
    res = time_callable(lambda: None, "cpu", TimingConfig(warmup_ms=0, warmup_runs=0, min_ms=0, min_runs=100,
                                                          floor_runs=4))
    assert len(res.samples_ms) == 4
    with pytest.raises(ValueError):
        TimingConfig(min_runs=0)


def test_graph_capture_reports_a_reason_without_cuda():
    cap = capture_cuda_graph(lambda: torch.zeros(1), "cpu")
    assert cap.replay is None and "CUDA" in cap.reason


def test_benchmark_route_torch_fp32_on_cpu(weights):
    rows = benchmark_route("torch-fp32", weights, 1, 16, 16, "cpu",
                           BenchOptions(timing=TINY, cuda_graphs=True, e2e=True))
    main, graph, e2e = rows
    assert main.status == "ok", main.reason
    assert main.mode == "gpu" and not main.cuda_graph and main.device == "cpu"
    assert main.n_runs >= 2 and main.median_ms > 0 and main.throughput_ips == pytest.approx(1000 / main.median_ms)
    assert main.timing_method == "perf_counter" and main.peak_torch_mib is None
    assert main.settings["precision"] == "fp32" and main.settings["tf32"] is False
    assert graph.cuda_graph and graph.status == "skipped" and "CUDA" in graph.reason
    assert e2e.mode == "e2e" and e2e.status == "skipped" and e2e.reason


def test_route_that_replays_its_own_graph_gets_no_second_capture(weights):
    from mstpp.backends import make_runner

    def self_graphing(*args, **kwargs):
        runner = make_runner(*args, **kwargs)
        runner.replays_cuda_graph = True  # as FusedRunner declares
        return runner

    rows = benchmark_route("torch-fp32", weights, 1, 16, 16, "cpu", BenchOptions(timing=TINY, cuda_graphs=True),
                           factory=self_graphing)
    main, graph = rows
    assert main.status == "ok" and graph.cuda_graph and graph.status == "skipped"
    assert "replays its own CUDA graph" in graph.reason


def test_int8_route_runs_at_batch_above_one(weights, tmp_path, monkeypatch):
    # Regression: the static Q/DQ ONNX for batch 2 was calibrated with batch-1 feeds and failed.
    monkeypatch.setenv("MSTPP_CACHE_DIR", str(tmp_path))
    (row,) = benchmark_route("ort-cpu-int8", weights, 2, 32, 32, "cpu", BenchOptions(timing=TINY))
    assert row.status == "ok", row.reason


def test_int8_onnx_of_every_batch_shares_the_batch1_calibration(weights, tmp_path, monkeypatch):
    # A batch-16 export at 512x482 ran out of GPU memory when calibrated in one feed: the ranges are
    # calibrated on the batch-1 export and reused, so the Q/DQ scales of batch 1 and batch 3 are identical.
    import onnx
    from onnx import numpy_helper

    from mstpp.onnx.cache import cached_onnx

    monkeypatch.setenv("MSTPP_CACHE_DIR", str(tmp_path))
    state = weights
    batch3 = cached_onnx(state, (3, 3, 32, 32), "int8")
    assert sorted(p.name for p in tmp_path.glob("*_int8_ranges.json")) == [batch3.name.replace("3x32x32", "1x32x32")
                                                                         .replace("_int8.onnx", "_int8_ranges.json")]
    batch1 = cached_onnx(state, (1, 3, 32, 32), "int8")

    def scales(path):
        graph = onnx.load(str(path)).graph
        return {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("_scale")}

    one, three = scales(batch1), scales(batch3)
    assert len(one) > 20 and one.keys() == three.keys()
    assert all(np.array_equal(one[k], three[k]) for k in one)


def test_int8_ranges_from_another_export_are_refused(weights, tmp_path, monkeypatch):
    from mstpp.errors import UserError
    from mstpp.onnx.cache import cached_onnx
    from mstpp.onnx.quantize import quantize_onnx

    monkeypatch.setenv("MSTPP_CACHE_DIR", str(tmp_path))
    cached_onnx(weights, (1, 3, 32, 32), "int8")
    (ranges,) = tmp_path.glob("*_int8_ranges.json")
    data = json.loads(ranges.read_text())
    table = next(v for v in data.values() if isinstance(v, dict) and len(v) > 20)
    for name in list(table)[::2]:
        del table[name]
    partial = tmp_path / "partial_ranges.json"
    partial.write_text(json.dumps(data))
    with pytest.raises(UserError, match="calibrated ranges lack"):
        quantize_onnx(cached_onnx(weights, (1, 3, 32, 32), "fp32"), tmp_path / "out.onnx", [], method="max",
                      ranges_cache=partial)


# ---------------------------------------------------------------- skip / OOM / error

class FakeRunner(Runner):
    """Returns zeros, or raises ``error`` from run(); records whether it was closed."""

    closed: list[str] = []

    def __init__(self, device: str = "cpu", error: BaseException | None = None, route: str = "fake") -> None:
        super().__init__(device)
        self.error, self.route = error, route

    def run(self, x: torch.Tensor) -> torch.Tensor:
        if self.error is not None:
            raise self.error
        b, _, h, w = x.shape
        return torch.zeros(b, 31, h, w)

    def close(self) -> None:
        FakeRunner.closed.append(self.route)


def _factory(error: BaseException | None = None):
    def make(route, state_dict, device=None, **options):
        return FakeRunner(device or "cpu", error, route)
    return make


def _unavailable(route, state_dict, device=None, **options):
    raise RouteUnavailable(f"{route}: needs a CUDA GPU and none is visible")


def test_unavailable_route_is_a_skipped_row():
    (row,) = benchmark_route("torch-fp16", {}, 2, 8, 8, "cpu", BenchOptions(timing=TINY), factory=_unavailable)
    assert row.status == "skipped" and row.reason == "torch-fp16: needs a CUDA GPU and none is visible"
    assert row.batch == 2 and row.median_ms is None


def test_oom_row_closes_runner_and_loop_goes_on(weights, monkeypatch):
    FakeRunner.closed.clear()
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    # A registry factory: (state_dict, device, route=..., **options), as make_runner calls it.
    spec_factory = lambda state_dict, device, route, **options: FakeRunner(device or "cpu", oom, route)  # noqa: E731
    monkeypatch.setitem(ROUTES, "fake-oom", RouteSpec("fake-oom", "always OOM", spec_factory, {}, cuda_only=False))
    rows = run_benchmark(["fake-oom", "torch-fp32"], [1, 2], 16, 16, weights, "cpu", BenchOptions(timing=TINY),
                         progress=False)
    by = {(r.route, r.batch): r for r in rows}
    assert by["fake-oom", 1].status == "oom" and "out of memory" in by["fake-oom", 1].reason
    assert by["fake-oom", 2].status == "skipped" and "out of memory at batch 1" in by["fake-oom", 2].reason
    assert by["torch-fp32", 1].status == "ok" and by["torch-fp32", 2].status == "ok"
    assert FakeRunner.closed == ["fake-oom"]


def test_exception_classification():
    assert classify(RuntimeError("[ONNXRuntimeError] : 6 : Failed to allocate memory: out of memory"))[0] == "oom"
    assert classify(ModuleNotFoundError("No module named 'tensorrt'"))[0] == "skipped"
    status, reason = classify(ValueError("bad shape\nsecond line"))
    assert status == "error" and reason == "ValueError: bad shape"
    (row,) = benchmark_route("fake", {}, 1, 8, 8, "cpu", BenchOptions(timing=TINY),
                             factory=_factory(RuntimeError("kernel failed")))
    assert row.status == "error" and row.reason == "RuntimeError: kernel failed"


def test_wrong_output_shape_is_an_error():
    class Bad(FakeRunner):
        def run(self, x):
            return torch.zeros(1, 3, 8, 8)

    (row,) = benchmark_route("bad", {}, 1, 8, 8, "cpu", BenchOptions(timing=TINY),
                             factory=lambda *a, **k: Bad())
    assert row.status == "error" and "expected a tensor of shape (1, 31, 8, 8)" in row.reason


# ---------------------------------------------------------------- results

def _rows() -> list[Row]:
    rows = []
    for route, base in (("torch-fp32", 40.0), ("torch-fp16", 20.0)):
        for b in (1, 4):
            ms = base * b
            rows.append(Row(route, b, 64, 64, device="cuda:0", timing_method="cuda-events", n_runs=10,
                            median_ms=ms, p90_ms=ms * 1.1, p99_ms=ms * 1.2, min_ms=ms * 0.9, mean_ms=ms, std_ms=0.5,
                            throughput_ips=b / ms * 1e3, peak_torch_mib=100.0 * b,
                            settings={"precision": route[-4:], "tf32": False}))
    rows.append(Row("trt-api-fp16", 1, 64, 64, device="cuda:0", status="skipped",
                    reason="tensorrt: not installed, see README | section 1"))
    rows.append(Row("torch-fp32", 1, 64, 64, device="cuda:0", repeat=1, median_ms=41.0, throughput_ips=24.4))
    attach_speedups(rows)
    return rows


def test_speedups_and_repeat_check():
    rows = _rows()
    fp16 = next(r for r in rows if r.route == "torch-fp16" and r.batch == 4)
    assert fp16.speedup == pytest.approx(2.0) and fp16.baseline == "torch-fp32"
    assert next(r for r in rows if r.status == "skipped").speedup is None
    (check,) = repeat_check(rows)
    assert check["batch"] == 1 and check["diff_pct"] == pytest.approx(1 / 40.5 * 100) and check["within"]


def test_json_csv_round_trip(tmp_path):
    rows = _rows()
    env = {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11"}
    json_path, csv_path = write_results(BenchResult(rows, env, {"weights": "weights: test"}), tmp_path, "run1")
    back = read_results(json_path)
    assert back.rows == rows and back.environment == env and back.metadata["weights"] == "weights: test"
    from_csv = read_rows_csv(csv_path)
    assert len(from_csv) == len(rows)
    for a, b in zip(rows, from_csv):
        assert (a.label, a.batch, a.status, a.reason, a.settings, a.repeat) == (b.label, b.batch, b.status, b.reason,
                                                                                b.settings, b.repeat)
        assert a.median_ms == pytest.approx(b.median_ms) if a.median_ms is not None else b.median_ms is None


def test_merge_replaces_same_measurement():
    first = BenchResult([Row("torch-fp32", 1, 8, 8, median_ms=10.0), Row("torch-fp16", 1, 8, 8, median_ms=5.0)],
                        {"gpu": "X"}, {"source": "a.json"})
    second = BenchResult([Row("torch-fp32", 1, 8, 8, median_ms=11.0)], {"gpu": "X"}, {"source": "b.json"})
    merged = merge_results([first, second])
    assert sorted((r.route, r.median_ms) for r in merged.rows) == [("torch-fp16", 5.0), ("torch-fp32", 11.0)]
    assert [m["source"] for m in merged.metadata["sources"]] == ["a.json", "b.json"]


def test_merge_drops_graph_rows_made_obsolete_by_a_self_graphing_runner():
    old = BenchResult([Row("fused-fp16", 1, 8, 8, median_ms=6.5), Row("fused-fp16", 1, 8, 8, median_ms=5.7,
                                                                       cuda_graph=True),
                       Row("torch-fp16", 1, 8, 8, median_ms=25.0), Row("torch-fp16", 1, 8, 8, median_ms=24.0,
                                                                       cuda_graph=True)], {"gpu": "X"})
    new = BenchResult([Row("fused-fp16", 1, 8, 8, median_ms=5.1, settings={"cuda_graph": True})], {"gpu": "X"})
    merged = merge_results([old, new])
    assert sorted((r.label, r.median_ms) for r in merged.rows) == [
        ("fused-fp16", 5.1), ("torch-fp16", 25.0), ("torch-fp16 +graph", 24.0)]


def test_results_dir_merges_in_run_order_not_name_order(tmp_path):
    newer = BenchResult([Row("fused-fp16", 1, 8, 8, median_ms=3.0)], {"gpu": "X", "date_utc": "2026-01-02T00:00:00"})
    older = BenchResult([Row("fused-fp16", 1, 8, 8, status="skipped", reason="not built")],
                        {"gpu": "X", "date_utc": "2026-01-01T00:00:00"})
    write_results(newer, tmp_path, "a-new")
    write_results(older, tmp_path, "z-old")
    latency, _ = load_results_dir(tmp_path)
    (row,) = merge_results(latency).rows
    assert row.status == "ok" and row.median_ms == 3.0


def test_environment_is_complete_and_anonymous():
    env = capture_environment("cpu")
    for key in ("date_utc", "python", "torch", "cpu", "tf32_matmul", "tf32_cudnn"):
        assert key in env
    text = json.dumps(env, default=str)
    import socket

    host = socket.gethostname()
    if len(host) > 3:
        assert host not in text
    assert str(Path.home()) not in text
    assert environment_slug({"gpu": "NVIDIA H100 80GB HBM3"}) == "nvidia-h100-80gb-hbm3"
    assert environment_slug({}) == "cpu"


def test_nvidia_smi_query_is_parsed(tmp_path, monkeypatch):
    # A stand-in nvidia-smi: two GPUs; the one whose UUID torch reports must be picked.
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\n"
                    "echo 'GPU-aaa, NVIDIA A10, 550.54.15, P0, 1695, 6251, 1695, 6251, 148.20, 150.00, 61'\n"
                    "echo 'GPU-bbb, NVIDIA H100 80GB HBM3, 580.65.06, P0, 1980, 2619, 1980, 2619, [N/A], 700.00, 45'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    from mstpp.bench.environment import query_nvidia_smi

    info = query_nvidia_smi("bbb")
    assert info == {"smi_name": "NVIDIA H100 80GB HBM3", "driver": "580.65.06", "pstate": "P0",
                    "sm_clock_mhz": 1980.0, "mem_clock_mhz": 2619.0, "sm_clock_max_mhz": 1980.0,
                    "mem_clock_max_mhz": 2619.0, "power_draw_w": None, "power_limit_w": 700.0, "temperature_c": 45.0}
    assert query_nvidia_smi()["smi_name"] == "NVIDIA A10"


# ---------------------------------------------------------------- report and figures

def test_report_tables_name_routes_and_baseline():
    res = BenchResult(_rows(), {"gpu": "NVIDIA H100"}, {"source": "x.json", "weights": "weights: test"})
    text = render_report([res])
    table = latency_table(res.rows)
    assert "| route | b=1 | b=4 |" in table and "| torch-fp16 | 20.0 ms / 50.0 img/s / 2.00x |" in table
    assert "torch-fp32 (PyTorch FP32 eager, TF32 off)" in table
    assert "trt-api-fp16" in text and "tensorrt: not installed, see README \\| section 1" in text
    assert "Repeat check" in text and "gpu: NVIDIA H100" in text


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_build_report_with_accuracy_and_figures(tmp_path):
    results = tmp_path / "results"
    write_results(BenchResult(_rows(), {"gpu": "NVIDIA H100"}, {"weights": "weights: test"}), results, "lat")
    accuracy = {"kind": "accuracy", "metadata": {"weights": "weights: test"}, "environment": {},
                "rows": [{"route": "ort-cuda", "status": "ok", "mean_abs": 7e-6, "max_abs": 2e-5,
                          "per_image_mean_abs": [5e-6, 7e-6, 9e-6]},
                         {"route": "trt-parser-fp16", "status": "ok", "mean_abs": 1.6e-3,
                          "per_image_mean_abs": [1e-3, 2e-3]},
                         {"route": "trt-api-int8", "status": "skipped", "reason": "no TensorRT"}]}
    (results / "acc.json").write_text(json.dumps(accuracy))
    (results / "unrelated.json").write_text(json.dumps({"builder": "config"}))
    report = build_report(results, tmp_path / "docs" / "REPORT.md")
    text = report.read_text()
    for route in ("torch-fp32", "torch-fp16", "trt-api-fp16", "ort-cuda", "trt-parser-fp16"):
        assert route in text
    assert "| route | status | mean_abs | max_abs |" in text and "7e-06" in text
    figures = sorted((tmp_path / "docs" / "figures").glob("*.png"))
    names = {p.name for p in figures}
    assert {"nvidia-h100_latency_throughput_gpu.png", "nvidia-h100_speedup_b1.png", "nvidia-h100_speedup_b4.png",
            "accuracy_error_distribution.png"} <= names
    assert all(_is_png(p) for p in figures)
    assert "](figures/nvidia-h100_speedup_b4.png)" in text


# ---------------------------------------------------------------- CLI

def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "performance_latency.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_cli_quick_run_writes_results(tmp_path):
    proc = _cli("--quick", "--routes", "torch-fp32", "--out-dir", str(tmp_path), "--tag", "quick", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "torch-fp32" in proc.stdout and "weights:" in proc.stdout
    res = read_results(tmp_path / "quick.json")
    (row,) = res.rows
    assert row.status == "ok" and (row.height, row.width, row.batch) == (64, 64, 1)
    assert (tmp_path / "quick.csv").is_file() and "python" in res.environment
    assert str(tmp_path) not in (tmp_path / "quick.json").read_text()  # absolute paths are not recorded


@pytest.mark.parametrize("args, needle", [
    (["--batch-sizes", "0"], "positive integer"),
    (["--batch-sizes", "two"], "positive integer"),
    (["--routes", "nope"], "unknown route 'nope'"),
    (["--height", "-3"], "positive integer"),
    (["--device", "gpu"], "cuda"),
    (["--tag", "../x"], "file name stem"),
])
def test_cli_bad_arguments_exit_2_with_one_line(args, needle):
    proc = _cli(*args, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_cli_lists_routes():
    proc = _cli("--list-routes", timeout=60)
    assert proc.returncode == 0 and "torch-fp32" in proc.stdout and "trt-api-fp16-plugins" in proc.stdout


def test_kernel_groups_tell_our_kernels_from_cudnn():
    from mstpp.bench.profiling import kernel_group

    assert kernel_group("void mstpp::(anonymous namespace)::ffn_tc_kernel<__half, Cfg<31> >(") == "mstpp ffn kernel"
    assert kernel_group("void mstpp::(anonymous namespace)::attn_fold_kernel<62, __half>(") == \
        "mstpp attention kernels"
    assert kernel_group("void mstpp::(anonymous namespace)::conv_tc_kernel<__half, 3, 1>(") == "mstpp glue kernels"
    assert kernel_group("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc") == \
        "convolution (cuDNN/cuBLAS)"
    assert kernel_group("Memset (Device)") == "other"

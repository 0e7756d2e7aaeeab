"""Inputs that used to crash: too-small images, images too large for memory, static ONNX shapes, and the
timing cache of a CPU-only TensorRT-RTX build. Each ends in one line (or an ``oom`` row), never a traceback."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from architecture import MST_Plus_Plus
from conftest import REPO, run_script
from mstpp.errors import UserError
from mstpp.input_size import MIN_INPUT_SIZE, check_input_size, size_problem

ONE_LINE_ERROR = "needs at least 5x5 pixels"


def _assert_user_error(proc: subprocess.CompletedProcess, fragment: str) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    return lines[0]


def _write_png(path: Path, height: int, width: int) -> Path:
    rng = np.random.default_rng(height * 1000 + width)
    cv2.imwrite(str(path), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return path


# ------------------------------------------------------------------ smallest input

def test_smallest_size_is_where_the_model_starts_to_work():
    """The documented minimum is the model's real one: every H (and W) below it fails, it and above run."""
    assert MIN_INPUT_SIZE == 5
    model = MST_Plus_Plus().eval()
    with torch.inference_mode():
        for side in range(1, 10):
            for shape in ((1, 3, side, 8), (2, 3, 8, side)):
                works = True
                try:
                    model(torch.rand(*shape))
                except RuntimeError:
                    works = False
                assert works == (side >= MIN_INPUT_SIZE), shape
                assert (size_problem(shape[2], shape[3]) is None) == works, shape
    with pytest.raises(UserError, match=r"photo.png is 4x9 \(HxW\), but MST\+\+ needs at least 5x5"):
        check_input_size(4, 9, "photo.png")


@pytest.mark.parametrize("height,width", [(1, 1), (4, 4), (2, 512)])
def test_infer_refuses_small_images(tmp_path, height, width):
    image = _write_png(tmp_path / f"small_{height}x{width}.png", height, width)
    line = _assert_user_error(run_script("infer.py", str(image), "--out-dir", str(tmp_path / "out")),
                              ONE_LINE_ERROR)
    assert f"{height}x{width}" in line and str(image) in line
    assert not (tmp_path / "out").exists()


def test_infer_runs_the_smallest_image(tmp_path):
    image = _write_png(tmp_path / "tiny.png", MIN_INPUT_SIZE, MIN_INPUT_SIZE)
    proc = run_script("infer.py", str(image), "--out-dir", str(tmp_path / "out"), "--no-mat")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.load(tmp_path / "out" / "tiny.npy").shape == (31, MIN_INPUT_SIZE, MIN_INPUT_SIZE)


def test_torch2onnx_refuses_3x3(tmp_path):
    proc = run_script("torch2onnx.py", "--height", "3", "--width", "3", "--onnx_path", str(tmp_path / "m.onnx"))
    _assert_user_error(proc, "--height/--width is 3x3 (HxW), but MST++ needs at least 5x5")
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory):
    from mstpp.onnx.export import export_onnx
    from mstpp.onnx.simplify import simplify

    folder = tmp_path_factory.mktemp("dyn")
    raw = export_onnx(MST_Plus_Plus().eval(), folder / "dynamic.raw.onnx", 1, 16, 16, dynamic=True)
    return simplify(raw, folder / "dynamic.onnx")  # what torch2onnx.py writes: the statement must survive


def test_dynamic_onnx_states_minimum_and_runner_checks_first(dynamic_onnx):
    import onnx
    import onnxruntime as ort

    from mstpp.backends.onnxruntime_runner import OrtRunner
    from mstpp.onnx.names import MIN_SIZE_KEY

    proto = onnx.load(str(dynamic_onnx))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[MIN_SIZE_KEY] == "5" and "H and W must be >= 5" in proto.doc_string
    # The file itself: 5x5 runs, 4x4 fails inside onnxruntime's reflect Pad.
    sess = ort.InferenceSession(str(dynamic_onnx), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"rgb": np.random.rand(1, 3, 5, 5).astype(np.float32)})[0].shape == (1, 31, 5, 5)
    with pytest.raises(Exception):
        sess.run(None, {"rgb": np.random.rand(1, 3, 4, 4).astype(np.float32)})
    # The runner refuses before onnxruntime sees the input.
    runner = OrtRunner(MST_Plus_Plus().state_dict(), device="cpu", provider="cpu", onnx_path=dynamic_onnx)
    with pytest.raises(UserError, match=r"input \(1, 3, 4, 4\) is 4x4 \(HxW\), but MST\+\+ needs at least 5x5"):
        runner.prepare((1, 3, 4, 4))


def test_engine_profiles_refuse_a_minimum_below_5():
    from mstpp.trt.builder import ShapeRange

    ShapeRange((1, 3, 5, 5), (1, 3, 64, 64), (1, 3, 128, 128)).validate()
    with pytest.raises(UserError, match="the engine's smallest input is 4x16 .* at least 5x5"):
        ShapeRange((1, 3, 4, 16), (1, 3, 64, 64), (1, 3, 128, 128)).validate()
    with pytest.raises(UserError, match="the engine input is 3x3"):
        ShapeRange.static((1, 3, 3, 3)).validate()


def test_engine_scripts_refuse_small_shapes(tmp_path):
    proc = run_script("mst_trt_api.py", "--height", "3", "--width", "3", "--trt", "tensorrt_rtx",
                      "--plan_path", str(tmp_path / "p.plan"), "--timing-cache", str(tmp_path / "tc"))
    if "TensorRT" in proc.stderr and "not installed" in proc.stderr:
        pytest.skip("no TensorRT-RTX here")
    _assert_user_error(proc, "the engine input is 3x3 (HxW), but MST++ needs at least 5x5")
    proc = run_script("mst_trt_api.py", "--dynamic", "--min-shape", "1x4x4", "--height", "16", "--width", "16",
                      "--trt", "tensorrt_rtx", "--plan_path", str(tmp_path / "p.plan"),
                      "--timing-cache", str(tmp_path / "tc"))
    _assert_user_error(proc, "the engine's smallest input is 4x4 (HxW), but MST++ needs at least 5x5")
    assert not (tmp_path / "p.plan").exists()


# ------------------------------------------------------------------ memory estimates

def test_gpu_coefficients_are_the_fit_of_the_committed_results():
    """GPU_FITS must be what tools/fit_memory_models.py gets from docs/results today."""
    from tools.fit_memory_models import fit_upper_line, measurements
    from mstpp.memory import GPU_FITS, GPU_SOURCES, MIB

    assert set(GPU_FITS) == set(GPU_SOURCES)
    for route, files in GPU_SOURCES.items():
        points = measurements(route, files)
        assert len(points) >= 4, route
        fixed, per_px = fit_upper_line(points)
        assert abs(GPU_FITS[route][0] - fixed / MIB) <= 0.5 and abs(GPU_FITS[route][1] - per_px) <= 0.5, route


def test_gpu_estimates_cover_committed_measurements_and_the_24mp_run():
    from tools.fit_memory_models import measurements
    from mstpp.memory import GB, GPU_MODELS, GPU_SOURCES

    for route, files in GPU_SOURCES.items():
        model = GPU_MODELS[route]
        for pixels, measured in measurements(route, files):
            batch = pixels // (512 * 482)
            assert model.bytes_for((batch, 3, 512, 482)) >= measured * 0.99, (route, batch)
    # The fused FP16 route ran one 4000x6000 image in 5.0 GB; its model says so rather than 18 GB.
    assert GPU_MODELS["fused-fp16"].bytes_for((1, 3, 4000, 6000)) == pytest.approx(5.0 * GB, rel=1e-6)


def test_check_fits_says_need_have_and_what_fits(monkeypatch):
    import mstpp.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: int(4e9))
    model = memory.CPU_MODELS["torch-fp32"]
    assert memory.check_fits("torch-fp32", (1, 3, 1024, 1024), "cpu") == model.bytes_for((1, 3, 1024, 1024))
    with pytest.raises(memory.MemoryShortage) as info:
        memory.check_fits("torch-fp32", (4, 3, 1024, 1024), "cpu", what="x.png")
    msg = str(info.value)
    assert msg.startswith("x.png: torch-fp32 needs about 8.0 GB in RAM for a 4x3x1024x1024 batch, and 4.0 GB")
    assert "a batch of 1" in msg and "--route fused-fp16" in msg and "\n" not in msg
    h, w = map(int, msg.split("at most ")[1].split(" ")[0].split("x"))
    assert model.bytes_for((1, 3, h, w)) <= 0.9 * 4e9 < model.bytes_for((1, 3, h + 2, w + 2))
    assert memory.estimate_bytes("trt-api-fp16", (1, 3, 64, 64), "cuda") is None  # not measured: no check


def test_available_host_memory_is_bounded_by_meminfo():
    from mstpp.memory import available_host_bytes

    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        pytest.skip("no /proc/meminfo")
    line = next(l for l in meminfo.read_text().splitlines() if l.startswith("MemAvailable:"))
    assert 0 < available_host_bytes() <= int(line.split()[1]) * 1024 * 1.05


# Runs infer.py in a child that reports its own peak RSS, so "refused without allocating" is measured.
_PEAK_RSS_WRAPPER = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
    print(f"peak_rss_kb={peak}", file=sys.stderr)
"""


def test_infer_refuses_a_24mp_jpeg_on_the_cpu_within_seconds(tmp_path):
    from mstpp.memory import CPU_MODELS, available_host_bytes

    need = CPU_MODELS["torch-fp32"].bytes_for((1, 3, 4000, 6000))
    if torch.cuda.is_available() or available_host_bytes() > need:
        pytest.skip("this machine could run a 24 MP image on the CPU route")
    y, x = np.mgrid[0:4000, 0:6000].astype(np.float32)
    photo = np.stack([x / 6000, y / 4000, (x + y) / 10000], axis=-1) * 255
    path = tmp_path / "photo_6000x4000.jpg"
    cv2.imwrite(str(path), photo.astype(np.uint8))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS_WRAPPER, "infer.py", str(path), "--out-dir",
                           str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    line = _assert_user_error(proc, "torch-fp32 needs about 44.3 GB in RAM for a 1x3x4000x6000 batch")
    assert "GB is available" in line and "at most" in line and "--route fused-fp16 (about 5.0 GB" in line
    peak_kb = int(proc.stderr.split("peak_rss_kb=")[1].split()[0])
    assert peak_kb < 1.5e6, f"peak RSS {peak_kb} kB: the image or the model's tensors were allocated"
    assert seconds < 120  # torch import dominates on a loaded 2-core machine; the check itself is instant


def test_benchmark_batch_that_does_not_fit_is_an_oom_row(monkeypatch):
    import mstpp.memory as memory
    from mstpp.bench.runner_loop import BenchOptions, run_benchmark
    from mstpp.bench.timing import TimingConfig

    budget = memory.CPU_MODELS["torch-fp32"].bytes_for((1, 3, 16, 16)) + 1  # batch 1 fits, batch 2 not
    monkeypatch.setattr(memory, "available_bytes", lambda device: budget)
    timing = TimingConfig(warmup_ms=0.0, warmup_runs=1, min_ms=0.0, min_runs=2, floor_runs=2)
    rows = run_benchmark(["torch-fp32"], [1, 2, 4], 16, 16, MST_Plus_Plus().state_dict(), "cpu",
                         BenchOptions(timing=timing), progress=False)
    by = {r.batch: r for r in rows}
    assert by[1].status == "ok"
    assert by[2].status == "oom" and by[2].reason.startswith("not run: estimate: torch-fp32 needs about")
    assert "a batch of 1" in by[2].reason
    assert by[4].status == "skipped" and "out of memory at batch 2" in by[4].reason


# ------------------------------------------------------------------ static ONNX shapes

def test_onnx_shape_comes_from_a_static_file():
    from mstpp.trt.cli_args import engine_shape_for_onnx

    assert engine_shape_for_onnx((1, 3, 64, 48), None, None, None, "m.onnx") == (1, 64, 48)
    assert engine_shape_for_onnx((1, 3, 64, 48), None, 64, None, "m.onnx") == (1, 64, 48)  # repeating is fine
    # A dynamic file takes the flags, else the default 1x3x512x482.
    assert engine_shape_for_onnx((None, 3, None, None), 2, None, 96, "d.onnx") == (2, 512, 96)
    with pytest.raises(UserError, match=r"m.onnx is static \(1, 3, 64, 48\), but --width is 482"):
        engine_shape_for_onnx((1, 3, 64, 48), None, None, 482, "m.onnx")


@pytest.fixture(scope="module")
def static_onnx(tmp_path_factory):
    from mstpp.onnx.export import export_onnx

    return export_onnx(MST_Plus_Plus().eval(), tmp_path_factory.mktemp("static") / "m24.onnx", 1, 24, 32)


def test_parser_builds_a_static_onnx_at_its_own_size(tmp_path, static_onnx):
    pytest.importorskip("tensorrt_rtx")
    plan = tmp_path / "p.plan"
    proc = run_script("mst_onnxparser.py", "--onnx_path", str(static_onnx), "--plan_path", str(plan),
                      "--trt", "tensorrt_rtx", "--timing-cache", str(tmp_path / "tc"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    record = json.loads(Path(f"{plan}.json").read_text())
    assert record["input"]["opt"] == [1, 3, 24, 32]
    proc = run_script("mst_onnxparser.py", "--onnx_path", str(static_onnx), "--plan_path", str(plan),
                      "--trt", "tensorrt_rtx", "--height", "512")
    _assert_user_error(proc, "is static (1, 3, 24, 32), but --height is 512")


# ------------------------------------------------------------------ timing cache

def test_second_build_with_the_same_timing_cache_prints_no_error(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    from mstpp.trt.builder import cuda_device_usable

    outputs = []
    for i in range(2):
        proc = run_script("mst_trt_api.py", "--height", "16", "--width", "16", "--trt", "tensorrt_rtx",
                          "--plan_path", str(tmp_path / f"p{i}.plan"), "--timing-cache", str(tmp_path / "tc"))
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        outputs.append(proc.stdout + proc.stderr)
    for text in outputs:
        assert "ERROR" not in text and "Failed to deserialize" not in text, text[-2000:]
    if not cuda_device_usable():
        notes = [line for line in outputs[1].splitlines() if "timing cache" in line]
        assert len(notes) == 1 and "not used: reading one needs a CUDA GPU" in notes[0]


def test_image_size_without_decoding(tmp_path):
    from mstpp.io import image_size

    assert image_size(_write_png(tmp_path / "a.png", 7, 9)) == (7, 9)
    np.save(tmp_path / "chw.npy", np.zeros((3, 7, 9), np.float32))
    np.save(tmp_path / "hwc.npy", np.zeros((7, 9, 3), np.float32))
    assert image_size(tmp_path / "chw.npy") == image_size(tmp_path / "hwc.npy") == (7, 9)

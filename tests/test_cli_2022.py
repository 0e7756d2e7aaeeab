"""The 2022 MST++ TensorRT project's command lines, verbatim: each parses with the 2022 meaning, and the
export -> weights -> network-API FP32 engine chain runs end to end at the 2022 default size (1x3x512x482)."""
from __future__ import annotations

import importlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mstpp.errors import UserError

REPO = Path(__file__).resolve().parents[1]

# As printed in the 2022 project's README (the double space before --onnx_path included).
LINES_2022 = [
    "python3 torch2onnx.py --batch_size=1 --onnx_path=./model/mst_plus_plus_b1.onnx --simplifier",
    "python3 get_weights.py --model_path=./model/mst_plus_plus_b1.onnx --weight_path=./model/mst_plus_plus_weights_b1.npz",
    "python3 mst_trt_api.py --batch_size=1 --mode=FP32 --plan_path=./model/mst_plus_plus_b1.plan --weight_path=./model/mst_plus_plus_weights_b1.npz",
    "python3 mst_trt_api.py --batch_size=1 --mode=FP16 --plan_path=./model/mst_plus_plus_b1_fp16.plan --weight_path=./model/mst_plus_plus_weights_b1.npz",
    "python3 mst_trt_api.py --batch_size=1 --mode=INT8 --calibration_table_path=./model/mst_calibration_b1.cache --plan_path=./model/mst_plus_plus_b1_int8.plan --weight_path=./model/mst_plus_plus_weights_b1.npz",
    "python3 mst_onnxparser.py --batch_size=1 --mode=INT8 --calibration_table_path=./model/mst_calibration_onnxparser_b1.cache  --onnx_path=./model/mst_plus_plus_b1.onnx --plan_path=./model/mst_plus_plus_onnxparser_b1_int8.plan",
    "python3 performance_latency.py",
    "python3 performance_accuracy.py",
    "python3 performance_int8.py",
]


def _parse(line: str):
    words = shlex.split(line)
    assert words[0] == "python3" and (REPO / words[1]).is_file()
    module = importlib.import_module(f"mstpp.scripts.{words[1][:-3]}")
    return words[1], module.build_parser().parse_args(words[2:])


@pytest.mark.parametrize("line", LINES_2022, ids=[f"{i}-{shlex.split(x)[1]}" for i, x in enumerate(LINES_2022)])
def test_2022_line_parses(line):
    script, args = _parse(line)
    if "--batch_size=1" in line:
        assert args.batch_size == 1
    if script in ("torch2onnx.py", "mst_trt_api.py"):
        assert (args.height, args.width) == (512, 482)  # the 2022 default size
    if script == "torch2onnx.py":
        assert args.simplifier == "onnxslim" and args.onnx_path == Path("model/mst_plus_plus_b1.onnx")
    if "--mode=" in line:
        assert args.mode == line.split("--mode=")[1].split()[0]
    if "--calibration_table_path" in line:
        assert args.calibration_table_path.name.startswith("mst_calibration") and args.calib_cache is None
    if script == "mst_trt_api.py":
        assert args.weights == "./model/mst_plus_plus_weights_b1.npz"


def test_our_option_names_still_parse():
    _, args = _parse("python3 torch2onnx.py --simplifier onnxsim --onnx-path m.onnx")
    assert args.simplifier == "onnxsim"
    _, args = _parse("python3 torch2onnx.py --simplifier none")
    assert args.simplifier == "none"
    _, args = _parse("python3 mst_trt_api.py --mode int8 --calib-cache c.json --weights w.npz")
    assert args.mode == "INT8" and args.calib_cache == Path("c.json") and args.calibration_table_path is None


def _run(*args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("argv,fragment", [
    (["torch2onnx.py", "--simplifier", "onnxsimp"], "argument --simplifier: invalid choice: 'onnxsimp'"),
    (["mst_trt_api.py", "--calib-cache", "a", "--calibration_table_path", "b"], "not allowed with argument"),
    (["mst_onnxparser.py", "--mode=INT8", "--calibration-table-path"], "expected one argument"),
    (["mst_onnxparser.py", "--mode=INT8", "--calib-cache", "missing.cache", "--onnx_path", "missing.onnx"],
     "not found"),
])
def test_2022_option_mistakes_are_one_line(argv, fragment):
    proc = _run(*argv, cwd=REPO, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert fragment in lines[0] and "Traceback" not in proc.stderr


def test_calibration_table_is_reused_when_present_and_written_when_missing(tmp_path, monkeypatch):
    from mstpp.trt import int8
    from mstpp.weights import seeded_state_dict

    state = seeded_state_dict()
    weights = {k: v.numpy() for k, v in state.items()}
    calls = []
    monkeypatch.setattr(int8, "calibration_images", lambda: [np.zeros((3, 16, 16), np.float32)])
    real_calibrate = int8.calibrate
    monkeypatch.setattr(int8, "calibrate", lambda s, imgs: calls.append(len(imgs)) or real_calibrate(s, imgs,
                                                                                                   progress=False))
    table = tmp_path / "mst_calibration_b1.cache"
    first = int8.calibration_table(state, weights, table)
    assert table.is_file() and calls == [1]  # missing: calibrated and written
    second = int8.calibration_table(state, weights, table)
    assert calls == [1] and second == first  # present: reused, no calibration
    with pytest.raises(UserError, match="calibration cache not found"):
        int8.calibration_table(state, weights, tmp_path / "missing.json", must_exist=True)


def test_2022_fp32_api_chain_end_to_end(tmp_path):
    """torch2onnx -> get_weights -> mst_trt_api FP32 at 1x3x512x482, the 2022 lines as typed, run from a
    fresh folder (their ./model paths are relative) with whichever TensorRT is installed."""
    pytest.importorskip("onnxslim")
    try:
        from mstpp.trt.version import detect

        detect()
    except Exception as exc:  # noqa: BLE001 - any failure to find TensorRT means this machine cannot build
        if os.environ.get("CI"):  # requirements.txt installs TensorRT-RTX: CI must run this chain
            pytest.fail(f"no TensorRT or TensorRT-RTX in CI: {exc}")
        pytest.skip(f"no TensorRT or TensorRT-RTX: {exc}")
    (tmp_path / "model").mkdir()
    for line in LINES_2022[:3]:
        words = shlex.split(line)
        proc = _run(str(REPO / words[1]), *words[2:], cwd=tmp_path)
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr
        if words[1] == "torch2onnx.py":
            assert "exporting MST++ 1x3x512x482" in proc.stdout and "max abs err" in proc.stdout
    plan = tmp_path / "model" / "mst_plus_plus_b1.plan"
    record = json.loads(Path(f"{plan}.json").read_text())
    assert plan.stat().st_size > 1e6
    assert record["settings"]["precision"] == "fp32"
    assert "mst_plus_plus_weights_b1.npz" in json.dumps(record)

"""The scripts as a user runs them: exit codes, one-line errors, no tracebacks."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import run_script


def _assert_user_error(proc, fragment: str):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], proc.stderr


def test_torch2onnx_end_to_end(tmp_path):
    out = tmp_path / "m.onnx"
    proc = run_script("torch2onnx.py", "--height", "32", "--width", "40", "--onnx_path", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()
    assert "onnxslim:" in proc.stdout and "max abs err" in proc.stdout
    assert "weights:" in proc.stdout.splitlines()[0]


def test_get_weights_from_checkpoint(tmp_path, golden_dir):
    out = tmp_path / "w.npz"
    proc = run_script("get_weights.py", "--model_path", str(golden_dir / "mstpp_golden_checkpoint.pth"),
                      "--weight_path", str(out))
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as data:
        assert "body.0.embedding.weight" in data.files and len(data.files) == 227


def test_other_model_checkpoint(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": torch.nn.Linear(3, 3).state_dict()}, path)
    _assert_user_error(run_script("get_weights.py", "--model_path", str(path)), "keys do not match MST++")


def test_not_mstpp_onnx(tmp_path):
    path = tmp_path / "other.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 4, 1), (torch.rand(1, 3, 4, 4),), str(path), dynamo=False)
    _assert_user_error(run_script("get_weights.py", "--model_path", str(path)), "MST++ maps")


@pytest.mark.parametrize("make,fragment", [
    (lambda p: None, "image not found"),
    (lambda p: p.write_bytes(b"garbage"), "cannot be decoded"),
    (lambda p: cv2.imwrite(str(p), np.full((8, 8), 100, np.uint8)), "grayscale"),
])
def test_infer_bad_images(tmp_path, make, fragment):
    path = tmp_path / "img.png"
    make(path)
    _assert_user_error(run_script("infer.py", str(path), "--out-dir", str(tmp_path / "o")), fragment)


def test_infer_writes_cubes(tmp_path):
    for name, size in (("a.png", (20, 24)), ("b.png", (16, 16)), ("c.png", (20, 24))):
        cv2.imwrite(str(tmp_path / name), np.random.randint(0, 255, (*size, 3), np.uint8))
    out = tmp_path / "cubes"
    proc = run_script("infer.py", str(tmp_path), "--out-dir", str(out), "--batch-size", "4")
    assert proc.returncode == 0, proc.stderr
    for stem, size in (("a", (20, 24)), ("b", (16, 16)), ("c", (20, 24))):
        assert np.load(out / f"{stem}.npy").shape == (31, *size)
        assert (out / f"{stem}_preview.png").is_file()


@pytest.mark.parametrize("script,args,fragment", [
    ("torch2onnx.py", ["--batch_size", "0"], "must be >= 1"),
    ("torch2onnx.py", ["--opset", "13"], "LayerNormalization needs opset >= 17"),
    ("torch2onnx.py", ["--verify-size", "64", "64"], "--verify-size needs --dynamic"),
    ("get_weights.py", ["--model_path", "missing.pth"], "not found"),
    ("-m", ["tools.profile_route", "--routes", "fused-fp17"], "unknown route(s) ['fused-fp17']"),
    ("-m", ["tools.profile_route", "--batch", "0"], "must be positive"),
])
def test_bad_arguments(script, args, fragment):
    proc = run_script(script, *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert fragment in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_profile_route_without_gpu_says_so():
    proc = run_script("-m", "tools.profile_route", "--routes", "torch-fp32")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "needs a CUDA GPU" in proc.stderr

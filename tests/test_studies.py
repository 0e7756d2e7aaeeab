"""The accuracy, INT8 and calibration scripts end to end on the CPU (small sizes), and the L2 rewrite."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from conftest import run_script
from mstpp.onnx.check import ort_session
from mstpp.onnx.export import export_onnx
from mstpp.onnx.rewrite import L2_FORMS, rewrite_l2_norms
from mstpp.onnx.simplify import simplify


def test_accuracy_script_quick(tmp_path):
    proc = run_script("performance_accuracy.py", "--quick", "--synthetic", "1", "--out-dir", str(tmp_path),
                      "--tag", "acc", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "acc.json").read_text())
    assert data["kind"] == "accuracy"
    rows = {r["route"]: r for r in data["rows"]}
    assert rows["torch-fp32"]["max_abs"] == 0.0
    assert rows["ort-cpu"]["status"] == "ok" and rows["ort-cpu"]["max_abs"] < 1e-4
    assert "mrae" in rows["torch-fp32"] and rows["ort-cpu"]["nan_count"] == 0


def test_accuracy_script_rejects_unknown_route(tmp_path):
    proc = run_script("performance_accuracy.py", "--routes", "nope", "--out-dir", str(tmp_path))
    assert proc.returncode == 2 and "unknown route 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_int8_script_localises(tmp_path):
    proc = run_script("performance_int8.py", "--size", "64", "64", "--synthetic", "0", "--out-dir", str(tmp_path),
                      "--tag", "i8", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "i8.json").read_text())
    where = data["metadata"]["localisation"]
    assert len(where["layers"]) == 155  # every convolution of MST++
    assert {r["route"] for r in data["rows"]} == {"torch-fp32", "ort-cpu-int8"}
    int8 = next(r for r in data["rows"] if r["route"] == "ort-cpu-int8")
    assert int8["status"] == "ok" and 0 < int8["mean_rel"] < 1


def test_calibrator_cache(tmp_path):
    cache = tmp_path / "calib.json"
    proc = run_script("calibrator.py", "--synthetic", "0", "--crop", "32", "--cache", str(cache))
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(cache.read_text())
    assert len(data["ranges"]) == 161  # 155 convolutions + q/k/v/proj inputs seen through the S-MSA hooks
    assert all(r["max"] >= r["p99.99"] > 0 for r in data["ranges"].values())


@pytest.mark.parametrize("form", [f for f in L2_FORMS if f != "reducel2"])
def test_l2_rewrites_keep_the_function(tmp_path, golden_state, form):
    from architecture import MST_Plus_Plus

    model = MST_Plus_Plus().eval()
    model.load_state_dict(golden_state)
    path = simplify(export_onnx(model, tmp_path / "m.raw.onnx", 1, 32, 40), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    assert rewrite_l2_norms(proto, form) == 30
    assert not any(n.op_type == "ReduceL2" for n in proto.graph.node)
    onnx.save(proto, str(tmp_path / "r.onnx"))
    x = np.random.default_rng(0).random((1, 3, 32, 40), dtype=np.float32)
    a = ort_session(path).run(None, {"rgb": x})[0]
    b = ort_session(tmp_path / "r.onnx").run(None, {"rgb": x})[0]
    assert np.abs(a - b).max() < 1e-5

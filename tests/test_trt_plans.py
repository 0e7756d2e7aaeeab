"""Plan records and the refusal of plans built by another TensorRT or for another GPU."""
from __future__ import annotations

import json
import types

import pytest

from mstpp.errors import UserError
from mstpp.trt.builder import ShapeRange, plan_record_path
from mstpp.trt.plan import check_compatible, read_plan_record
from mstpp.trt.version import TrtInfo


def _info(flavour="tensorrt", version="10.16.1.11"):
    return TrtInfo(types.SimpleNamespace(), flavour, version)


RECORD = {"tensorrt": {"flavour": "tensorrt", "version": "10.16.1.11"},
          "device": {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}}


def test_same_version_and_gpu_is_accepted():
    check_compatible(RECORD, _info(), "NVIDIA H100 80GB HBM3", "9.0", "m.plan")


def test_other_version_is_refused_with_both_versions_named():
    with pytest.raises(UserError, match=r"built with tensorrt 10.16.1.11, but TensorRT 11.1.0.106 is installed.*rebuild"):
        check_compatible(RECORD, _info(version="11.1.0.106"), "NVIDIA H100 80GB HBM3", "9.0", "m.plan")


def test_other_gpu_is_refused():
    with pytest.raises(UserError, match=r"built for NVIDIA H100 80GB HBM3 \(compute capability 9.0\); this GPU is "
                                        r"NVIDIA A10 \(8.6\)"):
        check_compatible(RECORD, _info(), "NVIDIA A10", "8.6", "m.plan")


def test_plan_without_record_is_left_to_tensorrt(tmp_path):
    assert read_plan_record(tmp_path / "m.plan") is None
    check_compatible(None, _info(), "any", "9.0", "m.plan")


def test_broken_record_is_a_user_error(tmp_path):
    plan_record_path(tmp_path / "m.plan").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_plan_record(tmp_path / "m.plan")


def test_shape_range_validation():
    ShapeRange((1, 3, 16, 16), (1, 3, 512, 482), (4, 3, 1024, 1024)).validate()
    with pytest.raises(UserError, match="min <= opt <= max"):
        ShapeRange((2, 3, 16, 16), (1, 3, 512, 482), (4, 3, 1024, 1024)).validate()


@pytest.mark.parametrize("plugins", ["ours", "fused"])
def test_rtx_has_no_plugins_and_says_so(tmp_path, golden_dir, plugins):
    pytest.importorskip("tensorrt_rtx")
    from conftest import run_script

    proc = run_script("mst_trt_api.py", "--weight_path", str(golden_dir / "mstpp_golden.npz"), "--plugins", plugins,
                      "--trt", "tensorrt_rtx", "--plan_path", str(tmp_path / "p.plan"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "has no plugin layers" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "p.plan").exists()


def test_fused_plugins_with_int8_are_refused_in_one_line(tmp_path, golden_dir):
    from conftest import run_script

    # Refused before TensorRT, the weights or calibration are looked at, so any TensorRT (or none) gives this.
    proc = run_script("mst_trt_api.py", "--weight_path", str(golden_dir / "mstpp_golden.npz"), "--plugins", "fused",
                      "--mode", "INT8", "--plan_path", str(tmp_path / "p.plan"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --plugins fused is not available with --mode INT8 (the MstMsa and MstFfn plugins have no INT8 "
        "path); use --plugins none or ours for INT8, or FP16/FP32 with fused"]


def test_rtx_plan_record_contents(tmp_path, golden_dir):
    pytest.importorskip("tensorrt_rtx")
    from conftest import run_script

    plan = tmp_path / "p.plan"
    proc = run_script("mst_trt_api.py", "--weight_path", str(golden_dir / "mstpp_golden.npz"), "--height", "32",
                      "--width", "32", "--dynamic", "--max-shape", "2x64x64", "--trt", "tensorrt_rtx",
                      "--plan_path", str(plan), "--timing-cache", str(tmp_path / "tc"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(plan_record_path(plan).read_text())
    assert record["input"] == {"name": "rgb", "min": [1, 3, 16, 16], "opt": [1, 3, 32, 32], "max": [2, 3, 64, 64]}
    assert record["settings"]["route"] == "api" and record["settings"]["workspace_gib"] == 4.0
    from mstpp.trt.builder import cuda_device_usable

    if cuda_device_usable():
        assert (tmp_path / "tc").stat().st_size > 0  # the timing cache was written back
    else:  # nothing can read a timing cache without a GPU: it is neither read nor written, and said so
        assert not (tmp_path / "tc").exists() and "timing cache" in proc.stdout and "not used" in proc.stdout

"""The ONNX package (mstpp/onnx): its steps, its import graph, the weights fingerprint, and INT8
calibration in bounded memory at the benchmark shape."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
#: Peak resident memory allowed for INT8 calibration at 1x3x512x482 on the CPU.
CALIBRATION_RSS_LIMIT_GB = 6.0


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """mstpp module -> the mstpp modules it imports anywhere in its file (function-level included)."""
    modules = {_module_name(p): p for p in (REPO / "mstpp").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def test_onnx_package_has_no_import_cycle():
    graph = _import_graph()
    onnx_side = [m for m in graph if m.startswith("mstpp.onnx") or m in ("mstpp.trt.int8", "mstpp.calibration",
                                                                         "mstpp.weights")]
    assert "mstpp.onnx.cache" in onnx_side and "mstpp.onnx.quantize" in onnx_side
    cycles = [c for m in onnx_side if (c := _cycle_through(graph, m))]
    assert not cycles, " -> ".join(cycles[0])


def test_library_has_no_import_cycle():
    """No module of mstpp reaches itself again through imports, function-level ones included."""
    graph = _import_graph()
    cycles = [c for m in graph if (c := _cycle_through(graph, m))]
    assert not cycles, " -> ".join(cycles[0])


def test_calibration_and_onnx_steps_do_not_import_backends():
    graph = _import_graph()
    for module in ["mstpp.calibration", *[m for m in graph if m.startswith("mstpp.onnx")]]:
        assert not {t for t in graph[module] if t.startswith("mstpp.backends")}, module
    calibrator = ast.parse((REPO / "calibrator.py").read_text())
    imported = {n.module for n in ast.walk(calibrator) if isinstance(n, ast.ImportFrom)}
    assert not any(m and m.startswith("mstpp.backends") for m in imported)


def test_cache_dir_is_the_one_place(tmp_path, monkeypatch):
    from mstpp.onnx.cache import DEFAULT_CACHE_DIR, cache_dir

    monkeypatch.setenv("MSTPP_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    monkeypatch.delenv("MSTPP_CACHE_DIR")
    assert cache_dir() == DEFAULT_CACHE_DIR
    # Nobody else reads the variable or builds the default path.
    readers = [p for p in (REPO / "mstpp").rglob("*.py")
               if "MSTPP_CACHE_DIR" in p.read_text() and p.name != "cache.py"]
    assert readers == []


def test_state_fingerprint_is_the_same_in_every_format(tmp_path, golden_state):
    from mstpp.onnx.export import export_onnx
    from mstpp.weights import read_state_dict, save_checkpoint, save_npz, state_fingerprint
    from architecture import build_model

    model = build_model("mst_plus_plus")
    model.load_state_dict(golden_state)
    fingerprints = {state_fingerprint(golden_state)}
    fingerprints.add(state_fingerprint(read_state_dict(save_npz(golden_state, tmp_path / "w.npz"))))
    fingerprints.add(state_fingerprint(read_state_dict(save_checkpoint(golden_state, tmp_path / "w.pth"))))
    fingerprints.add(state_fingerprint(read_state_dict(export_onnx(model, tmp_path / "w.onnx", 1, 32, 32))))
    fingerprints.add(state_fingerprint({k: v.numpy() for k, v in golden_state.items()}))
    assert len(fingerprints) == 1
    (fp,) = fingerprints
    assert len(fp) == 12 and int(fp, 16) >= 0
    changed = dict(golden_state)
    changed["conv_in.weight"] = changed["conv_in.weight"].clone()
    changed["conv_in.weight"][0, 0, 0, 0] += 1e-3
    assert state_fingerprint(changed) != fp


def test_pipeline_steps_compose(tmp_path, golden_state):
    """export -> simplify -> rewrite -> fp16 | quantize, each a function over files."""
    import onnx

    from architecture import build_model
    from mstpp.onnx.check import check_mstpp_onnx, ort_session
    from mstpp.onnx.export import export_onnx
    from mstpp.onnx.fp16 import convert_to_fp16
    from mstpp.onnx.quantize import quantize_onnx
    from mstpp.onnx.rewrite import rewrite_l2_norms
    from mstpp.onnx.simplify import simplify

    model = build_model("mst_plus_plus")
    model.load_state_dict(golden_state)
    raw = export_onnx(model, tmp_path / "raw.onnx", 1, 32, 32)
    slim = simplify(raw, tmp_path / "slim.onnx")
    proto = onnx.load(str(slim))
    assert rewrite_l2_norms(proto, "reducesum") > 0
    onnx.save(proto, str(tmp_path / "l2.onnx"))
    check_mstpp_onnx(tmp_path / "l2.onnx")
    fp16 = convert_to_fp16(tmp_path / "l2.onnx", tmp_path / "fp16.onnx")
    rng = np.random.default_rng(0)
    images = [rng.random((3, 32, 32), dtype=np.float32) for _ in range(2)]
    ranges = tmp_path / "ranges.json"
    int8 = quantize_onnx(tmp_path / "l2.onnx", tmp_path / "int8.onnx", images, ranges_cache=ranges)
    assert ranges.is_file()
    x = images[0][None]
    ref = ort_session(tmp_path / "l2.onnx").run(None, {"rgb": x})[0]
    for path, tol in ((fp16, 0.05), (int8, 0.25)):
        got = ort_session(path).run(None, {"rgb": x})[0]
        assert got.shape == ref.shape
        assert np.abs(got - ref).mean() / np.abs(ref).mean() < tol, path.name


def test_calibration_cache_is_written_when_missing_and_reused_when_present(tmp_path, golden_state):
    import onnx

    from architecture import build_model
    from mstpp.errors import UserError
    from mstpp.onnx.export import export_onnx
    from mstpp.onnx.quantize import quantize_onnx

    model = build_model("mst_plus_plus")
    model.load_state_dict(golden_state)
    fp32 = export_onnx(model, tmp_path / "m.onnx", 1, 32, 32)
    rng = np.random.default_rng(1)
    images = [rng.random((3, 32, 32), dtype=np.float32) for _ in range(2)]
    table = tmp_path / "calib.cache"
    first = quantize_onnx(fp32, tmp_path / "a.onnx", images, ranges_cache=table)
    written = table.read_bytes()
    calls = []
    second = quantize_onnx(fp32, tmp_path / "b.onnx", lambda: calls.append(1) or images, ranges_cache=table)
    assert calls == [] and table.read_bytes() == written  # reused: no calibration ran, file untouched
    scales = [{t.name: t.raw_data for t in onnx.load(str(p)).graph.initializer if t.name.endswith("_scale")}
              for p in (first, second)]
    assert len(scales[0]) > 20 and scales[0] == scales[1]
    with pytest.raises(UserError, match="calibrated with MinMax"):
        quantize_onnx(fp32, tmp_path / "c.onnx", images, method="percentile", ranges_cache=table)


def test_streamed_ranges_equal_onnxruntime_minmax_calibrator(tmp_path, golden_state):
    """The old path (onnxruntime's MinMax calibrator over all images at once) and the streaming
    collector give the same tensors and the same ranges."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from architecture import build_model
    from mstpp.onnx.export import export_onnx
    from mstpp.onnx.ranges import collect_minmax, load_ranges
    from mstpp.onnx.simplify import simplify

    model = build_model("mst_plus_plus")
    model.load_state_dict(golden_state)
    fp32 = simplify(export_onnx(model, tmp_path / "raw.onnx", 1, 48, 40), tmp_path / "m.onnx")
    rng = np.random.default_rng(2)
    feeds = [rng.random((1, 3, 48, 40), dtype=np.float32) * s for s in (0.5, 1.0, 2.0)]

    class Reader:
        def __init__(self):
            self.items = iter({"rgb": f} for f in feeds)

        def get_next(self):
            return next(self.items, None)

    old = tmp_path / "old.json"
    quantize_static(str(fp32), str(tmp_path / "old.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    calibration_cache_path=str(old), op_types_to_quantize=["Conv"], per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    before = load_ranges(old)
    after = collect_minmax(fp32, iter(feeds))
    assert len(after) > 100 and set(after) == set(before)
    worst = max(max(abs(after[k][0] - before[k][0]), abs(after[k][1] - before[k][1]))
                / max(abs(before[k][0]), abs(before[k][1]), 1e-12) for k in before)
    print(f"max relative range difference, streamed vs onnxruntime MinMax: {worst:.2e}")
    assert worst <= 1e-6


_EXPORT = """
import os, sys
from mstpp.onnx.cache import cached_onnx
from mstpp.weights import resolve_weights
state, _ = resolve_weights(None)
print(cached_onnx(state, (1, 3, 512, 482), "fp32"))
"""

_CALIBRATE = """
import json, resource, sys, time
from mstpp.calibration import calibration_images
from mstpp.onnx.quantize import CALIBRATION_METHOD, quantize_onnx
t = time.time()
images = calibration_images()
quantize_onnx(sys.argv[1], sys.argv[2], images, ranges_cache=sys.argv[3])
print(json.dumps({"images": len(images), "method": CALIBRATION_METHOD, "seconds": time.time() - t,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def test_int8_calibration_at_512x482_stays_within_6gb(tmp_path):
    """The default INT8 calibration (default images and method) of the 1x3x512x482 export, in a process
    of its own whose peak resident memory is measured by the kernel (ru_maxrss)."""
    env = {**os.environ, "MSTPP_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    t0 = time.time()
    export = subprocess.run([sys.executable, "-c", textwrap.dedent(_EXPORT)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=1200)
    assert export.returncode == 0, export.stderr[-2000:]
    fp32 = export.stdout.strip().splitlines()[-1]
    t1 = time.time()
    calib = subprocess.run([sys.executable, "-c", textwrap.dedent(_CALIBRATE), fp32, str(tmp_path / "int8.onnx"),
                            str(tmp_path / "ranges.json")], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=1800)
    assert calib.returncode == 0, calib.stderr[-2000:]
    result = json.loads(calib.stdout.strip().splitlines()[-1])
    print(f"export {t1 - t0:.0f} s; INT8 calibration at 1x3x512x482: {result}")
    assert result["images"] >= 7
    assert result["peak_rss_gb"] <= CALIBRATION_RSS_LIMIT_GB
    ranges = json.loads((tmp_path / "ranges.json").read_text())
    assert len(ranges["data"]) > 200


def test_histogram_methods_calibrate_one_image_per_pass(tmp_path, golden_state):
    """percentile goes through onnxruntime's histogram calibrator fed one image per pass; its ranges
    lie within the max ranges of the same images."""
    from architecture import build_model
    from mstpp.onnx.export import export_onnx
    from mstpp.onnx.quantize import quantize_onnx
    from mstpp.onnx.ranges import load_ranges

    model = build_model("mst_plus_plus")
    model.load_state_dict(golden_state)
    fp32 = export_onnx(model, tmp_path / "m.onnx", 1, 32, 32)
    rng = np.random.default_rng(3)
    images = [rng.random((3, 32, 32), dtype=np.float32) for _ in range(3)]
    quantize_onnx(fp32, tmp_path / "max.onnx", images, "max", tmp_path / "max.json")
    quantize_onnx(fp32, tmp_path / "pct.onnx", images, "percentile", tmp_path / "pct.json")
    high, pct = load_ranges(tmp_path / "max.json"), load_ranges(tmp_path / "pct.json")
    assert set(pct) == set(high)
    amax = {k: max(abs(lo), abs(hi)) for k, (lo, hi) in high.items()}
    assert all(max(abs(lo), abs(hi)) <= amax[k] * (1 + 1e-6) for k, (lo, hi) in pct.items())
    assert sum(max(abs(lo), abs(hi)) < amax[k] for k, (lo, hi) in pct.items()) > len(pct) // 2

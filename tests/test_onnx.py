"""ONNX export (static and dynamic) against PyTorch under onnxruntime CPU, the weight map, the FP16 pass."""
from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
import torch

from architecture import MST_Plus_Plus
from mstpp.errors import UserError, WeightsError
from mstpp.onnx.check import check_mstpp_onnx, ort_session
from mstpp.onnx.export import export_onnx
from mstpp.onnx.fp16 import convert_to_fp16
from mstpp.onnx.simplify import simplify
from mstpp.weights import read_state_dict


@pytest.fixture(scope="module")
def model(golden_state):
    m = MST_Plus_Plus().eval()
    m.load_state_dict(golden_state)
    return m


def _export(model, tmp_path_factory, name, **kw):
    d = tmp_path_factory.mktemp("onnx")
    raw = export_onnx(model, d / f"{name}.raw.onnx", **kw)
    out = simplify(raw, d / f"{name}.onnx")
    onnx.checker.check_model(str(out), full_check=True)
    return out


@pytest.fixture(scope="module")
def static_onnx(model, tmp_path_factory):
    return _export(model, tmp_path_factory, "static", batch=1, height=64, width=64)


@pytest.fixture(scope="module")
def dynamic_onnx(model, tmp_path_factory):
    return _export(model, tmp_path_factory, "dynamic", dynamic=True)


def _ort(path, x: np.ndarray) -> np.ndarray:
    sess = ort_session(path)
    return sess.run(None, {"rgb": x})[0]


def test_static_matches_torch_and_golden(static_onnx, model, golden):
    x = golden["input_0"]
    got = _ort(static_onnx, x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() <= 1e-4
    assert np.abs(got - golden["output_0"]).max() <= 1e-4


@pytest.mark.parametrize("shape", [(1, 3, 60, 52), (2, 3, 64, 72), (1, 3, 17, 33)])
def test_dynamic_matches_torch(dynamic_onnx, model, shape):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    got = _ort(dynamic_onnx, x.numpy())
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4


def test_graph_is_lean(static_onnx):
    counts = collections.Counter(n.op_type for n in onnx.load(str(static_onnx)).graph.node)
    assert counts["LayerNormalization"] == 15  # native op, opset 17
    assert counts["Transpose"] <= 45  # 3 per block: LayerNorm round trip and q^T
    assert counts["Shape"] == 0 and counts["Gather"] == 0  # static export has no shape arithmetic


def test_weight_map_recovers_every_parameter(static_onnx, golden_state):
    state = read_state_dict(static_onnx)
    assert list(state) == list(golden_state)
    assert all(torch.equal(state[k], golden_state[k]) for k in state)


def test_fp16_pass_keeps_statistics_fp32(static_onnx, tmp_path, golden):
    out = convert_to_fp16(static_onnx, tmp_path / "fp16.onnx")
    proto = onnx.load(str(out))
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    inits = {t.name: t.data_type for t in proto.graph.initializer}
    for node in proto.graph.node:
        first = node.input[0] if node.input else None
        dtype = types.get(first, inits.get(first))
        if node.op_type in ("LayerNormalization", "ReduceL2", "Softmax"):
            assert dtype == onnx.TensorProto.FLOAT, node.name
        if node.op_type in ("Conv", "MatMul"):
            assert dtype == onnx.TensorProto.FLOAT16, node.name
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    got = _ort(out, golden["input_0"])
    err = np.abs(got - golden["output_0"])
    assert np.isfinite(got).all() and err.mean() < 2e-3


def test_not_mstpp_onnx_is_rejected(tmp_path):
    conv = torch.nn.Conv2d(3, 8, 3)
    path = tmp_path / "other.onnx"
    torch.onnx.export(conv, (torch.rand(1, 3, 8, 8),), str(path), dynamo=False)
    with pytest.raises(UserError, match="MST\\+\\+ maps \\[B, 3, H, W\\]"):
        check_mstpp_onnx(path)
    with pytest.raises(WeightsError):
        read_state_dict(path)
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01 not protobuf")
    with pytest.raises(UserError, match="not a readable ONNX file"):
        check_mstpp_onnx(tmp_path / "junk.onnx")

"""The model repository for NVIDIA's Triton container: every config.pbtxt parsed with the ModelConfig protobuf
that tritonclient ships, and checked against the plan's recorded shape profile.

Runs where tritonclient and onnx are installed (the serving environment); skipped elsewhere.
"""
from __future__ import annotations

import json

import pytest

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
onnx = pytest.importorskip("onnx")
from google.protobuf import text_format  # noqa: E402

from mstpp.errors import UserError  # noqa: E402
from mstpp.serving.repository import write_repository  # noqa: E402


def _parse(path) -> "model_config_pb2.ModelConfig":
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _plan(tmp_path, lo, hi, name="mstpp.plan"):
    plan = tmp_path / name
    plan.write_bytes(b"stand-in plan bytes: the writer copies them and reads only the record")
    record = {"input": {"name": "rgb", "min": list(lo), "opt": list(hi), "max": list(hi)},
              "tensorrt": {"flavour": "tensorrt", "version": "10.13"}}
    (tmp_path / (name + ".json")).write_text(json.dumps(record))
    return plan


def _onnx(tmp_path, shape):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["rgb"], ["cube"])], "g",
                              [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("cube", TensorProto.FLOAT, list(shape))])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_dynamic_plan_config_matches_profile(tmp_path):
    plan = _plan(tmp_path, (1, 3, 64, 64), (16, 3, 1024, 1024))
    (model_dir,) = write_repository(tmp_path / "repo", plan=plan, gpus=[0, 1], instances=2, queue_delay_us=500)
    cfg = _parse(model_dir / "config.pbtxt")
    assert cfg.name == "mstpp_trt" and cfg.platform == "tensorrt_plan"
    assert cfg.max_batch_size == 16  # the profile's largest batch
    (inp,), (out,) = cfg.input, cfg.output
    assert (inp.name, inp.data_type, list(inp.dims)) == ("rgb", model_config_pb2.TYPE_FP32, [3, -1, -1])
    assert (out.name, out.data_type, list(out.dims)) == ("cube", model_config_pb2.TYPE_FP32, [31, -1, -1])
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    (group,) = cfg.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU and group.count == 2
    assert list(group.gpus) == [0, 1]
    assert (model_dir / "1" / "model.plan").read_bytes() == plan.read_bytes()


def test_static_plan_has_fixed_batch_and_no_batcher(tmp_path):
    plan = _plan(tmp_path, (1, 3, 512, 482), (1, 3, 512, 482))
    (model_dir,) = write_repository(tmp_path / "repo", plan=plan)
    cfg = _parse(model_dir / "config.pbtxt")
    assert cfg.max_batch_size == 0
    assert list(cfg.input[0].dims) == [1, 3, 512, 482] and list(cfg.output[0].dims) == [1, 31, 512, 482]
    assert not cfg.HasField("dynamic_batching")


def test_plan_batch_limits_are_enforced(tmp_path):
    plan = _plan(tmp_path, (1, 3, 64, 64), (8, 3, 64, 64))
    with pytest.raises(UserError, match="up to 8"):
        write_repository(tmp_path / "repo", plan=plan, max_batch=16)
    (model_dir,) = write_repository(tmp_path / "repo", plan=plan, max_batch=4)
    cfg = _parse(model_dir / "config.pbtxt")
    assert cfg.max_batch_size == 4 and list(cfg.input[0].dims) == [3, 64, 64]
    with pytest.raises(UserError, match="minimum batch of 1"):
        write_repository(tmp_path / "repo2", plan=_plan(tmp_path, (2, 3, 64, 64), (8, 3, 64, 64), "b2.plan"))


def test_plan_without_record_is_refused(tmp_path):
    plan = tmp_path / "bare.plan"
    plan.write_bytes(b"x")
    with pytest.raises(UserError, match="no build record"):
        write_repository(tmp_path / "repo", plan=plan)


def test_onnx_config(tmp_path):
    model = _onnx(tmp_path, ["batch", 3, "height", "width"])
    (model_dir,) = write_repository(tmp_path / "repo", onnx=model, max_batch=8)
    cfg = _parse(model_dir / "config.pbtxt")
    assert (cfg.name, cfg.platform, cfg.max_batch_size) == ("mstpp_onnx", "onnxruntime_onnx", 8)
    assert list(cfg.input[0].dims) == [3, -1, -1] and list(cfg.output[0].dims) == [31, -1, -1]
    assert cfg.HasField("dynamic_batching") and not cfg.instance_group[0].gpus
    static = _onnx(tmp_path, [1, 3, 512, 482])
    (model_dir,) = write_repository(tmp_path / "repo3", onnx=static)
    cfg = _parse(model_dir / "config.pbtxt")
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [1, 3, 512, 482]

"""The network-API MST++ against PyTorch (reference executor), and both routes through the
TensorRT-RTX builder and ONNX parser on the CPU."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from architecture import MST_Plus_Plus
from mstpp.calibration import calibrate
from mstpp.trt.network import build_mstpp_network, conv_module_names
from trt_reference import StrongTypingError, create_reference_network, ref_trt


@pytest.fixture(scope="module")
def weights(golden_state):
    return {k: v.numpy() for k, v in golden_state.items()}


def _run_reference(weights, shape, case_input, **kw):
    net = create_reference_network()
    build_mstpp_network(ref_trt, net, weights, shape, **kw)
    return net, net.execute({"rgb": case_input})["cube"].double().numpy()


@pytest.mark.parametrize("shape,case", [((1, 3, 64, 64), 0), ((1, 3, 60, 52), 1), ((-1, 3, -1, -1), 1)],
                         ids=["static-64", "static-60x52-padded", "dynamic"])
def test_fp32_matches_golden(weights, golden, shape, case):
    _, out = _run_reference(weights, shape, golden[f"input_{case}"])
    assert np.abs(out - golden[f"output_{case}"]).max() <= 1e-4


def test_fp16_error_is_small_and_statistics_stay_fp32(weights, golden):
    net, out = _run_reference(weights, (1, 3, 64, 64), golden["input_0"], precision="fp16")
    err = np.abs(out - golden["output_0"])
    print(f"\nnetwork-API FP16 vs golden: mean abs {err.mean():.2e}, max abs {err.max():.2e}")
    assert np.isfinite(out).all() and err.mean() <= 2e-3
    kinds = {}
    for i in range(net.num_layers):
        layer = net.get_layer(i)
        if layer.num_inputs == 0:
            continue
        kinds.setdefault(type(layer).__name__, set()).add(layer.get_input(0).dtype)
    assert kinds["NormalizationLayer"] == {ref_trt.float32}
    assert kinds["SoftMaxLayer"] == {ref_trt.float32}
    assert kinds["ReduceLayer"] == {ref_trt.float32}
    assert kinds["ConvolutionLayer"] == {ref_trt.float16}


def test_plugins_path_matches(weights, golden):
    _, out = _run_reference(weights, (1, 3, 64, 64), golden["input_0"], plugins="ours")
    assert np.abs(out - golden["output_0"]).max() <= 1e-4


def _layer_kinds(net) -> list[str]:
    return [type(net.get_layer(i)).__name__ for i in range(net.num_layers)]


def _plugin_layers(net, name: str) -> list:
    return [net.get_layer(i) for i in range(net.num_layers)
            if type(net.get_layer(i)).__name__ == "PluginV3Layer" and net.get_layer(i).plugin.plugin_name == name]


@pytest.mark.parametrize("shape,case", [((1, 3, 64, 64), 0), ((1, 3, 60, 52), 1), ((-1, 3, -1, -1), 1)],
                         ids=["static-64", "static-60x52-padded", "dynamic"])
def test_fused_plugin_path_matches(weights, golden, shape, case):
    net, out = _run_reference(weights, shape, golden[f"input_{case}"], plugins="fused")
    assert np.abs(out - golden[f"output_{case}"]).max() <= 1e-4
    # Per MSAB (15 in MST++) one MstMsa (x + S-MSA(x)) then one MstFfn (x + FFN(LN(x))), alternating in network
    # order; no other plugin, and none of the native attention/LayerNorm layers is left.
    msabs = len({k.rsplit(".blocks.0.1.", 1)[0] for k in weights if ".blocks.0.1.norm.weight" in k})
    msas, ffns = _plugin_layers(net, "MstMsa"), _plugin_layers(net, "MstFfn")
    assert len(msas) == len(ffns) == msabs == 15
    plugins = [layer.plugin.plugin_name for layer in (net.get_layer(i) for i in range(net.num_layers))
               if type(layer).__name__ == "PluginV3Layer"]
    assert plugins == ["MstMsa", "MstFfn"] * msabs
    assert [layer.get_input(0).dtype for layer in msas + ffns] == [ref_trt.float32] * (2 * msabs)
    kinds = _layer_kinds(net)
    for native in ("NormalizationLayer", "SoftMaxLayer", "MatrixMultiplyLayer", "ReduceLayer"):
        assert native not in kinds, native
    # Each MstFfn consumes the MstMsa output directly: the attention residual is inside the plugin.
    assert [layer.get_input(0) for layer in ffns] == [layer.get_output(0) for layer in msas]
    _, none = _run_reference(weights, shape, golden[f"input_{case}"])
    assert np.abs(out - none).max() <= 1e-4


def test_fused_plugins_fp16_run_in_half(weights, golden):
    net, out = _run_reference(weights, (1, 3, 64, 64), golden["input_0"], precision="fp16", plugins="fused")
    err = np.abs(out - golden["output_0"])
    print(f"\nnetwork-API FP16 + MstMsa/MstFfn vs golden: mean abs {err.mean():.2e}, max abs {err.max():.2e}")
    assert np.isfinite(out).all() and err.mean() <= 2e-3
    layers = _plugin_layers(net, "MstMsa") + _plugin_layers(net, "MstFfn")
    assert len(layers) == 30 and {layer.get_input(0).dtype for layer in layers} == {ref_trt.float16}
    assert {layer.get_output(0).dtype for layer in layers} == {ref_trt.float16}
    # The remaining native layers follow the FP16 rules: convolutions FP16; no attention or LayerNorm is left.
    kinds = {}
    for i in range(net.num_layers):
        layer = net.get_layer(i)
        if layer.num_inputs:
            kinds.setdefault(type(layer).__name__, set()).add(layer.get_input(0).dtype)
    assert kinds["ConvolutionLayer"] == {ref_trt.float16}
    assert not {"NormalizationLayer", "SoftMaxLayer", "ReduceLayer"} & set(kinds)


def test_fused_ffn_plugin_is_refused_for_int8(weights):
    from mstpp.errors import UserError

    with pytest.raises(UserError, match="fused is not available with INT8"):
        build_mstpp_network(ref_trt, create_reference_network(), weights, (1, 3, 64, 64), precision="int8",
                            plugins="fused", act_amax={"x": 1.0})


def test_int8_network_runs_close_to_fp32(weights, golden_state, golden):
    images = [golden["input_0"][0], golden["input_1"][0]]
    ranges = calibrate(golden_state, images, progress=False)
    assert set(conv_module_names(weights)) <= set(ranges)
    amax = {k: v["max"] for k, v in ranges.items()}
    net, out = _run_reference(weights, (1, 3, 64, 64), golden["input_0"], precision="int8", act_amax=amax)
    names = [type(net.get_layer(i)).__name__ for i in range(net.num_layers)]
    assert names.count("QuantizeLayer") == len(conv_module_names(weights))
    ref = golden["output_0"]
    rel = np.abs(out - ref).mean() / np.abs(ref).mean()
    print(f"\nnetwork-API INT8 vs golden: mean rel error {rel:.3f}")
    assert np.isfinite(out).all() and rel < 0.1


def test_int8_without_ranges_is_refused(weights):
    with pytest.raises(ValueError, match="calibration"):
        build_mstpp_network(ref_trt, create_reference_network(), weights, (1, 3, 64, 64), precision="int8")


def test_strong_typing_is_enforced_by_the_executor(weights):
    # A deliberate FP16 constant into an FP32 elementwise must be refused, as TensorRT would.
    net = create_reference_network()
    x = net.add_input("x", ref_trt.float32, (1, 2))
    c = net.add_constant((1, 2), np.ones((1, 2), np.float16)).get_output(0)
    with pytest.raises(StrongTypingError):
        net.add_elementwise(x, c, ref_trt.ElementWiseOperation.SUM)


# --- TensorRT-RTX: the builder and parser accept what we build --------------------------------

trt = pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx not installed")


@pytest.mark.parametrize("mode,extra", [("FP32", []), ("FP16", []), ("FP16", ["--dynamic", "--max-shape", "2x128x128"])],
                         ids=["fp32", "fp16", "fp16-dynamic"])
def test_api_plans_build_with_rtx(tmp_path, golden_dir, mode, extra):
    from conftest import run_script

    plan = tmp_path / "api.plan"
    proc = run_script("mst_trt_api.py", "--weight_path", str(golden_dir / "mstpp_golden.npz"), "--mode", mode,
                      "--height", "64", "--width", "64", "--plan_path", str(plan), "--trt", "tensorrt_rtx",
                      "--timing-cache", str(tmp_path / "tc"), *extra)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    record = json.loads((tmp_path / "api.plan.json").read_text())
    assert plan.stat().st_size > 1e6 and record["settings"]["precision"] == mode.lower()
    assert record["tensorrt"]["flavour"] == "tensorrt_rtx"


def test_api_int8_plan_builds_with_rtx(tmp_path, golden_dir, golden_state, golden):
    from conftest import run_script
    from mstpp.calibration import save_cache

    ranges = calibrate(golden_state, [golden["input_0"][0]], progress=False)
    cache = save_cache(tmp_path / "calib.json", ranges, "max", 99.99, 1, "golden")
    proc = run_script("mst_trt_api.py", "--weight_path", str(golden_dir / "mstpp_golden.npz"), "--mode", "INT8",
                      "--height", "64", "--width", "64", "--plan_path", str(tmp_path / "i8.plan"),
                      "--calib-cache", str(cache), "--trt", "tensorrt_rtx", "--timing-cache", str(tmp_path / "tc"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory, golden_state):
    from mstpp.onnx.export import export_onnx
    from mstpp.onnx.simplify import simplify

    d = tmp_path_factory.mktemp("parser")
    model = MST_Plus_Plus().eval()
    model.load_state_dict(golden_state)
    raw = export_onnx(model, d / "m.raw.onnx", 1, 64, 64)
    return simplify(raw, d / "m.onnx")


@pytest.mark.parametrize("mode", ["FP32", "FP16", "INT8"])
def test_parser_plans_build_with_rtx(tmp_path, small_onnx, arad_image, mode):
    from conftest import run_script

    proc = run_script("mst_onnxparser.py", "--onnx_path", str(small_onnx), "--mode", mode, "--height", "64",
                      "--width", "64", "--plan_path", str(tmp_path / "p.plan"), "--trt", "tensorrt_rtx",
                      "--timing-cache", str(tmp_path / "tc"), "--calib-images", str(arad_image))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "p.plan").stat().st_size > 1e6


def test_parser_rejects_shape_mismatch(tmp_path, small_onnx):
    from conftest import run_script

    # A static ONNX's shape comes from the file; a flag that contradicts it is refused.
    proc = run_script("mst_onnxparser.py", "--onnx_path", str(small_onnx), "--plan_path", str(tmp_path / "p.plan"),
                      "--trt", "tensorrt_rtx", "--height", "512", "--width", "482")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is static (1, 3, 64, 64), but --height is 512" in proc.stderr

"""The fused-kernel route against PyTorch FP32: the golden case and the real ARAD frame (GPU), skip reasons (CPU)."""
from __future__ import annotations

import pytest
import torch

from mstpp.backends import RouteUnavailable, make_runner
from mstpp.io import read_rgb
from mstpp.weights import resolve_weights


def test_fused_route_without_gpu_is_unavailable_with_a_reason(golden_state):
    with pytest.raises(RouteUnavailable, match="fused-fp16"):
        make_runner("fused-fp16", golden_state, device="cpu")


def _run(route: str, state, x: torch.Tensor) -> torch.Tensor:
    with make_runner(route, state, device="cuda") as runner:
        runner.prepare(tuple(x.shape))
        return runner.run(runner.make_input(x)).float()


@pytest.mark.gpu
@pytest.mark.parametrize("which", ["input_0", "input_1"])
@pytest.mark.usefixtures("built_library")
def test_fused_fp32_matches_golden(golden, golden_state, which):
    x = torch.from_numpy(golden[which]).float()
    want = torch.from_numpy(golden[which.replace("input", "output")]).float()
    got = _run("fused-fp32", golden_state, x).cpu()
    assert (got - want).abs().max() <= 1e-4


@pytest.fixture(scope="module")
def arad_case(arad_image):
    state, _ = resolve_weights(None)
    x = torch.from_numpy(read_rgb(arad_image))[None]
    return state, x


@pytest.mark.gpu
@pytest.mark.usefixtures("built_library")
@pytest.mark.parametrize("route, mean_tol, max_tol", [("fused-fp32", 1e-6, 1e-4), ("fused-fp16", 1e-3, None),
                                                      ("fused-bf16", 8e-3, None)])
def test_fused_matches_torch_fp32_on_real_image(arad_case, route, mean_tol, max_tol):
    state, x = arad_case
    ref = _run("torch-fp32", state, x)
    got = _run(route, state, x)
    assert torch.isfinite(got).all()
    err = (got - ref).abs()
    assert err.mean() <= mean_tol, f"{route}: mean abs {err.mean():.3g}"
    if max_tol is not None:
        assert err.max() <= max_tol, f"{route}: max abs {err.max():.3g}"


@pytest.mark.gpu
@pytest.mark.usefixtures("built_library")
def test_fused_graph_replay_matches_eager(golden_state):
    gen = torch.Generator().manual_seed(3)
    a, b = (torch.rand(2, 3, 40, 56, generator=gen) for _ in range(2))
    with make_runner("fused-fp32", golden_state, device="cuda", cuda_graph=False) as eager:
        want_a, want_b = (eager.run(eager.make_input(v)) for v in (a, b))
    with make_runner("fused-fp32", golden_state, device="cuda") as graphed:
        assert graphed.describe()["cuda_graph"] is True
        # The runner owns what run() returns until its next run (Runner's output policy): keep copies.
        got_a = graphed.run(graphed.make_input(a)).clone()
        got_b = graphed.run(graphed.make_input(b)).clone()  # the same graph, replayed
        # A second shape captures a second graph; the first must still replay correctly afterwards.
        small = graphed.run(graphed.make_input(a[:1, :, :24, :32])).clone()
        again_a = graphed.run(graphed.make_input(a))
    # Our kernels and the eager glue are deterministic, so replay reproduces eager bit for bit.
    assert torch.equal(got_a, want_a) and torch.equal(got_b, want_b) and torch.equal(again_a, want_a)
    assert small.shape == (1, 31, 24, 32)
    assert not torch.equal(got_a, got_b)


@pytest.mark.gpu
@pytest.mark.usefixtures("built_library")
def test_fused_run_refuses_an_input_of_the_wrong_dtype(golden_state):
    with make_runner("fused-fp16", golden_state, device="cuda") as runner:
        with pytest.raises(ValueError, match="make_input"):
            runner.run(torch.zeros(1, 3, 16, 16, device="cuda"))


def _conv_reference(x, w, stride, padding, residual=None):
    y = torch.nn.functional.conv2d(x, w, stride=stride, padding=padding)
    return y if residual is None else y + residual


def _upfuse_reference(low, skip, folded):
    # wa[2 ki + kj] maps low(h, w) to output pixel (2h + ki, 2w + kj)
    b, _, hl, wl = low.shape
    per_parity = torch.einsum("pol,blhw->bpohw", folded.wa, low)
    up = per_parity.reshape(b, 2, 2, -1, hl, wl).permute(0, 3, 4, 1, 5, 2).reshape(b, -1, 2 * hl, 2 * wl)
    return up + torch.einsum("os,bshw->bohw", folded.wb, skip) + folded.bias[None, :, None, None]


@pytest.mark.parametrize("conv_kernels", [True, False])
def test_fused_glue_wiring_reproduces_the_model_on_cpu(golden_state, monkeypatch, conv_kernels):
    # The glue modules only call the kernels; with PyTorch stand-ins for conv_nchw / upfuse_nchw (same contracts)
    # the rebuilt forward must equal MST_Plus_Plus: residuals, skip order, padding/crop and the up/fusion fold.
    from architecture import build_model
    from mstpp import kernels
    from mstpp.backends.fused import FusedMSTPlusPlus

    monkeypatch.setattr(kernels, "conv_nchw", _conv_reference)
    monkeypatch.setattr(kernels, "upfuse_nchw", lambda low, skip, folded: _upfuse_reference(low, skip, folded))
    model = build_model("mst_plus_plus")
    model.load_state_dict(golden_state)
    model = model.double().eval()
    glued = FusedMSTPlusPlus(model, conv_kernels).double()
    x = torch.rand(2, 3, 21, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        want, got = model(x), glued(x)
    assert got.shape == want.shape == (2, 31, 21, 30)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_fused_runner_refuses_an_unknown_glue_mode(golden_state):
    from mstpp.backends.fused import FusedRunner

    with pytest.raises(ValueError, match="glue must be one of \\['all', 'auto', 'none'\\], got 'cudnn'"):
        FusedRunner(golden_state, precision="fp16", device="cpu", glue="cudnn")


#: conv_in of the shipped weights scaled by this: outputs reach |y| ~ 100-250 on rand inputs (~190 at 64x64 on CPU).
LARGE_ACTIVATION_SCALE = 150.0


@pytest.mark.gpu
@pytest.mark.usefixtures("built_library")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_fused_16bit_large_activations_no_worse_than_torch(precision):
    """Large activations (every feature map ~150x the trained ones): against the float64 model, the fused 16-bit
    route's mean abs error is no larger than PyTorch's own eager route in the same precision (the FP16 hidden
    arithmetic and the tanh GELU must not cost more than PyTorch's 16-bit storage does), and its max abs error at
    most twice PyTorch's."""
    from architecture.mst_plus_plus import MST_Plus_Plus

    state, _ = resolve_weights(None)
    state = {k: v.clone() for k, v in state.items()}
    state["conv_in.weight"] *= LARGE_ACTIVATION_SCALE
    x = torch.rand(1, 3, 128, 160, generator=torch.Generator().manual_seed(5))
    model = MST_Plus_Plus()
    model.load_state_dict(state)
    with torch.no_grad():
        ref = model.double().cuda().eval()(x.double().cuda())
    assert 100 <= ref.abs().max().item() <= 400, "outputs are not in the large-activation range"
    fused = (_run(f"fused-{precision}", state, x).double() - ref).abs()
    eager = (_run(f"torch-{precision}", state, x).double() - ref).abs()
    print(f"{precision}: max |y| {ref.abs().max().item():.1f}; fused mean/max abs {fused.mean().item():.4g} / "
          f"{fused.max().item():.4g}; torch mean/max abs {eager.mean().item():.4g} / {eager.max().item():.4g}")
    assert torch.isfinite(fused).all()
    assert fused.mean() <= eager.mean(), f"mean abs {fused.mean():.4g} > PyTorch's {eager.mean():.4g}"
    assert fused.max() <= 2 * eager.max(), f"max abs {fused.max():.4g} > 2x PyTorch's {eager.max():.4g}"

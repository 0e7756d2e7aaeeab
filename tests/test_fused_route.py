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

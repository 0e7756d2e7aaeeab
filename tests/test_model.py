"""The PyTorch MST++ against the golden case computed in float64 by the original implementation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from architecture import MODEL_REGISTRY, MST_Plus_Plus, build_model, pad_amounts
from mstpp.weights import read_state_dict


def _run(state, x: np.ndarray) -> np.ndarray:
    model = MST_Plus_Plus().eval()
    model.load_state_dict(state)
    with torch.no_grad():
        return model(torch.from_numpy(x)).double().numpy()


@pytest.mark.parametrize("case", [0, 1], ids=["64x64", "60x52-padded"])
def test_golden_from_npz(golden, golden_dir, case):
    state = read_state_dict(golden_dir / "mstpp_golden.npz")
    out = _run(state, golden[f"input_{case}"])
    ref = golden[f"output_{case}"]
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-4


@pytest.mark.parametrize("case", [0, 1], ids=["64x64", "60x52-padded"])
def test_golden_from_official_checkpoint(golden, golden_dir, case):
    state = read_state_dict(golden_dir / "mstpp_golden_checkpoint.pth")
    out = _run(state, golden[f"input_{case}"])
    assert np.abs(out - golden[f"output_{case}"]).max() <= 1e-4


def test_float64_matches_golden_to_rounding(golden, golden_state):
    # Same function as the original, not merely close: in float64 the difference is rounding only.
    model = MST_Plus_Plus().eval().double()
    model.load_state_dict(golden_state)
    with torch.no_grad():
        out = model(torch.from_numpy(golden["input_1"]).double()).numpy()
    assert np.abs(out - golden["output_1"]).max() < 1e-10


def test_state_dict_layout_matches_official(golden_dir):
    layout = json.loads((golden_dir / "mstpp_state_dict.json").read_text())
    sd = MST_Plus_Plus().state_dict()
    assert [e["name"] for e in layout["state_dict"]] == list(sd)
    assert all(list(sd[e["name"]].shape) == e["shape"] for e in layout["state_dict"])
    assert sum(v.numel() for v in sd.values()) == layout["num_parameters"] == 1_619_625


def test_registry():
    assert isinstance(build_model("mst_plus_plus"), MST_Plus_Plus)
    assert "mst_plus_plus" in MODEL_REGISTRY
    with pytest.raises(ValueError, match="unknown model"):
        build_model("mst")


@pytest.mark.parametrize("h,w,expect", [(64, 64, (0, 0)), (60, 52, (4, 4)), (482, 512, (6, 0)), (1, 9, (7, 7))])
def test_pad_amounts(h, w, expect):
    assert pad_amounts(h, w) == expect


def test_batch_and_odd_sizes_keep_shape():
    model = MST_Plus_Plus().eval()
    with torch.no_grad():
        y = model(torch.rand(2, 3, 21, 34))
    assert y.shape == (2, 31, 21, 34) and torch.isfinite(y).all()


def test_parts_name_every_weight():
    from architecture import parts

    model = MST_Plus_Plus()
    keys = parts.state_dict_keys()
    assert len(set(keys)) == len(keys) and sorted(keys) == sorted(model.state_dict())
    for stage in parts.stages():
        for level, msab in enumerate(stage.msabs()):
            width = parts.LEVEL_CHANNELS[min(level, 2 * parts.LEVELS - level)]
            for attn, ffn in parts.msab_blocks(msab):
                assert model.get_parameter(f"{attn}.to_q.weight").shape == (width, width)
                assert model.get_submodule(ffn).norm.normalized_shape == (width,)

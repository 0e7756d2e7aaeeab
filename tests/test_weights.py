"""Checkpoint formats and the messages for wrong files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mstpp.errors import WeightsError
from mstpp.weights import (check_state_dict, read_state_dict, resolve_weights, save_checkpoint, save_npz,
                           seeded_state_dict)


def test_formats_round_trip(tmp_path, golden_state):
    bare = tmp_path / "bare.pth"
    torch.save(golden_state, bare)
    official = save_checkpoint(golden_state, tmp_path / "official.pth")
    npz = save_npz(golden_state, tmp_path / "w.npz")
    for path in (bare, official, npz):
        loaded = read_state_dict(path)
        assert list(loaded) == list(golden_state)
        assert all(torch.equal(loaded[k], golden_state[k]) for k in golden_state)


def test_module_prefix_is_stripped(golden_state):
    prefixed = {f"module.{k}": v for k, v in golden_state.items()}
    assert list(check_state_dict(prefixed)) == list(golden_state)


def test_seeded_default_is_deterministic_and_announced():
    a, b = seeded_state_dict(), seeded_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    state, source = resolve_weights(None)
    if source.is_random:
        assert "NOT TRAINED" in source.description
    else:
        assert "shipped" in source.description and "MODEL_CARD" in source.description
        assert set(state) == set(a)


def test_weight_source_names_the_exact_file(tmp_path, golden_state):
    """Results record which weights they were measured with: two different files never read the same."""
    import hashlib

    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    save_checkpoint(golden_state, a)
    save_checkpoint({k: v + 1 for k, v in golden_state.items()}, b)
    da, db = resolve_weights(a)[1].description, resolve_weights(b)[1].description
    assert f"sha256 {hashlib.sha256(a.read_bytes()).hexdigest()[:12]}" in da and da != db.replace("b.pth", "a.pth")


def test_other_model_checkpoint_is_rejected(tmp_path):
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1))
    path = tmp_path / "resnet.pth"
    torch.save({"state_dict": other.state_dict()}, path)
    with pytest.raises(WeightsError, match="keys do not match MST\\+\\+.*missing.*unexpected.*MST\\+\\+ checkpoint"):
        read_state_dict(path)


def test_shape_mismatch_names_the_tensor(tmp_path, golden_state):
    bad = dict(golden_state)
    bad["conv_in.weight"] = torch.zeros(16, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(WeightsError, match=r"conv_in.weight has shape \(16, 3, 3, 3\).*\(31, 3, 3, 3\)"):
        read_state_dict(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_files(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        read_state_dict(path)


def test_missing_file():
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict("does/not/exist.pth")


def test_npz_with_wrong_keys(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(WeightsError, match="missing"):
        read_state_dict(path)

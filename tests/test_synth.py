"""Tests of the synthetic data generator, the camera model, the metrics and train.py (CPU, fast)."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mstpp import metrics
from mstpp.synth import SyntheticGenerator, camera_matrix, eval_scene, load_tables, render_linear, simulate
from mstpp.synth.camera import MEAN_LEVEL
from mstpp.synth.photos import EVAL_PHOTOS, TRAIN_PHOTOS
from mstpp.synth.tables import CAMERA_CSV, CAMERA_GAINS, daylight_spd

REPO = Path(__file__).resolve().parent.parent
FEW_PHOTOS = ("astronaut", "camera")  # one colour and one grey photo keep SLIC set-up short


@pytest.fixture(scope="module")
def gen0() -> SyntheticGenerator:
    return SyntheticGenerator("train", seed=0, photos=FEW_PHOTOS)


def test_same_seed_same_batch(gen0: SyntheticGenerator) -> None:
    other = SyntheticGenerator("train", seed=0, photos=FEW_PHOTOS)
    a, b = gen0.training_batch(3, 3, 32), other.training_batch(3, 3, 32)
    assert torch.equal(a.rendered.rgb8, b.rendered.rgb8)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.cubes, b.cubes)
    assert a.meta == b.meta


def test_different_seed_or_index_differs(gen0: SyntheticGenerator) -> None:
    other = SyntheticGenerator("train", seed=1, photos=FEW_PHOTOS)
    a = gen0.training_batch(3, 3, 32)
    assert not torch.equal(a.cubes, other.training_batch(3, 3, 32).cubes)
    assert not torch.equal(a.cubes, gen0.training_batch(4, 3, 32).cubes)


def _found_in(patch: torch.Tensor, scene: torch.Tensor) -> bool:
    size = patch.shape[-1]
    return any(torch.equal(scene[:, y:y + size, x:x + size], patch)
               for y in range(scene.shape[-2] - size + 1) for x in range(scene.shape[-1] - size + 1))


@pytest.mark.parametrize("per_scene", [2, 3])
def test_several_patches_per_scene(gen0: SyntheticGenerator, per_scene: int) -> None:
    b = gen0.training_batch(5, 4, 16, 32, patches_per_scene=per_scene)
    assert b.inputs.shape == (4, 3, 16, 16) and b.cubes.shape == (4, 31, 16, 16) and len(b.meta) == 4
    scenes = gen0.scenes(5, 2, (32, 32))  # ceil(4 / per_scene) == 2 scenes for both values
    for i in range(4):
        s = i // per_scene
        assert b.meta[i] == scenes.meta[s]
        assert _found_in(b.cubes[i], scenes.cubes[s]) and _found_in(b.inputs[i], scenes.inputs[s])
    with pytest.raises(ValueError, match="patches_per_scene"):
        gen0.training_batch(5, 4, 16, 32, patches_per_scene=0)


def test_value_ranges(gen0: SyntheticGenerator) -> None:
    b = gen0.scenes(0, 4, (64, 64))
    r = b.rendered
    assert r.rgb8.dtype == torch.uint8 and r.rgb8.shape == (4, 3, 64, 64)
    assert r.inputs.shape == (4, 3, 64, 64) and r.cubes.shape == (4, 31, 64, 64)
    assert torch.isfinite(r.cubes).all() and (r.cubes >= 0).all()
    flat = r.inputs.flatten(1)
    assert torch.allclose(flat.amin(1), torch.zeros(4)) and torch.allclose(flat.amax(1), torch.ones(4))
    # The target's unit: rendering it gives the normalised input plus black offset (up to noise/JPEG).
    lo, hi = r.rgb8.flatten(1).float().amin(1), r.rgb8.flatten(1).float().amax(1)
    target = r.rgb8.float() / (hi - lo)[:, None, None, None]
    err = (render_linear(r.cubes, camera_matrix()) - target).abs().mean()
    assert err < 0.05


def _csv_sums() -> tuple[float, float, float]:
    sums = [0.0, 0.0, 0.0]
    with open(CAMERA_CSV, newline="") as fh:
        rows = csv.reader(fh)
        header = next(rows)
        cols = [header.index(c) for c in ("R", "G1", "B")]
        for row in rows:
            wl = float(row[0])
            if 400 <= wl <= 700 and wl % 10 == 0:
                for i, c in enumerate(cols):
                    sums[i] += float(row[c])
    return sums[0], sums[1], sums[2]


def test_camera_flat_spectrum_by_hand() -> None:
    s_r, s_g, s_b = _csv_sums()
    expected = [s_r * CAMERA_GAINS[0] / s_g, 1.0, s_b * CAMERA_GAINS[2] / s_g]   # per unit flat radiance
    cube = torch.full((1, 31, 4, 5), 0.5)                                        # flat reflectance x flat light
    lin = render_linear(cube, camera_matrix())
    for c in range(3):
        assert torch.allclose(lin[0, c], torch.full((4, 5), 0.5 * expected[c]), rtol=1e-5)
    # Deterministic part of the pipeline: exposure to mean 0.18*255, then 8-bit rounding.
    r = simulate(cube, camera_matrix(), noise=False, jpeg=False)
    mean = sum(expected) / 3
    want = [round(MEAN_LEVEL * e / mean) for e in expected]
    assert r.rgb8[0, :, 0, 0].tolist() == want
    assert abs(expected[0] - 1.0013) < 0.01 and abs(expected[2] - 1.0759) < 0.01  # gains ~white-balance


def test_noise_and_jpeg_change_image_but_keep_scale() -> None:
    cube = torch.full((1, 31, 64, 64), 0.3)
    g = torch.Generator().manual_seed(0)
    noisy = simulate(cube, camera_matrix(), g).rgb8.float()
    assert noisy.std() > 0.5                                 # shot noise at 750 e- is ~1.7 DN at the mean
    assert abs(float(noisy.mean()) - MEAN_LEVEL) < 1.5


def test_daylight_d65_shape() -> None:
    t = load_tables("train")
    d = daylight_spd(torch.tensor([6504.0, 4000.0, 10000.0]), t.daylight_basis)
    assert d.shape == (3, 31) and torch.allclose(d.amax(1), torch.ones(3))
    # Low CCT is redder: the 700/400 nm ratio falls with temperature.
    ratio = d[:, -1] / d[:, 0]
    assert ratio[1] > ratio[0] > ratio[2]


def test_splits_are_disjoint() -> None:
    assert not set(TRAIN_PHOTOS) & set(EVAL_PHOTOS)
    tr, ev = load_tables("train"), load_tables("eval")
    assert not set(tr.reflectance_sets) & set(ev.reflectance_sets)
    assert not set(tr.illuminant_names) & set(ev.illuminant_names)
    for lo, hi in ev.daylight_cct_ranges:
        for a, b in tr.daylight_cct_ranges:
            assert hi <= a or lo >= b
    # No training spectrum is a near copy of an evaluation spectrum.
    rms = torch.cdist(tr.reflectances, ev.reflectances) / math.sqrt(31)
    assert float(rms.min()) > 0.02


def test_scene_meta_names_the_illuminant_family(gen0: SyntheticGenerator) -> None:
    # The evaluation groups its metrics by this family (the error depends mostly on it).
    family_of = dict(zip(gen0.tables.illuminant_names, gen0.tables.illuminant_families))
    metas = [m for i in range(6) for m in gen0.training_batch(i, 4, 16).meta]
    assert len({m["illuminant_family"] for m in metas}) > 1
    for m in metas:
        if m["illuminant"].startswith("daylight_"):
            assert m["illuminant_family"] == "daylight"
        else:
            assert m["illuminant_family"] == family_of[m["illuminant"]]


def test_write_card_keeps_the_rest_of_the_card(tmp_path: Path) -> None:
    from mstpp.synth.evaluate import CARD_END, CARD_START, write_card

    card = tmp_path / "card.md"
    card.write_text(f"# Card\n\nintro\n\n{CARD_START}\nold\n{CARD_END}\n\n## After\n\ntext\n")
    write_card(card, f"{CARD_START}\nnew\n{CARD_END}\n")
    assert card.read_text() == f"# Card\n\nintro\n\n{CARD_START}\nnew\n{CARD_END}\n\n## After\n\ntext\n"


def test_card_section_lists_metrics_by_illuminant_family() -> None:
    from mstpp.synth.evaluate import card_section

    row = {"mrae": 0.5, "mrae_strict": 0.6, "rmse": 0.1, "psnr": 20.0, "sam_deg": 10.0}
    result = {"n_scenes": 2, "eval_seed": 1, "border_crop": 128, "mrae_eps": 1e-3,
              "metrics": {"mst_plus_plus": row, "rootpoly3": row},
              "metrics_by_kind": {"photo": {"mst_plus_plus": row}},
              "metrics_by_illuminant_family": {"daylight": {"mst_plus_plus": {**row, "mrae": 0.25},
                                                            "rootpoly3": {**row, "mrae": 0.32}},
                                               "fluorescent": {"mst_plus_plus": {**row, "mrae": 1.04},
                                                               "rootpoly3": {**row, "mrae": 2.2}}},
              "scenes_by_illuminant_family": {"daylight": 1, "fluorescent": 1},
              "ground_truth_back_projection": {"abs_mean": 0.01, "centre_psnr": 30.0}, "activations": {}}
    text = card_section(result, None, "w.pth")
    assert ("By illuminant family (MRAE, scenes): daylight (1): mst_plus_plus 0.25, rootpoly3 0.32; "
            "fluorescent (1): mst_plus_plus 1.04, rootpoly3 2.2") in text
    # Training continued from earlier weights is reported with the earlier run's share and the total.
    first = {"steps": 100, "train_seconds": 50.0, "iters_per_second": 2.0}
    log = {"steps": 300, "batch_size": 4, "patch": 32, "scene_size": 64, "optimizer": "Adam", "lr": 1e-3,
           "lr_schedule": "cosine", "loss": "MRAE", "amp": "none", "seed": 0, "train_seconds": 150.0,
           "device_name": "cpu", "iters_per_second": 2.0, "torch": "x", "val_scenes": 2, "val_crop": 0,
           "val_border": 128, "final_val_mrae": 0.3, "init": "a.pth", "init_training": first}
    text = card_section(result, log, "w.pth")
    assert "whole scenes scored inside a 128-px border" in text
    assert "continued from `a.pth`" in text and "400 iterations and 200 s in all" in text
    assert "64-px scenes, Adam" in text and "(4 per scene)" in card_section(result, {**log, "patches_per_scene": 4}, "w")


def test_eval_scene_deterministic_and_full_size() -> None:
    a, b = eval_scene(1), eval_scene(1)
    assert a.inputs.shape == (1, 3, 482, 512) and a.cubes.shape == (1, 31, 482, 512)
    assert torch.equal(a.cubes, b.cubes) and a.meta == b.meta
    assert a.meta[0]["split"] == "eval" and a.meta[0]["photo"] in EVAL_PHOTOS


def test_metrics_known_values() -> None:
    x = torch.rand(2, 31, 8, 8) + 0.1
    assert metrics.mrae(x, x) == 0.0 and metrics.rmse(x, x) == 0.0
    assert metrics.psnr(x, x) == math.inf
    assert metrics.mrae(2 * x, x) == pytest.approx(1.0)
    assert metrics.sam(3 * x, x) == pytest.approx(0.0, abs=1e-4)          # parallel spectra
    e = torch.zeros(1, 31, 1, 1)
    e[0, 0], e2 = 1.0, torch.zeros(1, 31, 1, 1)
    e2[0, 1] = 1.0
    assert metrics.sam(e, e2) == pytest.approx(90.0)                      # degrees
    y = x + 0.1                                                          # MSE 0.01 -> 20 dB
    assert metrics.psnr(y, x) == pytest.approx(20.0, abs=1e-6)
    assert metrics.rmse(y.numpy(), x.numpy()) == pytest.approx(0.1)
    s = metrics.error_stats(torch.tensor([1.0, 2.0, float("nan"), float("inf")]), torch.tensor([1.0, 1.0, 1.0, 1.0]))
    assert s["nan"] == 1 and s["inf"] == 1 and s["abs_max"] == pytest.approx(1.0)
    assert s["rel_mean"] == pytest.approx(0.5, rel=1e-4)
    assert metrics.crop_border(torch.zeros(1, 31, 482, 512)).shape == (1, 31, 226, 256)


def test_baselines_fit_linear_data() -> None:
    from mstpp.synth.baselines import RegressionBaseline

    rgb = torch.rand(500, 3)
    w = torch.rand(3, 31)
    fit = RegressionBaseline.fit(rgb, rgb @ w, "linear")
    pred = fit.predict(rgb.T.reshape(1, 3, 20, 25))
    assert torch.allclose(pred.reshape(31, -1).T, (rgb @ w).float(), atol=1e-4)


def _train(args: list[str], capsys) -> tuple[int, str]:
    # In-process (not a subprocess): shares the photo/eval-scene caches with the other tests.
    import train

    code = train.main(args)
    return code, capsys.readouterr().err


def test_train_tiny_cpu_writes_loadable_checkpoint(tmp_path: Path, capsys) -> None:
    from mstpp.weights import read_state_dict

    out = tmp_path / "m.pth"
    common = ["--device", "cpu", "--patch", "32", "--batch-size", "2", "--val-every", "2", "--val-scenes", "1",
              "--val-crop", "32", "--photos", ",".join(FEW_PHOTOS), "--no-progress", "--prefetch", "2",
              "--out", str(out), "--state", str(tmp_path / "s.pt")]
    code, err = _train([*common, "--iters", "2"], capsys)
    assert code == 0, err[-2000:]
    state = read_state_dict(out)
    assert all(v.dtype == torch.float32 for v in state.values())
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert set(raw) == {"epoch", "iter", "state_dict", "optimizer"} and raw["iter"] == 2
    assert out.with_suffix(".train.json").is_file()
    # --resume continues from the saved state to a longer run.
    code, err = _train([*common, "--iters", "3", "--resume"], capsys)
    assert code == 0, err[-2000:]
    assert torch.load(out, map_location="cpu", weights_only=True)["iter"] == 3
    # --session-minutes stops early without changing the schedule; --resume then finishes it.
    code, err = _train([*common, "--iters", "6", "--resume", "--session-minutes", "1e-6"], capsys)
    assert code == 0, err[-2000:]
    log = json.loads(out.with_suffix(".train.json").read_text())
    assert log["steps"] == 4 and log["planned_steps"] == 6 and log["stop_reason"].startswith("session limit")
    code, err = _train([*common, "--resume"], capsys)
    assert code == 0, err[-2000:]
    assert torch.load(out, map_location="cpu", weights_only=True)["iter"] == 6
    # --init starts a fresh schedule from saved weights and records where they came from.
    out2 = tmp_path / "m2.pth"
    code, err = _train([*common, "--iters", "1", "--init", str(out), "--out", str(out2),
                        "--state", str(tmp_path / "s2.pt")], capsys)
    assert code == 0, err[-2000:]
    log = json.loads(out2.with_suffix(".train.json").read_text())
    assert log["steps"] == 1 and log["init"] == str(out) and log["init_training"]["steps"] == 6
    # A resumed run still says where its starting weights came from.
    code, err = _train([*common, "--iters", "2", "--resume", "--out", str(out2), "--state", str(tmp_path / "s2.pt")],
                       capsys)
    assert code == 0, err[-2000:]
    log = json.loads(out2.with_suffix(".train.json").read_text())
    assert log["steps"] == 2 and log["init"] == str(out) and log["init_training"]["steps"] == 6
    # Two patches per rendered scene: the run trains and the log says so.
    out3 = tmp_path / "m3.pth"
    code, err = _train([*common, "--iters", "1", "--patches-per-scene", "2", "--out", str(out3),
                        "--state", str(tmp_path / "s3.pt")], capsys)
    assert code == 0, err[-2000:]
    assert json.loads(out3.with_suffix(".train.json").read_text())["patches_per_scene"] == 2


@pytest.mark.parametrize("bad", [["--patch", "30"], ["--batch-size", "0"], ["--device", "nonsense"],
                                 ["--resume", "--state", "/nonexistent/x.pt"], ["--unknown"],
                                 ["--init", "/nonexistent/w.pth"], ["--compile", "--device", "cpu"],
                                 ["--prefetch", "0"], ["--patches-per-scene", "0"],
                                 ["--patches-per-scene", "3", "--batch-size", "2"]])
def test_train_bad_args_one_line(bad: list[str], capsys) -> None:
    code, err = _train(bad, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err


def test_train_cli_bad_arg_exit_code() -> None:
    r = subprocess.run([sys.executable, str(REPO / "train.py"), "--patch", "12"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error:")

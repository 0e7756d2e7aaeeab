"""Spectral data for the synthetic generator: camera response, reflectances, illuminants.

Everything is read from files inside the repository (``data/``) so that training machines need neither
colour-science nor network access:

* ``data/NTIRE2022_RGB_Camera_QE.csv``: the NTIRE 2022 camera's quantum efficiency (R, G1, G2, B) at 1 nm.
* ``data/spectral_tables.json``: measured reflectances, tabulated illuminants and the CIE daylight basis,
  extracted from colour-science by ``tools/make_spectral_tables.py`` (sources in data/README_spectra.md).

All spectra are on the 31-band grid 400, 410, ..., 700 nm.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ..resources import data_dir

DATA_DIR = data_dir()
CAMERA_CSV = DATA_DIR / "NTIRE2022_RGB_Camera_QE.csv"
TABLES_JSON = DATA_DIR / "spectral_tables.json"

WAVELENGTHS = tuple(range(400, 701, 10))
N_BANDS = len(WAVELENGTHS)
#: NTIRE 2022 analog gains applied to the R, G and B channels (they act as a fixed white balance).
CAMERA_GAINS = (2.2933984, 1.0, 1.62308182)
SPLITS = ("train", "eval")


def read_camera_qe(path: str | Path = CAMERA_CSV) -> torch.Tensor:
    """Camera quantum efficiency of channels (R, G1, B) at 400..700 nm step 10: float64 [3, 31].

    The CSV has 1 nm rows and columns ``Wavelength[nm],R,G1,G2,B``; G2 is the second green of the
    Bayer pattern and is not used (NTIRE renders R, G1, B).
    """
    rows: dict[int, tuple[float, float, float]] = {}
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader)]
        col = {name: header.index(name) for name in ("R", "G1", "B")}
        for row in reader:
            if not row:
                continue
            wl = float(row[0])
            if wl.is_integer():
                rows[int(wl)] = (float(row[col["R"]]), float(row[col["G1"]]), float(row[col["B"]]))
    missing = [w for w in WAVELENGTHS if w not in rows]
    if missing:
        raise ValueError(f"{path}: no camera response at {missing[:3]} nm")
    return torch.tensor([rows[w] for w in WAVELENGTHS], dtype=torch.float64).T.contiguous()


def camera_matrix(path: str | Path = CAMERA_CSV) -> torch.Tensor:
    """Linear camera projection M: float32 [3, 31], ``rgb_c = sum_l M[c, l] * cube[l]``.

    ``M = QE * gain / sum(QE_G1)``: the NTIRE gains are applied per channel, and the whole matrix is
    divided by the summed green response so that a flat cube of value v renders to G = v. This fixes the
    unit of the target cubes (see ``camera.simulate``): a white pixel at the top of the input range has
    cube values near 1, like NTIRE's [0, 1]-ish radiance cubes.
    """
    qe = read_camera_qe(path)
    gains = torch.tensor(CAMERA_GAINS, dtype=torch.float64)[:, None]
    return (qe * gains / qe[1].sum()).to(torch.float32)


@dataclass(frozen=True)
class SpectralTables:
    """Tables of one split. Shapes: reflectances [N, 31]; illuminants [K, 31]; daylight_basis [3, 31]."""

    reflectances: torch.Tensor
    reflectance_sets: tuple[str, ...]      # set name of each reflectance row
    illuminants: torch.Tensor
    illuminant_names: tuple[str, ...]
    illuminant_families: tuple[str, ...]
    daylight_basis: torch.Tensor
    daylight_cct_ranges: tuple[tuple[float, float], ...]


@lru_cache(maxsize=4)
def _read_json(path: str) -> dict:
    return json.loads(Path(path).read_text())


def load_tables(split: str, path: str | Path = TABLES_JSON) -> SpectralTables:
    """Reflectances, illuminants and daylight CCT ranges belonging to ``split`` ('train' or 'eval')."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    raw = _read_json(str(path))
    if tuple(raw["wavelengths_nm"]) != WAVELENGTHS:
        raise ValueError(f"{path}: wavelength grid is not 400..700 nm step 10")
    refl, refl_sets = [], []
    for name, entry in raw["reflectances"].items():
        if entry["split"] == split:
            refl.extend(entry["values"])
            refl_sets.extend([name] * len(entry["values"]))
    ill = [(n, e) for n, e in raw["illuminants"].items() if e["split"] == split]
    basis = raw["daylight_basis"]
    return SpectralTables(
        reflectances=torch.tensor(refl, dtype=torch.float32),
        reflectance_sets=tuple(refl_sets),
        illuminants=torch.tensor([e["values"] for _, e in ill], dtype=torch.float32),
        illuminant_names=tuple(n for n, _ in ill),
        illuminant_families=tuple(e["family"] for _, e in ill),
        daylight_basis=torch.tensor([basis["S0"], basis["S1"], basis["S2"]], dtype=torch.float32),
        daylight_cct_ranges=tuple(tuple(r) for r in raw["daylight_cct_splits"][split]),
    )


def daylight_spd(cct: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """CIE D-series daylight at correlated colour temperatures ``cct`` [K] (4000..25000): [K, 31], max 1.

    CIE 15 formulae: chromaticity x_D from CCT (two polynomials split at 7000 K), y_D from x_D, then the
    weights M1, M2 of the basis S1, S2 added to S0. (CIE's nominal D65 is 6504 K in this formula.)
    """
    t = cct.to(torch.float64)
    x_low = -4.6070e9 / t**3 + 2.9678e6 / t**2 + 0.09911e3 / t + 0.244063
    x_high = -2.0064e9 / t**3 + 1.9018e6 / t**2 + 0.24748e3 / t + 0.237040
    x = torch.where(t <= 7000.0, x_low, x_high)
    y = -3.0 * x**2 + 2.870 * x - 0.275
    m = 0.0241 + 0.2562 * x - 0.7341 * y
    m1 = (-1.3515 - 1.7703 * x + 5.9114 * y) / m
    m2 = (0.0300 - 31.4424 * x + 30.0717 * y) / m
    b = basis.to(torch.float64)
    spd = b[0][None] + m1[:, None] * b[1][None] + m2[:, None] * b[2][None]
    spd = spd.clamp_min(0.0)
    return (spd / spd.amax(dim=1, keepdim=True)).to(torch.float32)

"""Extract the spectra the synthetic generator needs from colour-science into ``data/spectral_tables.json``.

Run once on a machine with ``colour-science`` installed (``pip install colour-science``)::

    python -m tools.make_spectral_tables            # writes data/spectral_tables.json

The generator itself (``mstpp.synth``) reads only the JSON, so training machines need no colour-science.
All spectra are sampled at 400, 410, ..., 700 nm (31 bands); every source table has samples at exactly
these wavelengths or is aligned by colour-science's own interpolator (noted per entry in ``notes``).
Values are rounded to 5 significant digits to keep the file small and diff-friendly.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

WAVELENGTHS = np.arange(400, 701, 10)

# Reflectance sets and the split each belongs to. Evaluation sets are kept intact; training spectra that
# nearly duplicate an evaluation spectrum are dropped below (AMPAS' 190 patches include ColorChecker-like
# samples), so "held-out reflectances" really are unseen in training.
REFLECTANCE_SPLITS = {
    "ampas_rawtoaces_190": "train",
    "pmc_memory_colours_30": "train",
    "cie_tcs_2024_15": "train",
    "colorchecker_babelcolor_avg_24": "eval",
    "nist_cqs_vs_9_0_15": "eval",
    "cie_tcs_1995_14": "eval",
}
#: RMS distance (reflectance units) under which a training spectrum counts as a copy of an eval spectrum.
DUPLICATE_RMS = 0.02

# Tabulated illuminants: name -> (colour-science dictionary, key, split, family).
ILLUMINANTS = [
    ("A", "ILLUMINANTS", "A", "train", "tungsten"),
    ("ISO7589_studio_tungsten", "ILLUMINANTS", "ISO 7589 Studio Tungsten", "eval", "tungsten"),
    ("Incandescent", "LIGHT_SOURCES", "Incandescent", "train", "tungsten"),
    ("60W_soft_white", "LIGHT_SOURCES", "60 A/W (Soft White)", "eval", "tungsten"),
] + [
    (f"FL{i}", "ILLUMINANTS", f"FL{i}", "train" if i <= 6 else "eval", "fluorescent") for i in range(1, 13)
] + [
    (f"FL3.{i}", "ILLUMINANTS", f"FL3.{i}", "train" if i <= 8 else "eval", "fluorescent") for i in range(1, 16)
] + [
    ("HP1", "ILLUMINANTS", "HP1", "train", "discharge"),
    ("HP2", "ILLUMINANTS", "HP2", "train", "discharge"),
    ("HP3", "ILLUMINANTS", "HP3", "train", "discharge"),
    ("HP4", "ILLUMINANTS", "HP4", "eval", "discharge"),
    ("HP5", "ILLUMINANTS", "HP5", "eval", "discharge"),
    ("LED-B1", "ILLUMINANTS", "LED-B1", "train", "led"),
    ("LED-B2", "ILLUMINANTS", "LED-B2", "train", "led"),
    ("LED-B3", "ILLUMINANTS", "LED-B3", "train", "led"),
    ("LED-B4", "ILLUMINANTS", "LED-B4", "eval", "led"),
    ("LED-B5", "ILLUMINANTS", "LED-B5", "eval", "led"),
    ("LED-BH1", "ILLUMINANTS", "LED-BH1", "eval", "led"),
    ("LED-RGB1", "ILLUMINANTS", "LED-RGB1", "train", "led"),
    ("LED-V1", "ILLUMINANTS", "LED-V1", "train", "led"),
    ("LED-V2", "ILLUMINANTS", "LED-V2", "eval", "led"),
    ("Phosphor_LED_YAG", "LIGHT_SOURCES", "Phosphor LED YAG", "train", "led"),
    ("PHOS-1", "LIGHT_SOURCES", "PHOS-1", "train", "led"),
    ("PHOS-2", "LIGHT_SOURCES", "PHOS-2", "train", "led"),
    ("PHOS-3", "LIGHT_SOURCES", "PHOS-3", "eval", "led"),
    ("PHOS-4", "LIGHT_SOURCES", "PHOS-4", "eval", "led"),
    ("Luxeon_WW_2880", "LIGHT_SOURCES", "Luxeon WW 2880", "train", "led"),
    ("4-LED_Yellow", "LIGHT_SOURCES", "4-LED Yellow", "train", "led"),
    ("4-LED_No_Yellow", "LIGHT_SOURCES", "4-LED No Yellow", "eval", "led"),
    ("Cool_White_FL", "LIGHT_SOURCES", "Cool White FL", "train", "fluorescent"),
    ("Triphosphor_FL", "LIGHT_SOURCES", "Triphosphor FL", "eval", "fluorescent"),
]

# Daylight is generated from the CIE D-series basis at any CCT; these bands split train/eval by CCT.
DAYLIGHT_SPLITS = {"train": [[4000.0, 6000.0], [7000.0, 10000.0]], "eval": [[6000.0, 7000.0]]}


def _round(values: np.ndarray, digits: int = 5) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in np.asarray(values, dtype=np.float64).ravel()]


def _sample(sd) -> np.ndarray:
    """Values of a colour SpectralDistribution at 400..700 nm step 10 (interpolated only where needed)."""
    import colour

    wl = np.asarray(sd.wavelengths)
    if all(np.any(np.isclose(wl, w)) for w in WAVELENGTHS):
        return np.array([sd.values[np.argmin(np.abs(wl - w))] for w in WAVELENGTHS], dtype=np.float64)
    aligned = sd.copy().align(colour.SpectralShape(400, 700, 10))
    return np.asarray(aligned.values, dtype=np.float64)


def _reflectance_sets() -> dict[str, tuple[list[str], np.ndarray]]:
    import colour.characterisation as ch
    import colour.quality.datasets as qd

    sets: dict[str, tuple[list[str], np.ndarray]] = {}
    ampas = ch.read_training_data_rawtoaces_v1()
    wl = np.asarray(ampas.wavelengths)
    idx = [int(np.argmin(np.abs(wl - w))) for w in WAVELENGTHS]
    sets["ampas_rawtoaces_190"] = (list(ampas.labels), np.asarray(ampas.values)[idx].T)

    def from_dict(d) -> tuple[list[str], np.ndarray]:
        return list(d.keys()), np.stack([_sample(sd) for sd in d.values()])

    sets["pmc_memory_colours_30"] = from_dict(ch.SDS_COLOURCHECKERS["PMC"])
    sets["cie_tcs_2024_15"] = from_dict(qd.SDS_TCS["CIE 2024"])
    sets["colorchecker_babelcolor_avg_24"] = from_dict(ch.SDS_COLOURCHECKERS["BabelColor Average"])
    sets["nist_cqs_vs_9_0_15"] = from_dict(qd.SDS_VS["NIST CQS 9.0"])
    sets["cie_tcs_1995_14"] = from_dict(qd.SDS_TCS["CIE 1995"])
    return sets


def build_tables() -> dict:
    """Collect all tables into one JSON-ready dict."""
    import colour
    from colour.colorimetry.datasets.illuminants.sds_d_illuminant_series import (
        SDS_BASIS_FUNCTIONS_CIE_ILLUMINANT_D_SERIES as D_BASIS,
    )

    sets = _reflectance_sets()
    eval_spectra = np.concatenate([v for k, (_, v) in sets.items() if REFLECTANCE_SPLITS[k] == "eval"])
    reflectances = {}
    dropped = 0
    for name, (labels, values) in sets.items():
        # Slightly negative values are measurement noise; a floor keeps MRAE labels away from zero.
        values = np.clip(values, 0.002, 1.0)
        split = REFLECTANCE_SPLITS[name]
        if split == "train":
            rms = np.sqrt(((values[:, None, :] - eval_spectra[None]) ** 2).mean(-1)).min(1)
            keep = rms > DUPLICATE_RMS
            dropped += int((~keep).sum())
            labels = [lab for lab, k in zip(labels, keep) if k]
            values = values[keep]
        reflectances[name] = {"split": split, "labels": labels,
                              "values": [_round(v) for v in values]}

    illuminants = {}
    for name, table, key, split, family in ILLUMINANTS:
        source = colour.SDS_ILLUMINANTS if table == "ILLUMINANTS" else colour.SDS_LIGHT_SOURCES
        values = np.clip(_sample(source[key]), 0.0, None)
        values = values / values.max()  # scale is irrelevant after exposure; max 1 keeps it readable
        illuminants[name] = {"split": split, "family": family, "values": _round(values)}

    return {
        "wavelengths_nm": [int(w) for w in WAVELENGTHS],
        "reflectances": reflectances,
        "illuminants": illuminants,
        "daylight_basis": {k: _round(_sample(D_BASIS[k])) for k in ("S0", "S1", "S2")},
        "daylight_cct_splits": DAYLIGHT_SPLITS,
        "notes": {
            "generator": "tools/make_spectral_tables.py",
            "colour_science_version": colour.__version__,
            "reflectance_floor": 0.002,
            "train_spectra_dropped_as_eval_duplicates": dropped,
            "duplicate_rms_threshold": DUPLICATE_RMS,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "data" / "spectral_tables.json"))
    args = parser.parse_args(argv)
    try:
        import colour  # noqa: F401
    except ImportError:
        print("error: colour-science is not installed (pip install colour-science)", file=sys.stderr)
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # colour warns about optional dependencies; not relevant here
        tables = build_tables()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tables, separators=(",", ":")) + "\n")
    n_refl = {k: len(v["labels"]) for k, v in tables["reflectances"].items()}
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB): reflectances {n_refl}, "
          f"{len(tables['illuminants'])} illuminants, dropped {tables['notes']['train_spectra_dropped_as_eval_duplicates']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

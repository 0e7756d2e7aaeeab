"""docs/REPORT.md from result files: pure text generation, so it can be regenerated at any time.

:func:`render_report` turns loaded results into markdown (no I/O); :func:`build_report` loads a
results directory, draws the figures and writes the report (what ``make_report.py`` calls).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .environment import environment_slug
from .markdown import environment_block, fmt, md_table
from .results import (BASELINE_ROUTE, BASELINE_TEXT, BenchResult, Row, attach_speedups, load_results_dir,
                      merge_results, repeat_check)

#: Accuracy columns in table order; other scalar keys of accuracy rows follow alphabetically.
_ACCURACY_COLUMNS = ("route", "status", "n_images", "mean_abs", "median_abs", "p99_abs", "max_abs",
                     "mean_rel", "median_rel", "p99_rel", "max_rel", "nan_count", "inf_count",
                     "mrae", "rmse", "psnr", "sam")
_ACCURACY_HIDDEN = ("per_image_mean_abs", "reason", "settings")

Figures = Mapping[str, Sequence[tuple[str, str]]]


def group_by_environment(results: Sequence[BenchResult]) -> list[BenchResult]:
    """Merge result files measured on the same hardware (GPU name, or CPU) into one result each."""
    groups: dict[str, list[BenchResult]] = {}
    for res in results:
        groups.setdefault(environment_slug(res.environment), []).append(res)
    merged = [merge_results(g) for g in groups.values()]
    for res in merged:  # a baseline from one file serves the routes of another
        attach_speedups(res.rows)
    return merged


def mode_label(mode: str, environment: Mapping[str, Any]) -> str:
    """How a row's timing mode is shown: ``gpu`` (device work) reads ``cpu`` for a run without a GPU."""
    if mode == "gpu" and not environment.get("gpu"):
        return "cpu"
    return mode


def _label_order(rows: Sequence[Row]) -> list[str]:
    # Baseline first, then in the order the runs measured them.
    labels = list(dict.fromkeys(r.label for r in rows))
    return sorted(labels, key=lambda lab: (not lab.startswith(BASELINE_ROUTE + " ") and lab != BASELINE_ROUTE,
                                          labels.index(lab)))


def latency_table(rows: Sequence[Row], mode: str = "gpu") -> str:
    """Route x batch table; each cell ``median ms / images/s / speed-up`` (baseline named in the header)."""
    picked = [r for r in rows if r.mode == mode and r.repeat == 0]
    batches = sorted({r.batch for r in picked if r.ok})
    labels = [lab for lab in _label_order(picked) if any(r.ok and r.label == lab for r in picked)]
    if not batches:
        return "_no successful measurements_"
    cells = {(r.label, r.batch): r for r in picked}
    body = []
    for lab in labels:
        line = [lab]
        for b in batches:
            r = cells.get((lab, b))
            if r is None:
                line.append("")
            elif r.ok:
                line.append(f"{fmt(r.median_ms)} ms / {fmt(r.throughput_ips)} img/s / {fmt(r.speedup, 'x')}")
            else:
                line.append(r.status)
        body.append(line)
    headers = ["route"] + [f"b={b}" for b in batches]
    note = (f"Cells: median latency per batch (ms) / throughput (images/s) / speed-up vs {BASELINE_TEXT} "
            "at the same batch.")
    return note + "\n\n" + md_table(headers, body)


def details_table(rows: Sequence[Row], environment: Mapping[str, Any] | None = None) -> str:
    """Every successful row with all statistics, memory and the timing method."""
    environment = {"gpu": True} if environment is None else environment
    headers = ["route", "mode", "batch", "runs", "median ms", "p90 ms", "p99 ms", "min ms", "std ms",
               "wall median ms", "img/s", "speed-up", "peak torch MiB", "device MiB", "timing"]
    body = [[r.label, mode_label(r.mode, environment), r.batch, r.n_runs, fmt(r.median_ms), fmt(r.p90_ms), fmt(r.p99_ms), fmt(r.min_ms),
             fmt(r.std_ms), fmt(r.wall_median_ms), fmt(r.throughput_ips), fmt(r.speedup, "x"),
             fmt(r.peak_torch_mib, "int"), fmt(r.device_mem_mib, "int"), r.timing_method]
            for r in rows if r.ok and r.repeat == 0]
    return md_table(headers, body) if body else "_none_"


def not_measured_table(rows: Sequence[Row]) -> str:
    """Skipped / out-of-memory / failed rows, one line per (route, status, reason) with their batches."""
    merged: dict[tuple[str, str, str], list[int]] = {}
    for r in rows:
        if not r.ok:
            merged.setdefault((r.label, r.status, r.reason), []).append(r.batch)
    body = [[lab, status, ", ".join(str(b) for b in sorted(set(batches))), reason]
            for (lab, status, reason), batches in merged.items()]
    return md_table(["route", "status", "batch sizes", "reason"], body) if body else "_none: every route ran_"


def repeat_table(rows: Sequence[Row]) -> str:
    checks = repeat_check(rows)
    if not checks:
        return ""
    body = [[c["route"], c["mode"], c["batch"], fmt(c["first_ms"]), fmt(c["second_ms"]), f"{c['diff_pct']:.2f}%",
             "yes" if c["within"] else "NO"] for c in checks]
    return md_table(["route", "mode", "batch", "first ms", "second ms", "difference",
                     f"within {checks[0]['tolerance_pct']:g}%"], body)


def settings_table(rows: Sequence[Row]) -> str:
    """Each route's ``describe()`` once (TF32, precision, providers, engine options...)."""
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.settings and r.route not in seen:
            seen[r.route] = r.settings
    body = [[route, "; ".join(f"{k}={v}" for k, v in s.items() if k != "route")] for route, s in seen.items()]
    return md_table(["route", "settings"], body) if body else "_none_"


def _metadata_lines(res: BenchResult) -> list[str]:
    sources = res.metadata.get("sources", [res.metadata])
    out = []
    for meta in sources:
        parts = [f"`{meta.get('source', meta.get('tag', '?'))}`"]
        if meta.get("weights"):
            parts.append(str(meta["weights"]))  # already reads "weights: ..."
        for key in ("command", "timing", "rows_removed", "incomplete"):
            if meta.get(key):
                parts.append(f"{key}: `{meta[key]}`")
        out.append("- " + "; ".join(str(p) for p in parts))
    return out


def _figure_lines(figs: Sequence[tuple[str, str]]) -> list[str]:
    return [f"![{caption}]({link})" for caption, link in figs]


def render_latency_section(res: BenchResult, figures: Sequence[tuple[str, str]] = ()) -> str:
    env = res.environment
    hw = env.get("gpu") or f"CPU ({env.get('cpu') or 'unknown'})"
    shapes = sorted({(r.height, r.width) for r in res.rows})
    parts = [f"## {hw}", "", "Result files:", *_metadata_lines(res), ""]
    for height, width in shapes:
        rows = [r for r in res.rows if (r.height, r.width) == (height, width)]
        device_work = ("device work, input already on the device" if env.get("gpu")
                       else "CPU: no GPU on this machine, input in host memory")
        for mode, what in (("gpu", device_work),
                           ("e2e", "end to end: pinned host input -> device -> output back in pinned host memory")):
            if any(r.mode == mode and r.ok for r in rows):
                parts += [f"### Latency, {what}: 3x{height}x{width}", "", latency_table(rows, mode), ""]
        parts += [f"### All statistics: 3x{height}x{width}", "", details_table(rows, env), ""]
    rep = repeat_table(res.rows)
    if rep:
        parts += ["### Repeat check (the baseline measured twice in one run)", "", rep, ""]
    parts += ["### Not measured", "", not_measured_table(res.rows), "",
              "### Route settings", "", settings_table(res.rows), "",
              "### Environment", "", environment_block(env), ""]
    if figures:
        parts += ["### Figures", "", *_figure_lines(figures), ""]
    return "\n".join(parts)


def accuracy_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Scalar metrics of accuracy rows; known columns first (``_ACCURACY_COLUMNS``)."""
    scalar = {k for r in rows for k, v in r.items()
              if k not in _ACCURACY_HIDDEN and (v is None or isinstance(v, (int, float, str)))}
    cols = [c for c in _ACCURACY_COLUMNS if c in scalar] + sorted(scalar - set(_ACCURACY_COLUMNS))
    body = [[fmt(r.get(c), "sci") if isinstance(r.get(c), float) else fmt(r.get(c)) for c in cols] for r in rows]
    notes = [f"- {r.get('route')}: {r.get('status')} - {r['reason']}" for r in rows if r.get("reason")]
    return md_table(cols, body) + ("\n\n" + "\n".join(notes) if notes else "")


def rel_error_note(accuracy: Sequence[Mapping[str, Any]]) -> str:
    """How the relative-error columns are computed, with the floor the files record."""
    from ..metrics import REL_ERROR_FLOOR

    floors = sorted({float(f.get("metadata", {}).get("rel_error_floor", REL_ERROR_FLOOR)) for f in accuracy})
    shown = ", ".join(f"{v:g}" for v in floors)
    older = any("rel_error_floor" not in f.get("metadata", {}) for f in accuracy)
    return (f"Relative error = |route - reference| / (|reference| + floor), floor = {shown}"
            + (f" (files that do not record it used {REL_ERROR_FLOOR:g})" if older else "")
            + ". MST++ outputs are reflectances in [0, 1]; where the "
            "reference is close to 0 (dark pixels and bands) a tiny absolute error gives a large relative one, so "
            "max_rel can reach 1e3-1e4 while max_abs stays small: judge routes by the abs columns, mean_rel and "
            "median_rel.")


def int8_speed_table(speed: Sequence[Mapping[str, Any]]) -> str:
    """performance_int8.py's speed rows: one batch per call, median latency in ms."""
    body = []
    for s in speed:
        ms = s.get("median_ms")
        shape = f"{s['batch']}x3x{s['height']}x{s['width']}" if "height" in s else "–"
        body.append([s.get("route"), s.get("status"), shape, "–" if ms is None else f"{fmt(ms)} ms",
                     "–" if not ms else f"{fmt(s.get('batch', 1) * 1000.0 / ms)} img/s", s.get("reason") or ""])
    return md_table(["route", "status", "input", "median latency", "throughput", "reason"], body)


def render_accuracy_section(accuracy: Sequence[Mapping[str, Any]], figures: Sequence[tuple[str, str]] = ()) -> str:
    parts = ["## Accuracy (vs PyTorch FP32)", "", rel_error_note(accuracy), ""]
    for env_file in accuracy:
        meta = env_file.get("metadata", {})
        env = env_file.get("environment", {})
        hw = env.get("gpu") or (f"CPU ({env['cpu']})" if env.get("cpu") else None)
        parts += [f"### `{meta.get('source', '?')}`" + (f" ({hw})" if hw else ""), ""]
        if meta.get("weights"):
            parts += [str(meta["weights"]), ""]
        parts += [accuracy_table(env_file["rows"]), ""]
        if meta.get("speed"):
            size = meta.get("size")
            parts += [f"INT8 speed{f' at {size[0]}x{size[1]}' if size else ''} (the FP32 ONNX Runtime route "
                      "first, for comparison):", "", int8_speed_table(meta["speed"]), ""]
    if figures:
        parts += [*_figure_lines(figures), ""]
    return "\n".join(parts)


def render_report(latency: Sequence[BenchResult], accuracy: Sequence[Mapping[str, Any]] = (),
                  figures: Figures | None = None, results_dir: str = "docs/results",
                  serving: Sequence[Mapping[str, Any]] = ()) -> str:
    """The whole report as markdown.

    Args:
        latency: one result per hardware (see :func:`group_by_environment`).
        accuracy: accuracy envelopes (``kind == "accuracy"``).
        serving: serving envelopes (``kind == "serving"``, see :mod:`.serving`).
        figures: ``{environment slug or "accuracy": [(caption, relative link), ...]}``.
        results_dir: the folder the results were read from, as the report names it.
    """
    figures = figures or {}
    parts = ["# MST++ inference benchmark report", "",
             f"Generated by `make_report.py` from the result files in `{results_dir.rstrip('/')}/`; "
             "do not edit by hand.", "",
             "Protocol: CUDA-event timing of the GPU work after warm-up (>= 200 ms and >= 20 runs), then "
             ">= 3 s or >= 100 runs measured (whichever comes first), each run synchronised; CPU routes "
             "timed with `perf_counter`. Throughput = batch / median latency. "
             f"Speed-up is against **{BASELINE_TEXT}** at the same batch size and mode. "
             "End-to-end rows (host<->device copies included) are timed by the synchronised host clock.", ""]
    if not latency:
        parts += ["_No latency results yet: run `python performance_latency.py`._", ""]
    for res in latency:
        parts.append(render_latency_section(res, figures.get(environment_slug(res.environment), ())))
    if accuracy:
        parts.append(render_accuracy_section(accuracy, figures.get("accuracy", ())))
    if serving:
        from .serving import render_serving_section

        parts.append(render_serving_section(serving, figures))
    return "\n".join(parts).rstrip() + "\n"


def _link(target: Path, report_path: Path) -> str:
    return Path(os.path.relpath(target, report_path.parent)).as_posix()


def draw_figures(latency: Sequence[BenchResult], accuracy: Sequence[Mapping[str, Any]], figures_dir: Path,
                 report_path: Path) -> dict[str, list[tuple[str, str]]]:
    """Draw every figure the report links to; returns captions and links relative to the report."""
    from . import plots

    out: dict[str, list[tuple[str, str]]] = {}
    for res in latency:
        slug = environment_slug(res.environment)
        ok = [r for r in res.rows if r.ok and r.repeat == 0]
        if not ok:
            continue
        figs = out.setdefault(slug, [])
        for mode in sorted({r.mode for r in ok}):
            label = mode_label(mode, res.environment)
            path = plots.plot_latency_throughput(ok, figures_dir / f"{slug}_latency_throughput_{label}.png", mode)
            figs.append((f"latency vs throughput ({label})", _link(path, report_path)))
        batches = sorted({r.batch for r in ok if r.speedup is not None and r.mode == "gpu"})
        for batch in sorted({batches[0], batches[-1]}) if batches else []:
            path = plots.plot_speedup(ok, batch, figures_dir / f"{slug}_speedup_b{batch}.png")
            figs.append((f"speed-up at batch {batch}", _link(path, report_path)))
    acc_rows = [r for env_file in accuracy for r in env_file["rows"]]
    if any(isinstance(r.get("per_image_mean_abs"), list) and r["per_image_mean_abs"] for r in acc_rows):
        path = plots.plot_error_distribution(acc_rows, figures_dir / "accuracy_error_distribution.png")
        out["accuracy"] = [("per-image mean abs error by route", _link(path, report_path))]
    return out


def build_report(results_dir: str | Path = "docs/results", report_path: str | Path = "docs/REPORT.md",
                 figures_dir: str | Path | None = None, with_figures: bool = True) -> Path:
    """Load ``results_dir/*.json``, draw figures into ``figures_dir`` (default: ``<report dir>/figures``)
    and write the report. Returns the report's path."""
    report_path = Path(report_path)
    figures_dir = Path(figures_dir) if figures_dir else report_path.parent / "figures"
    from .serving import figure_key, load_serving_results

    latency_files, accuracy = load_results_dir(results_dir)
    serving = load_serving_results(results_dir)
    latency = group_by_environment(latency_files)
    figures = draw_figures(latency, accuracy, figures_dir, report_path) if with_figures else {}
    if with_figures:
        from . import plots

        for env_file in serving:
            stem = Path(str(env_file["metadata"]["source"])).stem
            path = plots.plot_serving(env_file["rows"], figures_dir / f"{stem}.png")
            figures[figure_key(env_file)] = [("served throughput and latency vs clients", _link(path, report_path))]
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(render_report(latency, accuracy, figures, _shown_dir(Path(results_dir)), serving),
                           encoding="utf-8")
    return report_path


def _shown_dir(path: Path) -> str:
    # Reports get committed: name the results folder relative to the working folder where possible.
    if path.is_absolute():
        try:
            return path.relative_to(Path.cwd()).as_posix()
        except ValueError:
            return path.name
    return path.as_posix()

"""Figures from result rows (matplotlib, Agg backend: no display needed). Each function writes one PNG.

* :func:`plot_latency_throughput`: per route, median latency (ms) against throughput (images/s) over
  batch sizes, log-log, each point labelled with its batch size;
* :func:`plot_speedup`: speed-up over the baseline at one batch size, horizontal bars;
* :func:`plot_error_distribution`: per-image mean absolute error per route (box plot, log scale).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from .results import BASELINE_TEXT, Row

_FONT = {"font.size": 11, "axes.titlesize": 13, "axes.labelsize": 12, "legend.fontsize": 9,
         "xtick.labelsize": 10, "ytick.labelsize": 10}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless; leaves an already chosen non-GUI backend alone
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def _shape_text(rows: Sequence[Row]) -> str:
    shapes = sorted({(r.height, r.width) for r in rows})
    return ", ".join(f"{h}x{w}" for h, w in shapes)


def plot_latency_throughput(rows: Sequence[Row], path: str | Path, mode: str = "gpu", title: str = "") -> Path:
    """Latency (x, ms per batch) against throughput (y, images/s), one line per route label."""
    plt = _pyplot()
    picked = [r for r in rows if r.ok and r.mode == mode and r.repeat == 0]
    with plt.rc_context(_FONT):
        fig, ax = plt.subplots(figsize=(11, 7))
        labels = sorted({r.label for r in picked})
        # One colour per route (tab20 has enough for every route we have), a dashed line and square
        # markers for the CUDA-graph and end-to-end variants of the same route.
        routes = sorted({r.route for r in picked})
        colours = {route: plt.get_cmap("tab20")(i % 20) for i, route in enumerate(routes)}
        for label in labels:
            pts = sorted((r for r in picked if r.label == label), key=lambda r: r.batch)
            variant = label != pts[0].route
            ax.plot([r.median_ms for r in pts], [r.throughput_ips for r in pts], marker="s" if variant else "o",
                    linestyle="--" if variant else "-", color=colours[pts[0].route], label=label)
            for r in pts:
                ax.annotate(f"b{r.batch}", (r.median_ms, r.throughput_ips), textcoords="offset points",
                            xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("median latency per batch (ms, log scale)")
        ax.set_ylabel("throughput (images/s, log scale)")
        what = "device work" if mode == "gpu" else "end to end (with host<->device copies)"
        ax.set_title(title or f"Latency vs throughput, {what}, input {_shape_text(picked)}")
        ax.grid(True, which="both", alpha=0.3)
        if picked:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
        else:
            ax.text(0.5, 0.5, "no successful measurements", ha="center", transform=ax.transAxes)
        return _save(fig, path)


def plot_speedup(rows: Sequence[Row], batch: int, path: str | Path, mode: str = "gpu",
                 baseline_text: str = BASELINE_TEXT, title: str = "") -> Path:
    """Speed-up over the baseline (``Row.speedup``) of every route label at ``batch``, sorted."""
    plt = _pyplot()
    picked = sorted((r for r in rows if r.ok and r.mode == mode and r.batch == batch and r.repeat == 0
                     and r.speedup is not None), key=lambda r: r.speedup)  # type: ignore[arg-type,return-value]
    with plt.rc_context(_FONT):
        fig, ax = plt.subplots(figsize=(9, max(3.0, 0.45 * len(picked) + 1.5)))
        labels = [r.label for r in picked]
        values = [float(r.speedup) for r in picked]  # type: ignore[arg-type]
        bars = ax.barh(labels, values, color=["tab:gray" if v <= 1.0 else "tab:blue" for v in values])
        for bar, v, r in zip(bars, values, picked):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:.2f}x ({r.median_ms:.1f} ms)",
                    va="center", fontsize=9)
        ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
        ax.set_xlabel(f"speed-up over {baseline_text} (x, higher is faster)")
        ax.set_title(title or f"Speed-up at batch {batch}, input {_shape_text(picked)}")
        if values:
            ax.set_xlim(0, max(values) * 1.35)
        else:
            ax.text(0.5, 0.5, "no speed-up values", ha="center", transform=ax.transAxes)
        return _save(fig, path)


def plot_error_distribution(accuracy_rows: Sequence[Mapping[str, Any]], path: str | Path,
                            key: str = "per_image_mean_abs", title: str = "") -> Path:
    """Box plot of the per-image mean absolute error (vs PyTorch FP32) of each route."""
    plt = _pyplot()
    data = [(str(r["route"]), [float(v) for v in r[key]]) for r in accuracy_rows
            if isinstance(r.get(key), list) and r[key]]
    with plt.rc_context(_FONT):
        fig, ax = plt.subplots(figsize=(9, 6))
        if data:
            ax.boxplot([d[1] for d in data], showfliers=True)
            ax.set_xticks(range(1, len(data) + 1), [d[0] for d in data], rotation=30, ha="right")
            if all(v > 0 for d in data for v in d[1]):
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no per-image errors", ha="center", transform=ax.transAxes)
        ax.set_xlabel("route")
        ax.set_ylabel("per-image mean |error| vs PyTorch FP32 (reflectance units)")
        ax.set_title(title or "Per-image mean absolute error by route")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        return _save(fig, path)


def plot_serving(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Served throughput (left) and p50/p99 latency (right) against client concurrency, one line per batch
    policy; the direct runner's throughput at each policy's batch size as a dotted line of the same colour."""
    from .serving import direct_throughput, policy_label

    plt = _pyplot()
    served = [r for r in rows if r.get("kind") == "served" and r.get("status") == "ok"]
    direct = direct_throughput(rows)
    with plt.rc_context(_FONT):
        fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(13, 5.5))
        labels = list(dict.fromkeys(policy_label(r) for r in served))
        for i, label in enumerate(labels):
            colour = plt.get_cmap("tab10")(i % 10)
            pts = sorted((r for r in served if policy_label(r) == label), key=lambda r: r["concurrency"])
            xs = [r["concurrency"] for r in pts]
            ax_t.plot(xs, [r["throughput_ips"] for r in pts], marker="o", color=colour, label=label)
            ax_l.plot(xs, [r["p50_ms"] for r in pts], marker="o", color=colour, label=f"{label}: p50")
            ax_l.plot(xs, [r["p99_ms"] for r in pts], marker="s", linestyle="--", color=colour, label=f"{label}: p99")
            ref = direct.get(int(pts[0]["max_batch"]))
            if ref:
                ax_t.axhline(ref, color=colour, linestyle=":", label=f"direct runner, batch {pts[0]['max_batch']}")
        for ax in (ax_t, ax_l):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients (log scale)")
            ax.grid(True, which="both", alpha=0.3)
            if served:
                ax.legend(fontsize=8)
        ax_t.set_ylabel("images/s")
        ax_t.set_title("throughput")
        ax_l.set_yscale("log")
        ax_l.set_ylabel("request latency (ms, log scale)")
        ax_l.set_title("latency percentiles")
        if title:
            fig.suptitle(title)
        return _save(fig, path)

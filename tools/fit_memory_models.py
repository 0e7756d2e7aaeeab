#!/usr/bin/env python3
"""Fit the GPU memory models of mstpp/memory.py from committed benchmark results.

For every GPU route with measurements in docs/results, device memory (``device_mem_mib``: the drop of
cudaMemGetInfo free memory from before the runner was made) is fitted as ``fixed + per_pixel * B*H*W``
over its batch sizes (least squares slope; the intercept then raised until the line is at or above
every measurement, so the estimate never undercuts a committed number).

    python -m tools.fit_memory_models            # prints one line per route (from the repository root)

tests/test_memory.py checks that the coefficients in mstpp/memory.py are the ones this prints.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from mstpp.memory import GPU_SOURCES, MIB

ROOT = Path(__file__).resolve().parents[1]  # the checkout whose docs/results are fitted


def measurements(route: str, files: tuple[str, ...]) -> list[tuple[int, float]]:
    """(pixels B*H*W, device bytes) of every plain timed row of ``route`` in ``files``."""
    points = []
    for name in files:
        rows = json.loads((ROOT / "docs" / "results" / name).read_text())["rows"]
        for r in rows:
            if (r["route"] == route and r.get("status") == "ok" and r.get("mode", "gpu") == "gpu"
                    and not r.get("cuda_graph") and not r.get("repeat") and r.get("device_mem_mib")):
                points.append((r["batch"] * r["height"] * r["width"], r["device_mem_mib"] * MIB))
    return points


def fit_upper_line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(fixed bytes, bytes per pixel): least-squares slope, intercept lifted above every point."""
    n = len(points)
    mx = sum(p for p, _ in points) / n
    my = sum(m for _, m in points) / n
    slope = sum((p - mx) * (m - my) for p, m in points) / sum((p - mx) ** 2 for p, _ in points)
    fixed = max(m - slope * p for p, m in points)
    return max(fixed, 0.0), slope


def main() -> int:
    for route, files in GPU_SOURCES.items():
        points = measurements(route, files)
        if len(points) < 2:
            print(f"{route}: fewer than two measurements in {files}")
            continue
        fixed, per_px = fit_upper_line(points)
        print(f"{route}: fixed {fixed / MIB:.0f} MiB, {per_px:.0f} B/pixel "
              f"({len(points)} points from {', '.join(files)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

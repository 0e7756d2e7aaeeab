"""Statistics over latency samples. Pure functions on plain lists of milliseconds (no torch, no numpy).

Percentiles interpolate linearly between order statistics (NumPy's default ``linear`` method), so
``percentile(xs, 50) == median(xs)`` and results match ``numpy.percentile``.
"""
from __future__ import annotations

import math
from typing import Sequence

#: Keys of :func:`summarize`'s result, in table order. Latencies are in ms, throughput in images/s.
SUMMARY_KEYS = ("n_runs", "median_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "mean_ms", "std_ms",
                "throughput_ips")


def _checked(values: Sequence[float]) -> list[float]:
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("no samples")
    if any(math.isnan(v) for v in xs):
        raise ValueError("samples contain NaN")
    return xs


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 <= q <= 100) of ``values``, linear interpolation."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    xs = sorted(_checked(values))
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    """Median of ``values`` (mean of the two middle values for an even count)."""
    return percentile(values, 50.0)


def mean(values: Sequence[float]) -> float:
    xs = _checked(values)
    return math.fsum(xs) / len(xs)


def std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1 in the denominator); 0.0 for a single sample."""
    xs = _checked(values)
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def throughput(batch: int, median_ms: float) -> float:
    """Images per second when one batch of ``batch`` images takes ``median_ms`` milliseconds."""
    if median_ms <= 0:
        raise ValueError(f"latency must be positive, got {median_ms} ms")
    return batch / (median_ms / 1000.0)


def speedup(baseline_ms: float, ms: float) -> float:
    """How many times faster ``ms`` is than ``baseline_ms`` (> 1 means faster than the baseline)."""
    if ms <= 0 or baseline_ms <= 0:
        raise ValueError(f"latencies must be positive, got baseline {baseline_ms} ms and {ms} ms")
    return baseline_ms / ms


def relative_difference_pct(first: float, second: float) -> float:
    """|second - first| as a percentage of their mean: how far two measurements of one thing disagree."""
    ref = (first + second) / 2.0
    if ref <= 0:
        raise ValueError("measurements must be positive")
    return abs(second - first) / ref * 100.0


def summarize(samples_ms: Sequence[float], batch: int) -> dict[str, float]:
    """Latency statistics of one (route, batch) measurement.

    Args:
        samples_ms: one latency per timed run, milliseconds, for a whole batch.
        batch: images per run; throughput = batch / median seconds.

    Returns:
        a dict with the keys of :data:`SUMMARY_KEYS`.
    """
    xs = _checked(samples_ms)
    med = median(xs)
    return {
        "n_runs": len(xs),
        "median_ms": med,
        "p90_ms": percentile(xs, 90.0),
        "p99_ms": percentile(xs, 99.0),
        "min_ms": min(xs),
        "max_ms": max(xs),
        "mean_ms": mean(xs),
        "std_ms": std(xs),
        "throughput_ips": throughput(batch, med),
    }

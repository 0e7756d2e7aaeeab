"""Result rows and result files.

A latency run is written as two files that share a stem (``--tag``) under one directory:

* ``<tag>.json``: ``{"kind": "latency", "schema": 1, "metadata": {...}, "environment": {...},
  "rows": [Row, ...]}`` -- the complete record, read back by :func:`read_results`;
* ``<tag>.csv``: the same rows flat (``settings`` as a JSON string), for spreadsheets and pandas.

Accuracy results (``performance_accuracy.py``) use the same envelope with ``"kind": "accuracy"``; each
row is a dict with at least ``route`` and ``status`` and optionally scalar metrics (``mean_abs``,
``median_abs``, ``p99_abs``, ``max_abs``, ``mean_rel``, ... , ``nan_count``, ``mrae``, ``psnr``) and
``per_image_mean_abs``: a list with one float per image (used for the error-distribution figure).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .stats import relative_difference_pct, speedup

SCHEMA_VERSION = 1
STATUSES = ("ok", "skipped", "oom", "error")
MODES = ("gpu", "e2e")
#: The baseline every speed-up is measured against, with the words the report uses for it.
BASELINE_ROUTE = "torch-fp32"
BASELINE_TEXT = "torch-fp32 (PyTorch FP32 eager, TF32 off)"


@dataclass
class Row:
    """One measurement: a route at one input shape in one mode.

    Latencies are per batch in milliseconds; throughput in images/s; memory in MiB.

    Attributes:
        mode: ``gpu`` = device work only (input already on the device; CUDA events, or perf_counter for
            CPU routes); ``e2e`` = host->device copy of the input + run + device->host copy of the output
            through pinned host memory (host wall clock, synchronised).
        cuda_graph: the run was captured once into a CUDA graph and replayed.
        repeat: 0 for the first measurement; 1 for the repeat of the baseline (``--repeat-check``).
        status: ``ok``, ``skipped`` (route unavailable here; ``reason`` says why), ``oom`` or ``error``.
        wall_median_ms: host wall-clock median of the same runs (synchronised each run); much larger
            than ``median_ms`` means host overhead, or work the CUDA events did not see.
        peak_torch_mib: ``torch.cuda.max_memory_allocated`` during the phase (reset at its start;
            includes weights and buffers the runner holds); misses memory allocated outside torch.
        device_mem_mib: drop of free device memory (``cudaMemGetInfo``) from before the runner was made
            to the lowest point seen; sees onnxruntime/TensorRT allocations and torch's cache alike.
        settings: the runner's ``describe()``.
    """

    route: str
    batch: int
    height: int
    width: int
    mode: str = "gpu"
    cuda_graph: bool = False
    repeat: int = 0
    status: str = "ok"
    reason: str = ""
    device: str = ""
    timing_method: str = ""
    n_runs: int = 0
    warmup_runs: int = 0
    warmup_ms: float | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    throughput_ips: float | None = None
    wall_median_ms: float | None = None
    speedup: float | None = None
    baseline: str = ""
    peak_torch_mib: float | None = None
    device_mem_mib: float | None = None
    mem_method: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Route name plus variant, e.g. ``torch-fp16 +graph e2e``; one table row per label."""
        return self.route + (" +graph" if self.cuda_graph else "") + (" e2e" if self.mode == "e2e" else "")

    @property
    def key(self) -> tuple:
        """Identity of a measurement: a later row with the same key replaces an earlier one on merge."""
        return (self.route, self.batch, self.height, self.width, self.mode, self.cuda_graph, self.repeat,
                self.device.split(":")[0])

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.median_ms is not None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Row":
        """Inverse of ``dataclasses.asdict``; unknown keys (from newer files) are ignored."""
        names = {f.name for f in fields(cls)}
        clean = {k: _none_if_nan(v) for k, v in data.items() if k in names}
        settings = clean.get("settings")
        if isinstance(settings, str):
            clean["settings"] = json.loads(settings) if settings else {}
        elif settings is None:
            clean["settings"] = {}
        for name in ("batch", "height", "width", "repeat", "n_runs", "warmup_runs"):
            if clean.get(name) is not None:
                clean[name] = int(clean[name])
        if "cuda_graph" in clean:
            clean["cuda_graph"] = _as_bool(clean["cuda_graph"])
        for name in ("reason", "baseline", "device", "timing_method", "mem_method"):
            if clean.get(name) is None:
                clean[name] = ""
        return cls(**clean)


def _none_if_nan(value: Any) -> Any:
    # pandas reads empty CSV cells as NaN; a missing number is None everywhere else.
    return None if isinstance(value, float) and math.isnan(value) else value


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


@dataclass
class BenchResult:
    """Rows plus the environment they were measured in and run metadata (weights, options, command)."""

    rows: list[Row]
    environment: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: str = "latency"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "schema": SCHEMA_VERSION, "metadata": self.metadata,
                "environment": self.environment, "rows": [asdict(r) for r in self.rows]}


def attach_speedups(rows: Sequence[Row], baseline: str = BASELINE_ROUTE) -> None:
    """Set ``speedup`` on every ok row: baseline median / row median at the same shape and mode.

    Graph-replayed rows are compared with the eager baseline; the baseline is the first measurement
    (``repeat == 0``). Rows without a matching ok baseline row get ``speedup = None``.
    """
    base = {(r.batch, r.height, r.width, r.mode, r.device.split(":")[0]): r for r in rows
            if r.route == baseline and r.ok and not r.cuda_graph and r.repeat == 0}
    for row in rows:
        ref = base.get((row.batch, row.height, row.width, row.mode, row.device.split(":")[0]))
        if row.ok and ref is not None:
            row.speedup = speedup(ref.median_ms, row.median_ms)  # type: ignore[arg-type]
            row.baseline = baseline
        else:
            row.speedup, row.baseline = None, ""


def repeat_check(rows: Iterable[Row], route: str = BASELINE_ROUTE, tolerance_pct: float = 3.0
                 ) -> list[dict[str, Any]]:
    """Compare the two measurements of ``route`` (repeat 0 and 1) at each shape and mode.

    Returns:
        one dict per pair: batch, height, width, mode, first_ms, second_ms, diff_pct, within (bool).
    """
    pairs: dict[tuple, dict[int, Row]] = {}
    for r in rows:
        if r.route == route and r.ok and not r.cuda_graph:
            pairs.setdefault((r.batch, r.height, r.width, r.mode), {})[r.repeat] = r
    out = []
    for (batch, height, width, mode), by_repeat in sorted(pairs.items()):
        if 0 in by_repeat and 1 in by_repeat:
            first, second = by_repeat[0].median_ms, by_repeat[1].median_ms
            diff = relative_difference_pct(first, second)  # type: ignore[arg-type]
            out.append({"route": route, "batch": batch, "height": height, "width": width, "mode": mode,
                        "first_ms": first, "second_ms": second, "diff_pct": diff,
                        "within": diff <= tolerance_pct, "tolerance_pct": tolerance_pct})
    return out


def rows_to_frame(rows: Sequence[Row]):
    """Rows as a pandas DataFrame (one column per Row field; ``settings`` as a JSON string)."""
    import pandas as pd

    records = []
    for r in rows:
        rec = asdict(r)
        rec["settings"] = json.dumps(r.settings, sort_keys=True, default=str)
        records.append(rec)
    return pd.DataFrame.from_records(records, columns=[f.name for f in fields(Row)])


def write_envelope(envelope: Mapping[str, Any], frame: Any, out_dir: str | Path, tag: str,
                   indent: int = 2) -> tuple[Path, Path]:
    """Write one result file pair: ``<tag>.json`` (the envelope: kind, schema, metadata, environment, rows) and
    ``<tag>.csv`` (``frame``, a pandas DataFrame of the rows' scalar columns). Returns both paths.

    Latency results (``write_results``) and accuracy studies (``mstpp.bench.accuracy.write_accuracy``) both
    write through here, so every result file has the same envelope and the report reads them alike.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / f"{tag}.json", out / f"{tag}.csv"
    json_path.write_text(json.dumps(envelope, indent=indent, default=str) + "\n", encoding="utf-8")
    frame.to_csv(csv_path, index=False)
    return json_path, csv_path


def write_results(result: BenchResult, out_dir: str | Path, tag: str) -> tuple[Path, Path]:
    """Write ``<out_dir>/<tag>.json`` and ``<out_dir>/<tag>.csv``; returns both paths."""
    return write_envelope(result.to_json(), rows_to_frame(result.rows), out_dir, tag)


def read_json(path: str | Path) -> dict[str, Any]:
    """The raw envelope of a result file, with ``kind`` filled in for files written without one."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: not a result file (no 'rows' list)")
    data.setdefault("kind", "latency" if any("median_ms" in r for r in data["rows"]) else "accuracy")
    data.setdefault("metadata", {})
    data.setdefault("environment", {})
    return data


def read_results(path: str | Path) -> BenchResult:
    """Read a latency ``.json`` written by :func:`write_results`."""
    data = read_json(path)
    if data["kind"] != "latency":
        raise ValueError(f"{path}: holds {data['kind']} results, not latency")
    metadata = dict(data["metadata"])
    metadata.setdefault("source", Path(path).name)
    return BenchResult([Row.from_dict(r) for r in data["rows"]], data["environment"], metadata)


def read_rows_csv(path: str | Path) -> list[Row]:
    """Rows from a ``.csv`` written by :func:`write_results` (environment and metadata are JSON-only)."""
    import pandas as pd

    frame = pd.read_csv(path, keep_default_na=True, dtype={"reason": str, "settings": str})
    return [Row.from_dict(rec) for rec in frame.to_dict(orient="records")]


def merge_results(results: Sequence[BenchResult]) -> BenchResult:
    """One result from several runs on the same machine: later rows replace earlier ones with the same
    ``Row.key``; the environment is the latest run's; ``metadata['sources']`` lists every run's metadata.
    """
    if not results:
        return BenchResult([])
    merged: dict[tuple, Row] = {}
    for res in results:
        for row in res.rows:
            merged.pop(row.key, None)  # re-insert so a replaced row takes its newer position
            merged[row.key] = row
    # Once a route's runner replays its own CUDA graph, its plain row is the graph replay and an older "+graph"
    # row (captured around an earlier, eager version of the route) no longer describes it.
    self_graphed = {(r.route, r.batch, r.height, r.width) for r in merged.values()
                    if not r.cuda_graph and r.settings.get("cuda_graph") is True}
    rows = [r for r in merged.values() if not (r.cuda_graph and (r.route, r.batch, r.height, r.width) in self_graphed)]
    latest = results[-1]
    return BenchResult(rows, dict(latest.environment), {"sources": [r.metadata for r in results]})


def load_results_dir(directory: str | Path) -> tuple[list[BenchResult], list[dict[str, Any]]]:
    """All ``*.json`` result files of ``directory``: (latency results, accuracy envelopes).

    Latency results are ordered by the date their run started (then by file name), so that
    :func:`merge_results` lets a newer measurement of a route replace an older one whatever the files
    are called. Files that are not result files are ignored, so other JSON may live beside them.
    """
    latency: list[BenchResult] = []
    accuracy: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            data = read_json(path)
        except (ValueError, OSError):
            continue
        if data["kind"] == "latency":
            latency.append(read_results(path))
        elif data["kind"] == "accuracy":
            data["metadata"].setdefault("source", path.name)
            accuracy.append(data)
    latency.sort(key=lambda res: str(res.environment.get("date_utc", "")))  # stable: same date keeps name order
    return latency, accuracy

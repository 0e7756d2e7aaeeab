"""Serving results (``performance_serving.py``): the result file and its report section.

Same envelope as the other benchmarks, ``{"kind": "serving", "schema": 1, "metadata", "environment",
"rows"}``, with one row per measured point:

* ``kind: "served"``: a server with batch policy ``max_batch`` / ``queue_delay_us`` loaded by ``concurrency``
  clients over ``protocol``; ``throughput_ips`` = images answered / wall seconds; ``p50_ms`` ... ``p99_ms`` per
  request (client-side, round trip); ``errors`` = requests that failed;
* ``kind: "direct"``: the direct runner at batch ``max_batch`` (host input -> cube in host memory, as a server
  instance computes it): the reference for the served throughput.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from .results import SCHEMA_VERSION, read_json



def write_serving_results(rows: Sequence[Mapping[str, Any]], environment: Mapping[str, Any],
                          metadata: Mapping[str, Any], out_dir: str | Path, tag: str) -> tuple[Path, Path]:
    """``<out_dir>/<tag>.json`` (complete) and ``<tag>.csv`` (rows flat, without ``settings``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / f"{tag}.json", out / f"{tag}.csv"
    envelope = {"kind": "serving", "schema": SCHEMA_VERSION, "metadata": dict(metadata),
                "environment": dict(environment), "rows": [dict(r) for r in rows]}
    json_path.write_text(json.dumps(envelope, indent=2, default=str) + "\n", encoding="utf-8")
    columns = list(dict.fromkeys(k for r in rows for k in r if k != "settings"))
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path


def load_serving_results(directory: str | Path) -> list[dict[str, Any]]:
    """Every ``kind == "serving"`` envelope in ``directory/*.json`` (others ignored), oldest run first."""
    found = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            data = read_json(path)
        except (ValueError, OSError):
            continue
        if data["kind"] == "serving":
            data["metadata"].setdefault("source", path.name)
            found.append(data)
    found.sort(key=lambda d: str(d["environment"].get("date_utc", "")))
    return found


def policy_label(row: Mapping[str, Any]) -> str:
    """``max batch 16, delay 1000 us, grpc, fp32 out`` (no batching when the max batch is 1)."""
    batching = "no batching" if row.get("max_batch") == 1 else f"dynamic batch <= {row.get('max_batch')}"
    return f"{batching}, delay {row.get('queue_delay_us')} us, {row.get('protocol')}, {row.get('output_dtype')} out"


def direct_throughput(rows: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """{batch: images/s} of the direct-runner rows."""
    return {int(r["max_batch"]): float(r["throughput_ips"]) for r in rows
            if r.get("kind") == "direct" and r.get("status") == "ok" and r.get("throughput_ips")}


def serving_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per served point; ``of direct`` = served / direct throughput at the policy's batch size."""
    from .markdown import fmt, md_table

    direct = direct_throughput(rows)
    body = []
    for r in rows:
        if r.get("kind") != "served":
            continue
        ref = direct.get(int(r.get("max_batch") or 0))
        share = f"{100 * r['throughput_ips'] / ref:.0f}%" if ref and r.get("throughput_ips") else "–"
        body.append([policy_label(r), r.get("concurrency"), r.get("requests", "–"), r.get("errors", "–"),
                     fmt(r.get("throughput_ips")), share, fmt(r.get("p50_ms")), fmt(r.get("p90_ms")),
                     fmt(r.get("p99_ms"))])
    headers = ["batch policy", "clients", "requests", "errors", "img/s", "of direct", "p50 ms", "p90 ms", "p99 ms"]
    table = md_table(headers, body) if body else "_no served measurements_"
    if direct:
        table += "\n\nDirect runner (host input -> cube in host memory, one process): " + ", ".join(
            f"batch {b}: {fmt(v)} img/s" for b, v in sorted(direct.items()))
    return table


def render_serving_section(envelopes: Sequence[Mapping[str, Any]],
                           figures: Mapping[str, Sequence[tuple[str, str]]] | None = None) -> str:
    """``## Serving`` with one subsection per result file: table, environment, figure links."""
    from .markdown import environment_block

    figures = figures or {}
    parts = ["## Serving (Triton Inference Server through PyTriton, client and server on one host)", "",
             "Each client sends one image per request, back to back; latency is the client's round trip. "
             "Throughput = images answered / wall time of the point.", ""]
    for env_file in envelopes:
        env, meta = env_file["environment"], env_file["metadata"]
        rows = env_file["rows"]
        hw = env.get("gpu") or f"CPU ({env.get('cpu') or 'unknown'})"
        route = next((r.get("route") for r in rows if r.get("route")), "?")
        size = next(((r.get("height"), r.get("width")) for r in rows if r.get("height")), ("?", "?"))
        parts += [f"### {hw}: {route}, 3x{size[0]}x{size[1]} (`{meta.get('source')}`)", ""]
        if meta.get("weights"):
            parts += [str(meta["weights"]), ""]
        if meta.get("command"):
            parts += [f"command: `{meta['command']}`", ""]
        parts += [serving_table(rows), ""]
        failed = [r for r in rows if r.get("status") != "ok"]
        if failed:
            parts += ["Failed points: " + "; ".join(f"{policy_label(r)} x{r.get('concurrency')}: {r.get('reason')}"
                                                   for r in failed), ""]
        parts += ["Environment:", "", environment_block(env), ""]
        key = f"serving:{meta.get('source')}"
        for caption, link in figures.get(key, ()):
            parts.append(f"![{caption}]({link})")
        parts.append("")
    return "\n".join(parts)


def figure_key(envelope: Mapping[str, Any]) -> str:
    return f"serving:{envelope['metadata'].get('source')}"


__all__ = ["write_serving_results", "load_serving_results", "serving_table", "render_serving_section",
           "policy_label", "direct_throughput", "figure_key"]

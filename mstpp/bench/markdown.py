"""Markdown building blocks shared by the report's sections (latency, accuracy, serving)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence


def fmt(value: Any, kind: str = "ms") -> str:
    """Numbers for tables: ms with 3-4 significant digits, speed-up as ``1.23x``, None as an en dash."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    v = float(value)
    if kind == "x":
        return f"{v:.2f}x"
    if kind == "int":
        return f"{int(v)}"
    if kind == "sci":
        return f"{v:.3g}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; pipes and newlines inside cells are escaped."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def environment_block(env: Mapping[str, Any]) -> str:
    lines = [f"{k}: {v}" for k, v in env.items()]
    return "```\n" + "\n".join(lines) + "\n```"

"""Regenerate docs/REPORT.md and its figures from the result files in docs/results/*.json.

Latency files (performance_latency.py) measured on the same hardware are merged into one section;
accuracy files (performance_accuracy.py) get an accuracy table and an error-distribution figure;
INT8 files (performance_int8.py) add their speeds. Nothing is measured here, so the report can be
rebuilt at any time. The report names the results folder it was made from.

Examples:
  python make_report.py                                  # docs/results -> docs/REPORT.md
  python make_report.py --results-dir docs/results --out build/REPORT.md --no-figures
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mstpp.cli import CliParser, run_cli
from mstpp.errors import UserError


def build_parser() -> CliParser:
    p = CliParser(__doc__)
    p.add_argument("--results-dir", default="docs/results",
                   help="directory of result .json files (default docs/results)")
    p.add_argument("--out", default="docs/REPORT.md", help="report to write (default docs/REPORT.md)")
    p.add_argument("--figures-dir", default=None, help="where PNG figures go (default: <report dir>/figures)")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if not Path(args.results_dir).is_dir():
        raise UserError(f"results directory not found: {args.results_dir} (run performance_latency.py first)")

    from mstpp.bench.report import build_report

    path = build_report(args.results_dir, args.out, args.figures_dir, with_figures=not args.no_figures)
    print(f"wrote {path}")
    return 0

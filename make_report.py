#!/usr/bin/env python3
"""Regenerate docs/REPORT.md and its figures from the result files in docs/results/*.json.

Latency files (performance_latency.py) measured on the same hardware are merged into one section;
accuracy files (performance_accuracy.py) get an accuracy table and an error-distribution figure.
Nothing is measured here, so the report can be rebuilt at any time.

Example:
  python make_report.py --results-dir docs/results --out docs/REPORT.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn, Sequence


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", default="docs/results", help="directory of result .json files")
    p.add_argument("--out", default="docs/REPORT.md", help="report to write (default docs/REPORT.md)")
    p.add_argument("--figures-dir", default=None, help="where PNG figures go (default: <report dir>/figures)")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    args = p.parse_args(argv)
    if not Path(args.results_dir).is_dir():
        p.error(f"results directory not found: {args.results_dir} (run performance_latency.py first)")

    from mstpp.bench.report import build_report

    path = build_report(args.results_dir, args.out, args.figures_dir, with_figures=not args.no_figures)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

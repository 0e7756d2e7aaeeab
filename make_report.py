#!/usr/bin/env python3
"""Regenerate docs/REPORT.md and its figures from the result files in docs/results/*.json.

The program is mstpp/scripts/make_report.py; `python make_report.py --help` lists its options.
"""
from mstpp.scripts.make_report import main

if __name__ == "__main__":
    raise SystemExit(main())

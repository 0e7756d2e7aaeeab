#!/usr/bin/env python3
"""Serve MST++ through Triton Inference Server; see ``python serve.py --help``."""
import sys

from mstpp.cli import run_cli
from mstpp.scripts.serve import main

if __name__ == "__main__":
    sys.exit(run_cli(main))

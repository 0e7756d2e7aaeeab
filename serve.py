#!/usr/bin/env python3
"""Serve MST++ through Triton Inference Server; see ``python serve.py --help``."""
from mstpp.scripts.serve import main

if __name__ == "__main__":
    raise SystemExit(main())

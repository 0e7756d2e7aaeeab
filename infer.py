#!/usr/bin/env python3
"""Recover 31-band spectral cubes (400-700 nm) from RGB images with MST++.

The program is mstpp/scripts/infer.py; `python infer.py --help` lists its options.
"""
from mstpp.scripts.infer import main

if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Evaluate MST++ weights on held-out synthetic scenes; write a JSON report and the model-card section.

The program is mstpp/scripts/evaluate_weights.py; `python evaluate_weights.py --help` lists its options.
"""
from mstpp.scripts.evaluate_weights import main

if __name__ == "__main__":
    raise SystemExit(main())

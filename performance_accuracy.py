#!/usr/bin/env python3
"""Accuracy of every MST++ route against PyTorch FP32 (TF32 off), and against ground truth.

The program is mstpp/scripts/performance_accuracy.py; `python performance_accuracy.py --help` lists its options.
"""
from mstpp.scripts.performance_accuracy import main

if __name__ == "__main__":
    raise SystemExit(main())

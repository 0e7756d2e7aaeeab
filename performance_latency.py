#!/usr/bin/env python3
"""Latency and throughput of MST++ routes (PyTorch, ONNX Runtime, TensorRT, fused kernels) per batch size.

The program is mstpp/scripts/performance_latency.py; `python performance_latency.py --help` lists its options.
"""
from mstpp.scripts.performance_latency import main

if __name__ == "__main__":
    raise SystemExit(main())

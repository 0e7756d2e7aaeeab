"""Benchmarking: timing (CUDA events / perf_counter), statistics, environment capture, result files,
figures and the markdown report.

Submodules import torch, pandas and matplotlib only when they are used, so importing this package is
cheap; import the piece you need, e.g. ``from mstpp.bench.runner_loop import benchmark_route``.

Protocol (docs/DESIGN.md section 7): warm-up >= 200 ms and >= 20 runs, then >= 3 s or >= 100 runs
measured, whichever comes first; median/p90/p99/min, images/s and speed-up against a named baseline
(``torch-fp32``: PyTorch FP32 eager with TF32 off); end-to-end rows with host<->device copies apart.
"""

#!/usr/bin/env python3
"""Served throughput and latency against client concurrency; see ``python performance_serving.py --help``."""
from mstpp.scripts.performance_serving import main

if __name__ == "__main__":
    raise SystemExit(main())

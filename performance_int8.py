#!/usr/bin/env python3
"""INT8 MST++: speed, accuracy, and where the INT8 error starts.

The program is mstpp/scripts/performance_int8.py; `python performance_int8.py --help` lists its options.
"""
from mstpp.scripts.performance_int8 import main

if __name__ == "__main__":
    raise SystemExit(main())

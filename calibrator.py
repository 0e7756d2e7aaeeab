#!/usr/bin/env python3
"""INT8 calibration for MST++: activation ranges at every convolution input, saved as a cache file.

The program is mstpp/scripts/calibrator.py; `python calibrator.py --help` lists its options.
"""
from mstpp.scripts.calibrator import main

if __name__ == "__main__":
    raise SystemExit(main())

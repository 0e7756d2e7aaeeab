#!/usr/bin/env python3
"""Build a TensorRT engine of MST++ written layer by layer with the network API (no ONNX).

The program is mstpp/scripts/mst_trt_api.py; `python mst_trt_api.py --help` lists its options.
"""
from mstpp.scripts.mst_trt_api import main

if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Build a TensorRT engine of MST++ from its ONNX file with TensorRT's ONNX parser.

The program is mstpp/scripts/mst_onnxparser.py; `python mst_onnxparser.py --help` lists its options.
"""
from mstpp.scripts.mst_onnxparser import main

if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Export MST++ to ONNX, check it, simplify it, and verify it against PyTorch with onnxruntime.

The program is mstpp/scripts/torch2onnx.py; `python torch2onnx.py --help` lists its options.
"""
from mstpp.scripts.torch2onnx import main

if __name__ == "__main__":
    raise SystemExit(main())

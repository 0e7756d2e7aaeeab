"""mstpp: run MST++ (RGB -> 31-band spectral cube) fast and correctly on NVIDIA GPUs.

Heavy dependencies (TensorRT, onnxruntime, CUDA kernels) are imported only by the modules that need
them, never at package import.
"""
__version__ = "0.1.0"

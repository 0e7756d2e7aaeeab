"""Old module name of the FP16 pass, kept so that existing imports keep working; use ``mstpp.onnx.fp16``."""
from .onnx.fp16 import FP32_OP_TYPES, convert_to_fp16  # noqa: F401

"""What every MST++ ONNX file of this toolkit says about itself: tensor names, metadata keys, doc string."""
from __future__ import annotations

from ..input_size import MIN_INPUT_SIZE

INPUT_NAME = "rgb"
OUTPUT_NAME = "cube"
MODEL_KEY = "mstpp.model"
WEIGHT_MAP_KEY = "mstpp.weight_map"
#: Metadata key with the smallest H and W the model accepts (``mstpp.input_size.MIN_INPUT_SIZE``).
MIN_SIZE_KEY = "mstpp.min_input_size"

#: What an MST++ ONNX file says about itself (ModelProto.doc_string).
MODEL_DOC = (f"MST++ spectral recovery: {INPUT_NAME} [B, 3, H, W] float32 RGB in [0, 1] -> {OUTPUT_NAME} "
             f"[B, 31, H, W] (400-700 nm, 10 nm steps). H and W must be >= {MIN_INPUT_SIZE}: smaller inputs "
             "fail in the reflect Pad (to a multiple of 8).")

"""Old module name of the ONNX export steps, kept so that existing imports keep working.

New code imports from ``mstpp.onnx.export``, ``.simplify``, ``.rewrite``, ``.weight_map``, ``.names``
and ``.check``.
"""
from .onnx.check import check_mstpp_onnx, compare_with_torch, ort_session  # noqa: F401
from .onnx.export import (DYNAMIC_MAX_BATCH, DYNAMIC_MAX_SIZE, DYNAMIC_MIN_SIZE, choose_exporter,  # noqa: F401
                          export_onnx, op_counts)
from .onnx.names import INPUT_NAME, MIN_SIZE_KEY, MODEL_DOC, MODEL_KEY, OUTPUT_NAME, WEIGHT_MAP_KEY  # noqa: F401
from .onnx.rewrite import DEFAULT_L2_FORM, L2_FORMS, L2_NODE_PREFIX, rewrite_l2_norms  # noqa: F401
from .onnx.simplify import simplify  # noqa: F401
from .onnx.weight_map import attach_weight_map, weights_from_map  # noqa: F401

"""Old module name, kept so that existing imports keep working; use ``mstpp.onnx.weight_map``."""
from .onnx.weight_map import state_dict_from_onnx  # noqa: F401

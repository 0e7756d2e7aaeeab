"""Old module name of the ONNX build cache, kept so that existing imports keep working.

Use ``mstpp.onnx.cache`` (``cache_dir``, ``cached_onnx``) and ``mstpp.weights.state_fingerprint``.
"""
from ..onnx.cache import DEFAULT_CACHE_DIR as CACHE_DIR  # noqa: F401
from ..onnx.cache import cached_onnx  # noqa: F401
from ..weights import state_fingerprint as weights_digest  # noqa: F401

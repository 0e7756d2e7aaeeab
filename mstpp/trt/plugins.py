"""Loading our TensorRT plugin library (MstLayerNorm, MstL2Norm, MstGelu, MstFfn, MstMsa)."""
from __future__ import annotations

import ctypes
from pathlib import Path

from ..errors import UserError
from ..resources import plugin_build_dir
from .version import TrtInfo

#: The statically registering build: loading it registers the creators with TensorRT's registry.
DEFAULT_PLUGIN_LIB = plugin_build_dir() / "libmstpp_plugins.so"


def load_plugin_library(info: TrtInfo, path: str | Path = DEFAULT_PLUGIN_LIB) -> Path:
    """Load the plugin library so the network API can create our plugins.

    Raises:
        UserError: this TensorRT has no plugin layers (TensorRT-RTX), or the library is not built.
    """
    path = Path(path)
    if not info.has_plugins:
        raise UserError(f"{info.summary} has no plugin layers; use --plugins none or full TensorRT")
    if not path.is_file():
        raise UserError(f"plugin library not found: {path} "
                        "(build it: make -C plugins plugins TENSORRT_ROOT=/path/to/TensorRT)")
    ctypes.CDLL(str(path))
    return path

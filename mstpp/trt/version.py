"""Which TensorRT is installed: full TensorRT 10/11 (``tensorrt``) or TensorRT-RTX (``tensorrt_rtx``)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from ..errors import UserError

#: Import order when no flavour is asked for: full TensorRT first (it runs on every NVIDIA GPU).
FLAVOURS = ("tensorrt", "tensorrt_rtx")


@dataclass(frozen=True)
class TrtInfo:
    """The imported module and what it can do."""

    module: ModuleType
    flavour: str  # "tensorrt" or "tensorrt_rtx"
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def is_rtx(self) -> bool:
        return self.flavour == "tensorrt_rtx"

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT 11 and TensorRT-RTX have no weak typing (no precision flags, no calibrators)."""
        return self.is_rtx or self.major >= 11

    @property
    def has_plugins(self) -> bool:
        """TensorRT-RTX networks have no plugin layers."""
        return hasattr(self.module.INetworkDefinition, "add_plugin_v3")

    @property
    def has_legacy_calibrator(self) -> bool:
        return hasattr(self.module, "IInt8EntropyCalibrator2")

    @property
    def summary(self) -> str:
        name = "TensorRT-RTX" if self.is_rtx else "TensorRT"
        return f"{name} {self.version}"


def detect(flavour: str | None = None) -> TrtInfo:
    """Import TensorRT (``flavour`` = ``tensorrt``/``tensorrt_rtx``, or the first that imports).

    Raises:
        UserError: nothing importable, with what to install.
    """
    names = (flavour,) if flavour else FLAVOURS
    errors = []
    for name in names:
        if name not in FLAVOURS:
            raise UserError(f"unknown TensorRT flavour {name!r}; use tensorrt or tensorrt_rtx")
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # a broken install raises OSError/ImportError from the bindings
            errors.append(f"{name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            continue
        return TrtInfo(module, name, str(module.__version__))
    raise UserError("no TensorRT is importable (" + "; ".join(errors) + "). Install TensorRT 10/11 "
                    "(pip install tensorrt) or TensorRT-RTX (pip install tensorrt-rtx-cu12)")

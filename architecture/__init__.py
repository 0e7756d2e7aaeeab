"""Model definitions and a name -> builder registry.

    from architecture import MST_Plus_Plus, build_model
    model = build_model("mst_plus_plus")          # same as MST_Plus_Plus()
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from . import parts
from .mst_plus_plus import MIN_SIZE, MST, MSAB, MST_Plus_Plus, SpectralMSA, l2_normalize, pad_amounts

MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mst_plus_plus": MST_Plus_Plus,
}


def build_model(name: str = "mst_plus_plus", **kwargs) -> nn.Module:
    """Build a registered model by name; keyword arguments go to its constructor."""
    try:
        builder = MODEL_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODEL_REGISTRY))}") from None
    return builder(**kwargs)


__all__ = ["MIN_SIZE", "MST", "MSAB", "MST_Plus_Plus", "SpectralMSA", "l2_normalize", "MODEL_REGISTRY", "build_model",
           "pad_amounts", "parts"]

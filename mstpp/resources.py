"""Where the toolkit finds the files it ships (weights, spectral tables, sample photos) and the libraries it builds.

One lookup, in this order:

1. ``$MSTPP_HOME``: a folder laid out like the repository (``model/``, ``data/``, ``plugins/build/``);
2. the source checkout this package was imported from (running from the repository, or ``pip install -e .``);
3. the copy ``pip install .`` puts under ``<prefix>/share/mstpp`` (weights, tables and samples only: the CUDA
   libraries are build outputs of ``make -C plugins`` in a checkout, so an installed package finds them through
   ``$MSTPP_HOME`` or the per-library variables ``$MSTPP_KERNELS_LIB`` / ``--plugin-lib``).

Every path the library reads by default comes from here; nothing else walks up from ``__file__``.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

__all__ = ["HOME_ENV_VAR", "resource_root", "resource_path", "shipped_weights", "data_dir", "plugin_build_dir",
           "source_checkout"]

HOME_ENV_VAR = "MSTPP_HOME"
#: A file only a source checkout has; it tells a checkout from a site-packages folder.
_CHECKOUT_MARKER = Path("plugins") / "kernels" / "mstpp_kernels.h"
#: Where ``pip install .`` places the shipped files (pyproject.toml's data-files), relative to the prefix.
_INSTALLED_SHARE = Path("share") / "mstpp"


@lru_cache(maxsize=1)
def source_checkout() -> Path | None:
    """The repository this package was imported from, or ``None`` for an installed (non-editable) copy."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / _CHECKOUT_MARKER).is_file() else None


def resource_root() -> Path:
    """The folder shipped files are read from: ``$MSTPP_HOME``, else the checkout, else ``<prefix>/share/mstpp``."""
    override = os.environ.get(HOME_ENV_VAR)
    if override:
        return Path(override)
    checkout = source_checkout()
    if checkout is not None:
        return checkout
    return Path(sys.prefix) / _INSTALLED_SHARE


def resource_path(*parts: str) -> Path:
    """``resource_root() / parts...`` (the file need not exist)."""
    return resource_root().joinpath(*parts)


def shipped_weights() -> Path:
    """The trained weights shipped with the toolkit (``model/mstpp_synthetic.pth``)."""
    return resource_path("model", "mstpp_synthetic.pth")


def data_dir() -> Path:
    """``data/``: camera response, spectral tables and the sample photos."""
    return resource_path("data")


def plugin_build_dir() -> Path:
    """``plugins/build/``, where ``make -C plugins`` writes the kernel and TensorRT plugin libraries."""
    return resource_path("plugins", "build")

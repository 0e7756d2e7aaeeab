"""Checks a serving process makes before PyTriton starts Triton.

PyTriton 0.7 pins numpy < 2, and the pin is real: with numpy 2 in the same environment the server starts
but answers with empty output arrays. The serving stack therefore lives in its own virtual environment
(``./build.sh serve-env`` creates ``.venv-serve`` from ``requirements-serving.txt``); a server started
anywhere else refuses to start instead of answering wrongly.
"""
from __future__ import annotations

import importlib.util
import os
import sysconfig

from ..errors import UserError

#: How the README tells a user to get the serving environment.
SETUP_HINT = "create the serving environment with `./build.sh serve-env` and run it with .venv-serve/bin/python"


def check_serving_environment() -> None:
    """Raise UserError (one line) unless numpy < 2, PyTriton and tritonclient are importable here."""
    import numpy

    major = int(numpy.__version__.split(".")[0])
    if major >= 2:
        raise UserError(f"numpy {numpy.__version__} is installed, but PyTriton needs numpy < 2 (with numpy 2 it "
                        f"answers with empty arrays); {SETUP_HINT}")
    for module, package in (("pytriton", "nvidia-pytriton"), ("tritonclient", "tritonclient[grpc,http]")):
        if importlib.util.find_spec(module) is None:
            raise UserError(f"{package} is not installed in this environment; {SETUP_HINT}")


def libpython_dir() -> str | None:
    """The directory holding this interpreter's shared ``libpython3.X.so*``, or None when there is none."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not os.path.isdir(libdir):
        return None
    # A statically linked interpreter (Debian's, for one) may still have the shared library installed beside it.
    prefix = f"libpython{sysconfig.get_config_var('LDVERSION') or sysconfig.get_python_version()}.so"
    return libdir if any(name.startswith(prefix) for name in os.listdir(libdir)) else None


def put_libpython_on_loader_path(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> str | None:
    """Prepend libpython's directory to ``LD_LIBRARY_PATH`` in ``environ``; returns the directory added.

    Triton's Python-backend stub is a separate executable linked against ``libpython3.X.so``; with a
    Python whose library directory is not on the loader path (pyenv builds, for one) the stub cannot
    start. PyTriton passes a copy of ``os.environ`` to the ``tritonserver`` process it launches, so
    setting it here, before the server starts, reaches the stub.
    """
    libdir = libpython_dir()
    if libdir is None:
        return None
    current = [p for p in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir not in current:
        environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *current])
    return libdir

"""The CUDA kernels compile with nvcc and the library exports its C ABI (CPU-only: nothing is launched)."""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

PLUGINS_DIR = Path(__file__).resolve().parent.parent / "plugins"
EXPORTED = [
    "mstpp_error_string",
    "mstpp_layernorm_rows",
    "mstpp_layernorm_nchw",
    "mstpp_l2norm_workspace_size",
    "mstpp_l2norm_rows",
    "mstpp_gelu",
    "mstpp_ffn_nchw",
    "mstpp_msa_workspace_size",
    "mstpp_msa_nchw",
]

requires_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
requires_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not on PATH")


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(PLUGINS_DIR), *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def kernels_lib(tmp_path_factory) -> Path:
    build_dir = tmp_path_factory.mktemp("plugins_build")
    # One architecture and no PTX keeps the compile within CI's two cores and time budget.
    result = _make("-j2", f"BUILD_DIR={build_dir}", "CUDA_ARCHS=sm_90", "PTX_ARCH=")
    assert result.returncode == 0, result.stdout + result.stderr
    return build_dir / "libmstpp_kernels.so"


@requires_make
@requires_nvcc
def test_library_is_built(kernels_lib: Path):
    assert kernels_lib.is_file()


@requires_make
@requires_nvcc
def test_library_exports_c_abi(kernels_lib: Path):
    if shutil.which("nm"):
        out = subprocess.run(["nm", "-D", "--defined-only", str(kernels_lib)], capture_output=True, text=True,
                             check=True).stdout
        exported = {line.split()[-1] for line in out.splitlines() if line.strip()}
        assert set(EXPORTED) <= exported
        # Everything else (the statically linked CUDA runtime included) stays hidden.
        assert {name for name in exported if name.startswith("mstpp_")} == set(EXPORTED)
    # The CUDA runtime is linked statically, so the library loads on a machine without a GPU.
    lib = ctypes.CDLL(str(kernels_lib))
    for name in EXPORTED:
        assert hasattr(lib, name), name


@requires_make
@requires_nvcc
def test_host_side_calls_without_gpu(kernels_lib: Path):
    lib = ctypes.CDLL(str(kernels_lib))
    lib.mstpp_error_string.argtypes = [ctypes.c_int]
    lib.mstpp_error_string.restype = ctypes.c_char_p
    lib.mstpp_l2norm_workspace_size.argtypes = [ctypes.c_int64, ctypes.c_int64]
    lib.mstpp_l2norm_workspace_size.restype = ctypes.c_size_t
    lib.mstpp_gelu.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p]
    lib.mstpp_layernorm_rows.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64, ctypes.c_int, ctypes.c_float,
                                                                 ctypes.c_int, ctypes.c_void_p]

    assert lib.mstpp_error_string(0) == b"success"
    assert b"1024" in lib.mstpp_error_string(-4)
    assert lib.mstpp_error_string(-99) == b"unknown mstpp error code"
    assert lib.mstpp_l2norm_workspace_size(0, 100) == 0
    # At most 256 chunks per row of float32 partial sums.
    assert 0 < lib.mstpp_l2norm_workspace_size(124, 249_856) <= 124 * 256 * 4
    # Arguments are validated before any CUDA call, so these return without touching a device.
    assert lib.mstpp_gelu(None, None, -1, 0, None) == -2
    assert lib.mstpp_gelu(None, None, 10, 7, None) == -3
    assert lib.mstpp_gelu(None, None, 0, 0, None) == 0
    assert lib.mstpp_gelu(None, None, 10, 0, None) == -1
    assert lib.mstpp_layernorm_rows(None, None, None, None, 10, 2048, 1e-5, 0, None) == -4
    assert lib.mstpp_layernorm_rows(None, None, None, None, 10, 31, float("nan"), 0, None) == -5


@requires_make
def test_make_plugins_without_tensorrt_fails_clearly(tmp_path: Path):
    result = _make("plugins", "TENSORRT_ROOT=", f"BUILD_DIR={tmp_path}")
    assert result.returncode != 0
    assert "TENSORRT_ROOT is not set" in result.stdout + result.stderr
    assert not any(tmp_path.iterdir()), "nothing may be built before the check fails"


@requires_make
def test_make_plugins_with_wrong_tensorrt_root_fails_clearly(tmp_path: Path):
    result = _make("plugins", f"TENSORRT_ROOT={tmp_path / 'nowhere'}", f"BUILD_DIR={tmp_path}")
    assert result.returncode != 0
    assert "include/NvInfer.h not found" in result.stdout + result.stderr

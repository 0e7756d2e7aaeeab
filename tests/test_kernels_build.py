"""The CUDA kernels compile with nvcc and the library exports its C ABI (CPU-only: nothing is launched).

With ``TENSORRT_ROOT`` set (a directory with ``include/NvInfer.h``; headers alone are enough for the compile
check), the TensorRT plugin sources are compiled too; with ``lib/libnvinfer.so`` there as well, both plugin
libraries are linked, their exports checked, and ``tests/plugin_check.cpp`` exercises the creators and the
fused-block plugins MstFfn and MstMsa on the host (no GPU needed).
"""
from __future__ import annotations

import ctypes
import os
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
    "mstpp_conv_nchw",
    "mstpp_upfuse_nchw",
    "mstpp_capability",
]

#: What the dynamic-registration plugin library exports besides the kernels' C ABI (the static one: nothing).
PLUGIN_LOADER_EXPORTS = ["getCreators", "setLoggerFinder"]
TENSORRT_ROOT = Path(os.environ["TENSORRT_ROOT"]) if os.environ.get("TENSORRT_ROOT") else None

requires_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
requires_tensorrt_headers = pytest.mark.skipif(
    TENSORRT_ROOT is None or not (TENSORRT_ROOT / "include" / "NvInfer.h").is_file(),
    reason="set TENSORRT_ROOT to a TensorRT 10.x/11.x root (include/NvInfer.h) to compile the plugins")
requires_libnvinfer = pytest.mark.skipif(
    TENSORRT_ROOT is None or not (TENSORRT_ROOT / "lib" / "libnvinfer.so").is_file(),
    reason="TENSORRT_ROOT has no lib/libnvinfer.so to link the plugin libraries against")
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
@requires_nvcc
def test_capabilities_are_read_from_the_library(kernels_lib: Path, monkeypatch):
    from mstpp import kernels

    monkeypatch.setenv(kernels.ENV_VAR, str(kernels_lib))
    monkeypatch.setattr(kernels, "_lib", None)
    monkeypatch.setattr(kernels, "_caps", None)
    caps = kernels.capabilities()  # host-only: answers without a GPU
    assert caps.gaps() == []
    assert caps.layernorm_max_c == 1024 and caps.msa_head_dim == kernels.MSA_HEAD_DIM
    assert set(caps.conv_geometries) == set(kernels.CONV_GEOMETRIES)
    lib = ctypes.CDLL(str(kernels_lib))
    assert lib.mstpp_capability(99, None, 0) == -2  # unknown capability: MSTPP_ERR_BAD_SHAPE


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


@requires_make
@requires_nvcc
@requires_tensorrt_headers
def test_plugin_sources_compile_against_tensorrt(tmp_path: Path):
    sources = sorted((PLUGINS_DIR / "trt").glob("*.cpp"))
    assert len(sources) >= 8  # one file per plugin over the shared base
    objects = [f"{tmp_path}/obj/trt/{src.stem}.{kind}.o" for src in sources for kind in ("static", "dynamic")]
    result = _make("-j2", *objects, f"TENSORRT_ROOT={TENSORRT_ROOT}", f"BUILD_DIR={tmp_path}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output  # built with -Wall
    assert all(Path(o).is_file() for o in objects)


@pytest.fixture(scope="module")
def plugin_libs(tmp_path_factory) -> Path:
    build_dir = tmp_path_factory.mktemp("plugins_trt_build")
    result = _make("-j2", "plugins", f"TENSORRT_ROOT={TENSORRT_ROOT}", f"BUILD_DIR={build_dir}", "CUDA_ARCHS=sm_90",
                   "PTX_ARCH=")
    assert result.returncode == 0, result.stdout + result.stderr
    return build_dir


def _defined_exports(lib: Path) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip() and not line.split()[-1].startswith("_")}


@requires_make
@requires_nvcc
@requires_libnvinfer
@pytest.mark.skipif(shutil.which("nm") is None, reason="nm is not on PATH")
def test_plugin_libraries_export_sets(plugin_libs: Path):
    assert _defined_exports(plugin_libs / "libmstpp_plugins.so") == set(EXPORTED)
    assert _defined_exports(plugin_libs / "libmstpp_plugins_dynamic.so") == set(EXPORTED) | set(PLUGIN_LOADER_EXPORTS)


@requires_make
@requires_nvcc
@requires_libnvinfer
def test_plugin_creators_and_block_plugin_checks_on_host(plugin_libs: Path, tmp_path: Path):
    # nvcc only as the host compiler driver: it knows where cuda_runtime_api.h (included by NvInfer.h) lives.
    exe = tmp_path / "plugin_check"
    build = subprocess.run(["nvcc", "-std=c++17", "-Xcompiler", "-Wall,-Wextra", "-isystem",
                            str(TENSORRT_ROOT / "include"), str(Path(__file__).with_name("plugin_check.cpp")), "-ldl",
                            "-o", str(exe)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0 and "warning" not in build.stderr, build.stderr
    env = dict(os.environ, LD_LIBRARY_PATH=f"{TENSORRT_ROOT / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    run = subprocess.run([str(exe), str(plugin_libs / "libmstpp_plugins_dynamic.so")], capture_output=True,
                         text=True, timeout=120, env=env)
    print(run.stdout)
    assert run.returncode == 0 and "OK" in run.stdout, run.stdout + run.stderr

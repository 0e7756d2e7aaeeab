"""Shared fixtures: golden reference files, small inputs, and the `gpu` marker."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _golden_dir() -> Path | None:
    # The reference case lives outside the repository; the GPU run copies it into .golden/.
    for candidate in (os.environ.get("MSTPP_GOLDEN_DIR"), REPO / ".golden", REPO.parent / "shared" / "reference"):
        if candidate and (Path(candidate) / "mstpp_golden.npz").is_file():
            return Path(candidate)
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped without one")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    found = _golden_dir()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("golden reference files not found (expected ../shared/reference beside the repo)")
        pytest.skip("golden reference files not found; set MSTPP_GOLDEN_DIR")
    return found


@pytest.fixture(scope="session")
def arad_image(golden_dir) -> Path:
    """The real ARAD_1K RGB frame (482x512) that ships beside the golden case."""
    for candidate in (golden_dir / "data", golden_dir.parent / "data"):
        if (candidate / "ARAD_1K_0912.jpg").is_file():
            return candidate / "ARAD_1K_0912.jpg"
    pytest.skip("ARAD_1K_0912.jpg not found beside the golden case")


@pytest.fixture(scope="session")
def golden(golden_dir) -> dict[str, np.ndarray]:
    with np.load(golden_dir / "mstpp_golden.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def golden_state(golden) -> dict[str, torch.Tensor]:
    return {k[len("weight/"):]: torch.from_numpy(v) for k, v in golden.items() if k.startswith("weight/")}


@pytest.fixture(scope="module")
def built_library():
    """The CUDA kernel library, built on first use (GPU test modules)."""
    from kernel_helpers import ensure_kernels_built
    ensure_kernels_built()


@pytest.fixture
def no_tf32():
    """FP32 references computed without TF32 (the accuracy targets are stated with TF32 off)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def run_script(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a repository script as a user would, capturing output."""
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)

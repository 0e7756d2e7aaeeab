"""The CUDA kernels against PyTorch on a GPU: LayerNorm (rows and NCHW), L2 normalisation, exact GELU.

Every check draws fresh random inputs, writes into an output poisoned with NaN inside a NaN guard band (so a
missed element or an out-of-bounds write shows up), and compares with a float32 PyTorch reference computed
from the same low-precision input. Tolerances are about one unit in the last place of the storage type:
float32 1e-5, float16 2e-3 relative, bfloat16 1.6e-2 relative.
"""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from mstpp import kernels

from kernel_helpers import GUARD, Poisoned

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.usefixtures("built_library"),
]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=1e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=8e-3, rtol=1.6e-2),
}
_seed = [0]


def _generator() -> torch.Generator:
    _seed[0] += 1
    return torch.Generator(device="cuda").manual_seed(1234 + _seed[0])


def _randn(shape, dtype, scale=1.0, offset=0.0) -> torch.Tensor:
    x = torch.randn(shape, generator=_generator(), device="cuda", dtype=torch.float32) * scale + offset
    return x.to(dtype)


def _affine(channels: int):
    gen = _generator()
    gamma = 1.0 + 0.1 * torch.randn(channels, generator=gen, device="cuda")
    beta = 0.1 * torch.randn(channels, generator=gen, device="cuda")
    return gamma, beta


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    torch.testing.assert_close(actual.float(), expected.float(), **TOL[dtype])


# ------------------------------------------------------------------------------------------------ LayerNorm

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels", [31, 62, 124, 1, 7, 100, 1024])
def test_layer_norm_rows(channels, dtype):
    for rows in (1, 63, 64, 65, 1000, 4099):
        x = _randn((rows, channels), dtype, scale=2.0, offset=0.5)
        gamma, beta = _affine(channels)
        poisoned = Poisoned(x)
        kernels.layer_norm_rows(x, gamma, beta, eps=1e-5, out=poisoned.out)
        expected = F.layer_norm(x.float(), (channels,), gamma, beta, eps=1e-5)
        _assert_close(poisoned.check(), expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_layer_norm_rows_mst_shape(dtype):
    # Level 0 of MST++ at 512x488: [1, 512, 488, 31] channels-last, plus a misaligned (offset) input.
    x = _randn((1, 512, 488, 31), dtype)
    gamma, beta = _affine(31)
    poisoned = Poisoned(x)
    kernels.layer_norm_rows(x, gamma, beta, out=poisoned.out)
    _assert_close(poisoned.check(), F.layer_norm(x.float(), (31,), gamma, beta, 1e-5), dtype)

    storage = _randn((1 + 777 * 62,), dtype)
    x = storage[1:].view(777, 62)
    gamma, beta = _affine(62)
    poisoned = Poisoned(x)
    kernels.layer_norm_rows(x, gamma, beta, out=poisoned.out)
    _assert_close(poisoned.check(), F.layer_norm(x.float(), (62,), gamma, beta, 1e-5), dtype)


def test_layer_norm_rows_large_mean_is_stable():
    # A mean 1000x the spread: E[x^2] - E[x]^2 in float32 would lose most digits of the variance.
    x = _randn((4096, 124), torch.float32, scale=1.0, offset=1000.0)
    gamma, beta = _affine(124)
    poisoned = Poisoned(x)
    kernels.layer_norm_rows(x, gamma, beta, out=poisoned.out)
    expected = F.layer_norm(x.double(), (124,), gamma.double(), beta.double(), 1e-5)
    torch.testing.assert_close(poisoned.check().double(), expected, atol=2e-3, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels", [31, 62, 124, 5, 300])
def test_layer_norm_nchw(channels, dtype):
    # HW multiples of the 64-pixel tile, partial tiles, and widths that are not a multiple of the 16-byte pack.
    for batch, height, width in ((1, 8, 8), (2, 16, 12), (1, 1, 1), (2, 7, 9), (1, 64, 61), (3, 32, 33)):
        x = _randn((batch, channels, height, width), dtype, scale=1.5, offset=-0.3)
        gamma, beta = _affine(channels)
        poisoned = Poisoned(x)
        kernels.layer_norm_nchw(x, gamma, beta, eps=1e-5, out=poisoned.out)
        expected = F.layer_norm(x.float().permute(0, 2, 3, 1), (channels,), gamma, beta, 1e-5).permute(0, 3, 1, 2)
        _assert_close(poisoned.check(), expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_layer_norm_nchw_mst_shape(dtype):
    x = _randn((1, 124, 128, 122), dtype)
    gamma, beta = _affine(124)
    poisoned = Poisoned(x)
    kernels.layer_norm_nchw(x, gamma, beta, out=poisoned.out)
    expected = F.layer_norm(x.float().permute(0, 2, 3, 1), (124,), gamma, beta, 1e-5).permute(0, 3, 1, 2)
    _assert_close(poisoned.check(), expected, dtype)


# ------------------------------------------------------------------------------------------------ L2Norm

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_l2_normalize(dtype):
    for rows, length in ((1, 1), (3, 7), (31, 1023), (62, 62_464), (5, 100_001), (124, 15_616), (2, 4096)):
        x = _randn((rows, length), dtype, scale=2.0)
        poisoned = Poisoned(x)
        kernels.l2_normalize(x, out=poisoned.out)
        _assert_close(poisoned.check(), F.normalize(x.float(), dim=-1, eps=1e-12), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_l2_normalize_misaligned(dtype):
    rows, length = 7, 3001
    storage = _randn((rows * length + 3,), dtype)
    for x_offset, out_offset in ((1, 0), (3, 3 + GUARD)):
        # (1, 0): x and out differently aligned, the unpacked path; (3, 3): same misalignment, scalar heads.
        x = storage[x_offset:x_offset + rows * length].view(rows, length)
        out_buffer = torch.full((rows * length + 2 * GUARD,), float("nan"), dtype=dtype, device="cuda")
        out = out_buffer[out_offset:out_offset + rows * length].view(rows, length)
        kernels.l2_normalize(x, out=out)
        torch.cuda.synchronize()
        assert torch.isfinite(out).all()
        _assert_close(out, F.normalize(x.float(), dim=-1), dtype)


def test_l2_normalize_zero_rows_and_eps():
    x = torch.zeros((4, 1000), device="cuda")
    x[1] = 1e-14  # norm 3.2e-13 < eps: divided by eps, as torch does
    poisoned = Poisoned(x)
    kernels.l2_normalize(x, out=poisoned.out)
    torch.testing.assert_close(poisoned.check(), F.normalize(x, dim=-1, eps=1e-12))


def test_l2_normalize_fp16_full_resolution_does_not_overflow():
    # 249,856 values ~ N(0, 4): the sum of squares (~4e6) overflows float16 (max 65504) unless accumulated in FP32.
    x = _randn((31, 249_856), torch.float16, scale=4.0)
    assert torch.isinf((x * x).sum(dim=-1, dtype=torch.float16)).all()
    poisoned = Poisoned(x)
    kernels.l2_normalize(x, out=poisoned.out)
    actual = poisoned.check().float()
    expected = F.normalize(x.float(), dim=-1)
    rel = (actual - expected).norm(dim=-1) / expected.norm(dim=-1)
    assert rel.max().item() <= 1e-3, rel.max().item()
    torch.testing.assert_close(actual.norm(dim=-1), torch.ones(31, device="cuda"), atol=1e-3, rtol=0)


def test_l2_normalize_is_deterministic():
    x = _randn((2, 4, 31, 62_464), torch.float32)
    first = kernels.l2_normalize(x)
    for _ in range(3):
        assert torch.equal(kernels.l2_normalize(x), first)


# ------------------------------------------------------------------------------------------------ GELU

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gelu(dtype):
    for n in (1, 7, 8, 9, 1000, 4097, 124 * 4096 + 3):
        x = _randn((n,), dtype, scale=3.0)
        poisoned = Poisoned(x)
        kernels.gelu(x, out=poisoned.out)
        _assert_close(poisoned.check(), F.gelu(x.float()), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gelu_shapes_and_misalignment(dtype):
    x = _randn((2, 124, 61, 33), dtype, scale=3.0)
    _assert_close(kernels.gelu(x), F.gelu(x.float()), dtype)
    storage = torch.cat([_randn((1001,), dtype, scale=3.0), torch.tensor([-12.0, 12.0, 0.0], device="cuda").to(dtype)])
    x = storage[1:]
    poisoned = Poisoned(x)
    kernels.gelu(x, out=poisoned.out)
    _assert_close(poisoned.check(), F.gelu(x.float()), dtype)


# ------------------------------------------------------------------------------------------------ wrapper

def test_wrapper_rejects_bad_inputs():
    x = torch.randn(8, 31, device="cuda")
    gamma, beta = _affine(31)
    with pytest.raises(ValueError, match="contiguous"):
        kernels.gelu(x.t())
    with pytest.raises(ValueError, match="float32"):
        kernels.layer_norm_rows(x, gamma.half(), beta)
    with pytest.raises(ValueError, match="31 elements"):
        kernels.layer_norm_rows(x, gamma[:30], beta)
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        kernels.l2_normalize(x.double())
    with pytest.raises(ValueError, match="overlap"):
        kernels.gelu(x, out=x)
    with pytest.raises(ValueError, match="CUDA"):
        kernels.gelu(x.cpu())

"""The fused feed-forward block kernel (mstpp_ffn_nchw) against PyTorch's ``PreNorm(C, FeedForward(C))(x) + x``.

GPU tests (marker ``gpu``) compare with the architecture's own modules in float64 and float32 (TF32 off), for
the three MST++ widths and awkward shapes: a single pixel, sizes that leave partial tiles at the right and bottom
borders, a batch, and the model's level-2 size. Every call writes into an output poisoned with NaN inside NaN guard
bands, so a missed pixel or an out-of-bounds write shows up; x is checked unmodified afterwards.

Tolerances. FP32: float32 arithmetic throughout, max abs error <= 2e-5 against float64 (outputs are O(1)) and
<= 1e-4 against PyTorch float32. FP16/BF16: the reference is float64 on the same rounded input, so the error is
the rounding of y to the storage type (half an ulp: <= 2^-11 |y| in FP16, 2^-8 |y| in BF16) plus float32 noise:
rtol 1e-3 / atol 1e-4 for FP16 and rtol 8e-3 / atol 1e-3 for BF16.

CPU tests check that the binding rejects bad arguments with ValueError before it loads the library.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

from architecture.mst_plus_plus import FeedForward, PreNorm
from mstpp import kernels

from kernel_helpers import Poisoned

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CHANNELS = [31, 62, 124]
# Single pixel; odd sizes with partial tiles at both borders (tiles are 14x14, 6x14, 8x8); batch; MST++ level 2.
SHAPES = [(1, 1, 1), (2, 7, 13), (1, 64, 61), (1, 128, 122), (3, 15, 29)]
LOW_TOL = {
    torch.float16: dict(atol=1e-4, rtol=1e-3),
    torch.bfloat16: dict(atol=1e-3, rtol=8e-3),
}


# ------------------------------------------------------------------------------------------------ helpers

def _block(channels: int, seed: int) -> PreNorm:
    """PreNorm(C, FeedForward(C)) with seeded random weights scaled so every activation is O(1)."""
    gen = torch.Generator().manual_seed(seed)
    block = PreNorm(channels, FeedForward(channels))
    hidden = 4 * channels
    with torch.no_grad():
        block.norm.weight.copy_(1.0 + 0.2 * torch.randn(channels, generator=gen))
        block.norm.bias.copy_(0.2 * torch.randn(channels, generator=gen))
        block.fn.net[0].weight.copy_(torch.randn(hidden, channels, 1, 1, generator=gen) / math.sqrt(channels))
        block.fn.net[2].weight.copy_(torch.randn(hidden, 1, 3, 3, generator=gen) / 3.0)
        block.fn.net[4].weight.copy_(torch.randn(channels, hidden, 1, 1, generator=gen) / math.sqrt(hidden / 2))
    return block.eval()


def _params(block: PreNorm):
    return tuple(p.detach() for p in (block.norm.weight, block.norm.bias, block.fn.net[0].weight,
                                      block.fn.net[2].weight, block.fn.net[4].weight))


def _input(shape, dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return (1.5 * torch.randn(shape, generator=gen, device="cuda") + 0.3).to(dtype)


@torch.no_grad()
def _reference(block: PreNorm, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    ref = copy.deepcopy(block).to(device=x.device, dtype=dtype)
    xr = x.to(dtype)
    return ref(xr) + xr


def _run(block: PreNorm, x: torch.Tensor) -> torch.Tensor:
    poisoned = Poisoned(x)
    before = x.clone()
    kernels.ffn_nchw(x, *_params(block), eps=1e-5, out=poisoned.out)
    y = poisoned.check()
    assert torch.equal(x, before), "the kernel modified its input"
    return y


# ------------------------------------------------------------------------------------------------ GPU

@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.usefixtures("built_library", "no_tf32")
@pytest.mark.gpu
@requires_cuda
def test_ffn_fp32_matches_pytorch(channels, shape):
    batch, height, width = shape
    block = _block(channels, seed=channels)
    x = _input((batch, channels, height, width), torch.float32, seed=height * 1000 + width)
    y = _run(block, x)
    ref64 = _reference(block, x, torch.float64)
    ref32 = _reference(block, x, torch.float32)
    err64 = (y.double() - ref64).abs().max().item()
    err32 = (y - ref32).abs().max().item()
    assert err64 <= 2e-5, f"max abs error vs float64 {err64:.3g}"
    assert err32 <= 1e-4, f"max abs error vs torch float32 {err32:.3g}"
    assert ref64.abs().max().item() > 0.5, "test activations are not O(1)"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.usefixtures("built_library")
@pytest.mark.gpu
@requires_cuda
def test_ffn_low_precision_storage(channels, dtype):
    block = _block(channels, seed=7 * channels)
    for batch, height, width in SHAPES:
        x = _input((batch, channels, height, width), dtype, seed=batch + height + width)
        y = _run(block, x)
        assert y.dtype == dtype
        ref = _reference(block, x, torch.float64)  # from the same rounded x
        torch.testing.assert_close(y.double(), ref, **LOW_TOL[dtype])


@pytest.mark.usefixtures("built_library")
@pytest.mark.gpu
@requires_cuda
def test_ffn_weight_layouts_and_misaligned_input():
    block = _block(62, seed=3)
    gamma, beta, w1, wdw, w2 = _params(block)
    x = _input((2, 62, 9, 17), torch.float32, seed=11)
    y4 = kernels.ffn_nchw(x, gamma, beta, w1, wdw, w2)
    # 2-D / 3-D weight shapes, float64 CPU parameters: converted to float32 on x's device.
    y2 = kernels.ffn_nchw(x, gamma.double(), beta, w1[:, :, 0, 0], wdw[:, 0], w2[:, :, 0, 0].double())
    torch.cuda.synchronize()
    assert torch.equal(y4, y2)
    # Same values at an odd element offset: the kernel has no alignment requirement.
    storage = torch.empty(x.numel() + 1, dtype=torch.float16, device="cuda")
    xh = storage[1:].view(x.shape)
    xh.copy_(x)
    torch.testing.assert_close(_run(block, xh).double(), _reference(block, xh, torch.float64),
                               **LOW_TOL[torch.float16])


@pytest.mark.usefixtures("built_library")
@pytest.mark.gpu
@requires_cuda
def test_ffn_is_deterministic_and_handles_empty():
    block = _block(124, seed=5)
    x = _input((1, 124, 33, 20), torch.bfloat16, seed=5)
    first = kernels.ffn_nchw(x, *_params(block))
    for _ in range(2):
        assert torch.equal(kernels.ffn_nchw(x, *_params(block)), first)
    for shape in ((0, 124, 8, 8), (1, 124, 0, 8), (2, 124, 8, 0)):
        empty = torch.empty(shape, device="cuda")
        assert kernels.ffn_nchw(empty, *_params(block)).shape == shape


@pytest.mark.usefixtures("built_library")
@pytest.mark.gpu
@requires_cuda
def test_ffn_rejects_bad_inputs_on_gpu():
    block = _block(31, seed=1)
    x = _input((1, 31, 8, 8), torch.float32, seed=1)
    with pytest.raises(ValueError, match="contiguous"):
        kernels.ffn_nchw(x.to(memory_format=torch.channels_last), *_params(block))
    with pytest.raises(ValueError, match="contiguous"):
        kernels.ffn_nchw(x.transpose(2, 3), *_params(block))
    with pytest.raises(ValueError, match="overlap"):
        kernels.ffn_nchw(x, *_params(block), out=x)
    with pytest.raises(ValueError, match="31, 62 or 124"):
        kernels.ffn_nchw(_input((1, 32, 8, 8), torch.float32, seed=2), *_params(_block(31, seed=1)))


# ------------------------------------------------------------------------------------------------ CPU

def test_ffn_binding_rejects_bad_arguments_before_loading(monkeypatch):
    def no_library():
        raise AssertionError("the library must not be loaded for invalid arguments")

    monkeypatch.setattr(kernels, "_load", no_library)
    block = _block(31, seed=0)
    params = list(_params(block))
    x = torch.zeros(1, 31, 4, 4)

    def call(x=x, params=params, **kwargs):
        return kernels.ffn_nchw(x, *params, **kwargs)

    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        call(x.double())
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        call(x[0])
    with pytest.raises(ValueError, match="31, 62 or 124"):
        call(torch.zeros(1, 32, 4, 4))
    for index, name in enumerate(("ln_weight", "ln_bias", "w1", "wdw", "w2")):
        bad = list(params)
        bad[index] = params[index][:-1]
        with pytest.raises(ValueError, match=f"{name} must have shape"):
            call(params=bad)
    bad = list(params)
    bad[2] = params[2].to(torch.int32)
    with pytest.raises(ValueError, match="floating-point"):
        call(params=bad)
    with pytest.raises(ValueError, match="eps"):
        call(eps=-1.0)
    with pytest.raises(ValueError, match="CUDA"):
        call()  # everything valid but the device


def test_ffn_abi_checks_arguments_without_gpu():
    """The C entry point validates arguments before any CUDA call (so this runs without a GPU)."""
    import ctypes

    path = kernels.library_path()
    if not path.is_file():
        pytest.skip(f"{path} not built (make -C plugins)")
    lib = ctypes.CDLL(str(path))
    fn = lib.mstpp_ffn_nchw
    fn.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int64, ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                                           ctypes.c_float, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    lib.mstpp_error_string.argtypes = [ctypes.c_int]
    lib.mstpp_error_string.restype = ctypes.c_char_p
    nulls = [None] * 7
    fake = [16, 1 << 20, 32, 48, 64, 80, 96]  # non-NULL, never dereferenced: the checks come first
    assert fn(*nulls, -1, 31, 8, 8, 1e-5, 0, None) == -2
    assert fn(*nulls, 1, 31, 8, 8, 1e-5, 7, None) == -3
    for channels in (1, 30, 32, 64, 1024):
        assert fn(*nulls, 1, channels, 8, 8, 1e-5, 0, None) == -4
    assert fn(*nulls, 1, 31, 8, 8, float("nan"), 0, None) == -5
    assert fn(*nulls, 0, 31, 8, 8, 1e-5, 0, None) == 0
    assert fn(*nulls, 1, 62, 0, 8, 1e-5, 1, None) == 0
    assert fn(*nulls, 1, 124, 8, 8, 1e-5, 2, None) == -1
    overlapping = list(fake)
    overlapping[1] = fake[0] + 4  # y starts inside x
    assert fn(*overlapping, 1, 31, 8, 8, 1e-5, 0, None) == -6
    assert b"overlap" in lib.mstpp_error_string(-6)
    assert b"31, 62 or 124" in lib.mstpp_error_string(-4)
    assert fn(*fake, 1, 31, 1 << 31, 8, 1e-5, 0, None) == -2

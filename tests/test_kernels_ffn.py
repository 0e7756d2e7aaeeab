"""The fused feed-forward block kernel (mstpp_ffn_nchw) against PyTorch's ``PreNorm(C, FeedForward(C))(x) + x``.

GPU tests (marker ``gpu``) compare with the architecture's own modules in float64 and float32 (TF32 off), for
the three MST++ widths and awkward shapes: a single pixel, sizes that leave partial tiles at the right and bottom
borders, a batch, and the model's level-2 size. Every call writes into an output poisoned with NaN inside NaN guard
bands, so a missed pixel or an out-of-bounds write shows up; x is checked unmodified afterwards.

Tolerances, FP32 storage (exact FP32 kernel): float32 arithmetic throughout, max abs error <= 2e-5 against float64
(outputs are O(1)) and <= 1e-4 against PyTorch float32.

Tolerances, FP16/BF16 storage (tensor-core kernel). Both 1x1 convolutions take 16-bit operands of the storage type
with FP32 accumulation: LN(x) and W1 are rounded before GEMM1, GELU(DW(.)) and W2 before GEMM2; LN statistics and
the accumulators are FP32; both GELUs are the kernels' tanh form (hidden16.py). BF16 storage keeps the hidden state
and the depthwise sums in FP32; FP16 storage rounds GELU1 to FP16 and runs the depthwise sums and GELU2 in FP16,
which _reference_tc repeats rounding by rounding (hidden16.py), leaving the hardware tanh as the difference. Let u be
the unit roundoff of the storage type, u = 2^-11 for FP16 and 2^-8 for BF16 (round to nearest: relative error <= u
per rounding). The analysis below was written for FP32 hidden arithmetic and still holds for BF16; for FP16 the
constants TC_ATOL_U / EXACT_ATOL_U come from the H100 measurement quoted next to them (2x margin).

* Against ``_reference_tc``, float64 with exactly those four roundings (same rounded x), the kernel differs only by
  (a) the rounding of y to the storage type, <= u |y|; (b) FP32 noise: tensor-core/FMA accumulation and the kernel's
  GELU approximation (<= 8.2e-7 absolute), ~1e-6, negligible; (c) "rounding flips": where (b) moves a hidden value
  or LN(x) across a rounding midpoint, the kernel's operand differs from the reference's by one ulp (<= 2u relative).
  A flipped h2_j changes y_c by |W2[c, j]| * 2u |h2_j|; with the test's weights (|W2| ~ sqrt(2/4C), |h2| = O(1)) and
  a flip probability ~ (b) / ulp ~ 1e-3 per value, the largest effect over the test outputs is a fraction of u (a
  CPU emulation of the kernel's fragment layouts and FP32/FP16 arithmetic measured <= 0.37 u over 60k outputs of all
  three widths). Tolerance: atol = 2u, rtol = u, i.e. FP16 atol 9.8e-4 / rtol 4.9e-4, BF16 atol 7.8e-3 /
  rtol 3.9e-3. An indexing or synchronisation bug changes outputs by >= 1e-2 (usually O(1)); at FP16 the allowed
  error stays below 1e-2 up to |y| = 18, beyond every test output (|y| < 10). BF16 cannot resolve 1e-2 at |y| > 2.5
  (its own half-ulp there); the BF16 instantiation runs the same index code as FP16 (only the mma and the 16-bit
  packing differ), so the FP16 cases are the sharp ones for layout bugs.
* Against the plain float64 reference, the operand roundings add up: each GEMM output carries sum_k t_k (d1 + d2)
  over its C or 4C terms t_k, with independent |d| <= u, i.e. a standard deviation of ~ u sqrt(2/3) ||t||_2 = O(u)
  for O(1) sums; the GEMM1 error reaches y through GELU (slope <= 1.13), the depthwise convolution (sum wd^2 ~ 1 here)
  and GEMM2. Measured in float64 on the CPU for this module's blocks and input distribution (4.6M outputs, all
  shapes and widths): rms 0.53 u, max 3.8 u for FP16 and 3.4 u for BF16. Tolerance: atol = 8u (2x margin over the max
  plus flips), rtol = u for the rounding of y: FP16 atol 3.9e-3, BF16 atol 3.1e-2. ``test_ffn_tc_rounding_model``
  re-checks that margin on the CPU.

CPU tests check that the binding rejects bad arguments with ValueError before it loads the library, and the
tensor-core reference model above.
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import pytest
import torch
import torch.nn.functional as F

from architecture.mst_plus_plus import FeedForward, PreNorm
from mstpp import kernels

import hidden16
from kernel_helpers import Poisoned

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CHANNELS = [31, 62, 124]
# Single pixel; odd sizes with partial tiles at both borders (tiles are 14x14, 6x14, 8x8); batch; MST++ level 2.
SHAPES = [(1, 1, 1), (2, 7, 13), (1, 64, 61), (1, 128, 122), (3, 15, 29)]
#: Unit roundoff of the 16-bit storage types (the tensor-core operands have the storage type).
UNIT_ROUNDOFF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
#: Against _reference_tc (float64 with the kernel's roundings): y rounding + rounding flips (docstring). FP16 also
#: carries the hardware tanh's flips in the FP16 hidden arithmetic: measured on the H100 <= 3.4 u beyond rtol over
#: every GPU test shape and 1x512x488, so 6 u.
TC_ATOL_U = {torch.float16: 6, torch.bfloat16: 2}
TC_TOL = {dtype: dict(atol=TC_ATOL_U[dtype] * u, rtol=u) for dtype, u in UNIT_ROUNDOFF.items()}
#: Against the plain float64 reference: operand roundings of both GEMMs, for FP16 also the FP16 hidden arithmetic
#: (CPU model max 5.6 u FP16, 3.0 u BF16; H100 kernel <= 6.6 u FP16 over the test shapes, 8.8 u at 1x512x488).
EXACT_ATOL_U = {torch.float16: 12, torch.bfloat16: 8}
EXACT_TOL = {dtype: dict(atol=EXACT_ATOL_U[dtype] * u, rtol=u) for dtype, u in UNIT_ROUNDOFF.items()}


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


@torch.no_grad()
def _reference_tc(block: PreNorm, x: torch.Tensor, operand_dtype: Optional[torch.dtype]) -> torch.Tensor:
    """float64 model of the tensor-core kernel: LN(x), W1, GELU(DW(.)) and W2 rounded to ``operand_dtype``, both
    GELUs in the kernels' tanh form; for FP16 also the FP16 hidden arithmetic (GELU1 rounded to FP16, the depthwise
    sums in FP16 tap by tap, GELU2 in half2 steps: tests/hidden16.py). None: no rounding and the exact GELU, i.e.
    the plain float64 block. Returns y = x + FFN(x)."""
    if operand_dtype is None:
        rnd = torch.Tensor.double
    else:
        def rnd(t):
            return t.to(operand_dtype).double()
    gamma, beta, w1, wdw, w2 = (p.to(device=x.device, dtype=torch.float64) for p in _params(block))
    channels = x.shape[1]
    hidden = 4 * channels
    xd = x.double()
    xn = F.layer_norm(xd.permute(0, 2, 3, 1), (channels,), gamma, beta, eps=1e-5).permute(0, 3, 1, 2)
    pre = F.conv2d(rnd(xn), rnd(w1).reshape(hidden, channels, 1, 1))
    if operand_dtype is None:
        h2 = F.gelu(F.conv2d(F.gelu(pre), wdw.reshape(hidden, 1, 3, 3), padding=1, groups=hidden))
    elif operand_dtype == torch.float16:
        h2 = hidden16.gelu_half2(hidden16.dw3x3_half(hidden16.rnd16(hidden16.gelu_tanh(pre)), wdw))
    else:
        h = hidden16.gelu_tanh(pre)
        h2 = rnd(hidden16.gelu_tanh(F.conv2d(h, wdw.reshape(hidden, 1, 3, 3), padding=1, groups=hidden)))
    return xd + F.conv2d(h2, rnd(w2).reshape(channels, hidden, 1, 1))


def _assert_tc_close(y: torch.Tensor, block: PreNorm, x: torch.Tensor) -> None:
    """FP16/BF16 output of the tensor-core kernel against both references (tolerances: module docstring)."""
    ref_tc = _reference_tc(block, x, x.dtype)
    torch.testing.assert_close(y.double(), ref_tc, **TC_TOL[x.dtype])
    torch.testing.assert_close(y.double(), _reference(block, x, torch.float64), **EXACT_TOL[x.dtype])


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
        _assert_tc_close(y, block, x)  # references from the same rounded x


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.usefixtures("built_library")
@pytest.mark.gpu
@requires_cuda
def test_ffn_tc_large_activations(dtype):
    """W1 scaled by 8: hidden pre-activations reach |v| ~ 40, through both branches of the kernel's GELU (the
    power overflows to inf for v < -19), with hidden and output values well above 1 (tolerances scaled by max |y|)."""
    block = _block(31, seed=13)
    with torch.no_grad():
        block.fn.net[0].weight.mul_(8.0)
    x = _input((1, 31, 29, 37), dtype, seed=13)
    y = _run(block, x)
    u = UNIT_ROUNDOFF[dtype]
    ref_tc = _reference_tc(block, x, dtype)
    scale = ref_tc.abs().max().item()
    assert scale > 10.0, "activations are not large"
    torch.testing.assert_close(y.double(), ref_tc, atol=2 * u * scale, rtol=u)


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
    _assert_tc_close(_run(block, xh), block, xh)


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

def test_ffn_tc_reference_without_rounding_is_the_module():
    """_reference_tc with no operand rounding is the architecture's block in float64."""
    for channels in CHANNELS:
        block = _block(channels, seed=channels)
        x = 1.5 * torch.randn(1, channels, 7, 13, generator=torch.Generator().manual_seed(channels)) + 0.3
        ref = _reference(block, x, torch.float64)
        assert (_reference_tc(block, x, None) - ref).abs().max().item() < 1e-12


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_ffn_tc_rounding_model(dtype):
    """The operand roundings alone (float64 otherwise) stay inside EXACT_TOL's atol with room for the rounding of y
    and the rounding flips that TC_TOL allows (2u): max <= 6u (measured: <= 3.8u over all GPU test shapes)."""
    u = UNIT_ROUNDOFF[dtype]
    worst = 0.0
    for channels, (batch, height, width) in zip(CHANNELS, [(1, 64, 61), (3, 15, 29), (1, 32, 30)]):
        block = _block(channels, seed=7 * channels)
        gen = torch.Generator().manual_seed(batch + height + width)
        x = (1.5 * torch.randn(batch, channels, height, width, generator=gen) + 0.3).to(dtype)
        err = (_reference_tc(block, x, dtype) - _reference(block, x, torch.float64)).abs().max().item()
        worst = max(worst, err / u)
    assert worst <= EXACT_TOL[dtype]["atol"] / u - 2, f"operand rounding error {worst:.2f} u"
    assert worst >= 0.5, "the rounded model does not round"


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

"""The MST++ glue kernels: mstpp_conv_nchw (3x3 s1 and 4x4 s2 convolutions, optional residual) and
mstpp_upfuse_nchw (ConvTranspose2d k2 s2 + concat + 1x1 conv, folded), against float64 PyTorch references.

Error bounds (K = Cin * k * k terms per output, |w| * |x| = the same convolution of |w| and |x| in float64):

* FP32 storage (FMA kernel): every product and sum in float32 with FMA; recursive summation of K terms gives
  |y - ref| <= (K + 1) 2^-24 (|w| * |x|) + 2^-24 |y| (residual add). Checked with that bound (a rigorous one, far
  above the typical error) and, as the project's target, max abs <= 1e-4 against PyTorch float32 with TF32 off.
* FP16 / BF16 storage, Cin = 31 / 62 (tensor-core kernel): x is used as stored, each weight is rounded to the storage
  type (relative error <= u, u = 2^-11 FP16, 2^-8 BF16), products exact, float32 accumulation, one rounding of the
  result (after the residual add): |y - ref| <= u (|w| * |x|) + (K + 1) 2^-24 (|w| * |x|) + u |ref|, where ref is the
  float64 convolution of the stored x with the float32 weights (+ residual). Cin = 3 (FMA kernel for every dtype):
  the same without the weight term.
* upfuse: float32 FMA on the folded weights (fold in float64, rounded to float32: relative 2^-24 per weight), then
  one rounding of y: |y - ref| <= (K + 3) 2^-24 (|A| * |low| + |Bm| * |skip| + |c|) + u |ref|, K = Clow + Cs.
  Reference: the unfused float64 ConvTranspose2d -> cat -> Conv2d of the stored inputs.
An indexing error changes outputs by O(1) against bounds of ~1e-3 of the output scale (FP16). Every output goes into
a NaN-poisoned buffer with guard bands (an unwritten or stray element shows up), and inputs are checked unmodified.

CPU tests: argument validation of the bindings (ValueError before any GPU use), the fold against the unfused
PyTorch modules, the C ABI's refusals through ctypes (when the library is built), and a numpy emulation of the
tensor-core kernel's fragment / ldmatrix / halo-slot index math (mirrors conv_tc_kernel; PTX fragment tables written
out independently of plugins/kernels/mma16.cuh), exact on small integers.
"""
from __future__ import annotations

import copy
import ctypes
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mstpp import kernels

from kernel_helpers import Poisoned

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
UNIT_ROUNDOFF = {torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
EPS32 = 2.0 ** -24
# (name, Cin, Cout, k, stride, H, W at the MST++ 512x488 input, residual in the model)
MSTPP_CONVS = [
    ("conv_in", 3, 31, 3, 1, 512, 488, False),
    ("embedding", 31, 31, 3, 1, 512, 488, False),
    ("mapping_residual", 31, 31, 3, 1, 512, 488, True),
    ("down1", 31, 62, 4, 2, 512, 488, False),
    ("down2", 62, 124, 4, 2, 256, 244, False),
]
ODD_SHAPES = [(1, 37, 29), (3, 9, 17), (2, 2, 3), (1, 1, 1)]


# ------------------------------------------------------------------------------------------------ helpers

def _weights(cout: int, cin: int, ksize: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(cout, cin, ksize, ksize, generator=gen) / math.sqrt(cin * ksize * ksize)


def _input(shape, dtype, seed: int, device: str = "cuda") -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (1.5 * torch.randn(shape, generator=gen) + 0.3).to(device=device, dtype=dtype)


def _conv_reference(x, w, stride, residual=None):
    """float64 reference and the |w| * |x| magnitude the bounds scale with."""
    xd, wd = x.double(), w.to(device=x.device, dtype=torch.float64)
    ref = F.conv2d(xd, wd, stride=stride, padding=1)
    mag = F.conv2d(xd.abs(), wd.abs(), stride=stride, padding=1)
    if residual is not None:
        ref = ref + residual.double()
    return ref, mag


def _conv_bound(x, w, ref, mag, tensor_cores: bool):
    u = UNIT_ROUNDOFF[x.dtype]
    terms = w.shape[1] * w.shape[2] * w.shape[3]
    bound = (terms + 1) * EPS32 * mag + u * ref.abs()
    if tensor_cores:
        bound = bound + u * mag
    return bound + 1e-30


def _run_conv(x, w, stride, residual=None):
    before = x.clone()
    y = kernels.conv_nchw(x, w, stride, 1, residual=residual)
    torch.cuda.synchronize()
    assert torch.equal(x, before), "the kernel modified its input"
    # The same result written into a NaN-poisoned buffer with guard bands (through the C ABI), bit for bit.
    poisoned = Poisoned(y)
    lib = kernels._load()
    wf = w.to(device=x.device, dtype=torch.float32).contiguous()
    code = lib.mstpp_conv_nchw(x.data_ptr(), poisoned.out.data_ptr(), wf.data_ptr(),
                               residual.data_ptr() if residual is not None else None, x.shape[0], x.shape[1],
                               x.shape[2], x.shape[3], w.shape[0], w.shape[2], stride, 1,
                               kernels._dtype_code(x, "x"), kernels._stream(x))
    assert code == 0, lib.mstpp_error_string(code)
    assert torch.equal(poisoned.check(), y)
    return y


def _check_conv(x, w, stride, residual=None):
    y = _run_conv(x, w, stride, residual)
    ref, mag = _conv_reference(x, w, stride, residual)
    assert y.shape == ref.shape and y.dtype == x.dtype
    tensor_cores = x.dtype != torch.float32 and x.shape[1] != 3
    bound = _conv_bound(x, w, ref, mag, tensor_cores)
    err = (y.double() - ref).abs()
    worst = (err / bound).max().item()
    assert worst <= 1.0, f"error {err.max().item():.3g} exceeds the bound (ratio {worst:.3f})"
    return y, ref


def _upfuse_modules(clow: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    cs = clow // 2
    up = torch.nn.ConvTranspose2d(clow, cs, 2, 2, bias=True)
    fuse = torch.nn.Conv2d(clow, cs, 1, bias=False)
    with torch.no_grad():
        up.weight.copy_(torch.randn(clow, cs, 2, 2, generator=gen) / math.sqrt(clow))
        up.bias.copy_(0.3 * torch.randn(cs, generator=gen))
        fuse.weight.copy_(torch.randn(cs, clow, 1, 1, generator=gen) / math.sqrt(clow))
    return up, fuse


@torch.no_grad()
def _upfuse_reference(up, fuse, low, skip):
    upd = copy.deepcopy(up).to(device=low.device, dtype=torch.float64)
    fused = copy.deepcopy(fuse).to(device=low.device, dtype=torch.float64)
    return fused(torch.cat([upd(low.double()), skip.double()], dim=1))


def _upfuse_params(up, fuse):
    return up.weight.detach(), up.bias.detach(), fuse.weight.detach()


# ------------------------------------------------------------------------------------------------ GPU

@pytest.mark.parametrize("case", MSTPP_CONVS, ids=lambda c: c[0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.usefixtures("built_library", "no_tf32")
@pytest.mark.gpu
@requires_cuda
def test_conv_mstpp_shapes(case, dtype):
    name, cin, cout, ksize, stride, height, width, with_residual = case
    w = _weights(cout, cin, ksize, seed=cin + cout + ksize)
    x = _input((1, cin, height, width), dtype, seed=height + cin)
    out_h, out_w = (height + 2 - ksize) // stride + 1, (width + 2 - ksize) // stride + 1
    residual = _input((1, cout, out_h, out_w), dtype, seed=7) if with_residual else None
    y, ref = _check_conv(x, w, stride, residual)
    assert ref.abs().max().item() > 0.5, "test activations are not O(1)"
    if dtype == torch.float32:
        ref32 = F.conv2d(x, w.cuda(), stride=stride, padding=1)
        if residual is not None:
            ref32 = ref32 + residual
        err32 = (y - ref32).abs().max().item()
        assert err32 <= 1e-4, f"max abs error vs torch float32 {err32:.3g}"


@pytest.mark.parametrize("geometry", [(3, 1), (4, 2)], ids=["k3s1", "k4s2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.usefixtures("built_library")
@pytest.mark.gpu
@requires_cuda
def test_conv_odd_shapes_all_widths(geometry, dtype):
    """Every supported (Cin, Cout) pair, partial tiles at both borders, batch 3, residual on and off."""
    ksize, stride = geometry
    for cin in kernels.CONV_IN_CHANNELS:
        for cout in kernels.CONV_OUT_CHANNELS:
            w = _weights(cout, cin, ksize, seed=cin * cout)
            for i, (batch, height, width) in enumerate(ODD_SHAPES):
                if height + 2 < ksize or width + 2 < ksize:
                    continue
                x = _input((batch, cin, height, width), dtype, seed=i + cin)
                out_h = (height + 2 - ksize) // stride + 1
                out_w = (width + 2 - ksize) // stride + 1
                residual = _input((batch, cout, out_h, out_w), dtype, seed=i) if i % 2 == 0 else None
                _check_conv(x, w, stride, residual)


@pytest.mark.usefixtures("built_library")
@pytest.mark.gpu
@requires_cuda
def test_conv_residual_in_place_and_misaligned():
    w = _weights(31, 31, 3, seed=5)
    x = _input((2, 31, 20, 45), torch.float16, seed=5)
    res = _input((2, 31, 20, 45), torch.float16, seed=6)
    expected = kernels.conv_nchw(x, w, 1, 1, residual=res)
    # residual == y: accumulate into the residual buffer through the C ABI.
    acc = res.clone()
    lib = kernels._load()
    wf = w.cuda().float().contiguous()
    code = lib.mstpp_conv_nchw(x.data_ptr(), acc.data_ptr(), wf.data_ptr(), acc.data_ptr(), 2, 31, 20, 45, 31, 3, 1,
                               1, 1, kernels._stream(x))
    assert code == 0
    torch.cuda.synchronize()
    assert torch.equal(acc, expected)
    # Odd element offsets: no alignment requirement.
    storage = torch.empty(x.numel() + 1, dtype=x.dtype, device="cuda")
    xm = storage[1:].view(x.shape)
    xm.copy_(x)
    assert torch.equal(kernels.conv_nchw(xm, w, 1, 1, residual=res), expected)


@pytest.mark.usefixtures("built_library")
@pytest.mark.gpu
@requires_cuda
def test_conv_deterministic_empty_and_gpu_errors():
    w = _weights(124, 62, 4, seed=9)
    x = _input((1, 62, 33, 21), torch.bfloat16, seed=9)
    first = kernels.conv_nchw(x, w, 2, 1)
    assert torch.equal(kernels.conv_nchw(x, w, 2, 1), first)
    assert kernels.conv_nchw(torch.empty(0, 62, 8, 8, device="cuda"), w, 2, 1).shape == (0, 124, 4, 4)
    with pytest.raises(ValueError, match="contiguous"):
        kernels.conv_nchw(x.transpose(2, 3), w, 2, 1)
    with pytest.raises(ValueError, match="residual"):
        kernels.conv_nchw(x, w, 2, 1, residual=torch.zeros(1, 124, 16, 10, device="cuda", dtype=torch.float16))


@pytest.mark.parametrize("clow", kernels.UPFUSE_CHANNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.usefixtures("built_library", "no_tf32")
@pytest.mark.gpu
@requires_cuda
def test_upfuse_matches_unfused_modules(clow, dtype):
    up, fuse = _upfuse_modules(clow, seed=clow)
    folded = kernels.fold_upfuse(*_upfuse_params(up, fuse))
    u = UNIT_ROUNDOFF[dtype]
    cs = clow // 2
    full = (128, 122) if clow == 124 else (256, 244)  # MST++ level sizes of the low-resolution input
    for i, (batch, height, width) in enumerate([(1, *full), (3, 5, 7), (1, 1, 1), (2, 19, 14)]):
        low = _input((batch, clow, height, width), dtype, seed=i)
        skip = _input((batch, cs, 2 * height, 2 * width), dtype, seed=100 + i)
        before = (low.clone(), skip.clone())
        y = kernels.upfuse_nchw(low, skip, folded=folded)
        poisoned = Poisoned(y)
        lib = kernels._load()
        wa, wb, bias = (t.cuda() for t in (folded.wa, folded.wb, folded.bias))
        code = lib.mstpp_upfuse_nchw(low.data_ptr(), skip.data_ptr(), poisoned.out.data_ptr(), wa.data_ptr(),
                                     wb.data_ptr(), bias.data_ptr(), batch, clow, height, width,
                                     kernels._dtype_code(low, "low"), kernels._stream(low))
        assert code == 0
        assert torch.equal(poisoned.check(), y)
        assert torch.equal(low, before[0]) and torch.equal(skip, before[1])
        ref = _upfuse_reference(up, fuse, low, skip)
        # Magnitude: the folded map with |weights| applied to |inputs| (max over the parities: an upper bound).
        wa64, wb64, c64 = (t.double().cuda().abs() for t in (folded.wa, folded.wb, folded.bias))
        lowd, skipd = low.double().abs(), skip.double().abs()
        mag = torch.einsum("ol,blhw->bohw", wa64.max(0).values, lowd)
        mag = mag.repeat_interleave(2, 2).repeat_interleave(2, 3)
        mag = mag + torch.einsum("os,bshw->bohw", wb64, skipd) + c64[None, :, None, None]
        bound = (clow + cs + 3) * EPS32 * mag + u * ref.abs() + 1e-30
        worst = ((y.double() - ref).abs() / bound).max().item()
        assert worst <= 1.0, f"upfuse error ratio {worst:.3f} (dtype {dtype}, shape {tuple(low.shape)})"
    # The convenience form (raw weights, folded per call) gives the same bits.
    low = _input((1, clow, 6, 9), dtype, seed=5)
    skip = _input((1, cs, 12, 18), dtype, seed=6)
    assert torch.equal(kernels.upfuse_nchw(low, skip, *_upfuse_params(up, fuse)),
                       kernels.upfuse_nchw(low, skip, folded=folded))


# ------------------------------------------------------------------------------------------------ CPU

def test_conv_binding_rejects_bad_arguments():
    x = torch.zeros(1, 31, 8, 8)
    w = torch.zeros(31, 31, 3, 3)
    with pytest.raises(ValueError, match="torch.Tensor"):
        kernels.conv_nchw(np.zeros((1, 31, 8, 8)), w, 1, 1)
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        kernels.conv_nchw(x.double(), w, 1, 1)
    with pytest.raises(ValueError, match=r"\[B, Cin, H, W\]"):
        kernels.conv_nchw(x[0], w, 1, 1)
    with pytest.raises(ValueError, match="unsupported convolution"):
        kernels.conv_nchw(x, w, 2, 1)
    with pytest.raises(ValueError, match="unsupported convolution"):
        kernels.conv_nchw(x, torch.zeros(31, 31, 5, 5), 1, 2)
    with pytest.raises(ValueError, match="3, 31 or 62 channels"):
        kernels.conv_nchw(torch.zeros(1, 32, 8, 8), torch.zeros(31, 32, 3, 3), 1, 1)
    with pytest.raises(ValueError, match="31, 62 or 124 output channels"):
        kernels.conv_nchw(x, torch.zeros(30, 31, 3, 3), 1, 1)
    with pytest.raises(ValueError, match="w must have shape"):
        kernels.conv_nchw(x, torch.zeros(31, 62, 3, 3), 1, 1)
    with pytest.raises(ValueError, match="too small"):
        kernels.conv_nchw(torch.zeros(1, 31, 1, 8), torch.zeros(62, 31, 4, 4), 2, 1)
    with pytest.raises(ValueError, match="residual must have shape"):
        kernels.conv_nchw(x, w, 1, 1, residual=torch.zeros(1, 31, 8, 7))
    with pytest.raises(ValueError, match="residual must have the dtype"):
        kernels.conv_nchw(x, w, 1, 1, residual=torch.zeros(1, 31, 8, 8, dtype=torch.float16))
    with pytest.raises(ValueError, match="CUDA tensor"):
        kernels.conv_nchw(x, w, 1, 1)


def test_upfuse_binding_rejects_bad_arguments():
    up, fuse = _upfuse_modules(62, seed=1)
    params = _upfuse_params(up, fuse)
    low = torch.zeros(1, 62, 4, 5)
    skip = torch.zeros(1, 31, 8, 10)
    with pytest.raises(ValueError, match="Clow in"):
        kernels.upfuse_nchw(torch.zeros(1, 31, 4, 5), skip, *params)
    with pytest.raises(ValueError, match="skip must have shape"):
        kernels.upfuse_nchw(low, torch.zeros(1, 31, 8, 9), *params)
    with pytest.raises(ValueError, match="skip must have the dtype"):
        kernels.upfuse_nchw(low, skip.half(), *params)
    with pytest.raises(ValueError, match="pass w_up"):
        kernels.upfuse_nchw(low, skip)
    with pytest.raises(ValueError, match="w_up must be"):
        kernels.fold_upfuse(torch.zeros(62, 30, 2, 2), params[1], params[2])
    with pytest.raises(ValueError, match="w_fuse must have shape"):
        kernels.fold_upfuse(params[0], params[1], torch.zeros(31, 31, 1, 1))
    big = kernels.fold_upfuse(*_upfuse_params(*_upfuse_modules(124, seed=2)))
    with pytest.raises(ValueError, match="Clow=124"):
        kernels.upfuse_nchw(low, skip, folded=big)
    with pytest.raises(ValueError, match="CUDA tensor"):
        kernels.upfuse_nchw(low, skip, *params)


@pytest.mark.parametrize("clow", kernels.UPFUSE_CHANNELS)
def test_fold_equals_unfused_modules(clow):
    """The folded map (the kernel's arithmetic, in float64 here) is ConvTranspose2d -> cat -> 1x1 conv."""
    up, fuse = _upfuse_modules(clow, seed=3 * clow)
    folded = kernels.fold_upfuse(*_upfuse_params(up, fuse))
    assert folded.wa.shape == (4, clow // 2, clow) and folded.wa.dtype == torch.float32
    low = _input((2, clow, 5, 3), torch.float64, seed=1, device="cpu")
    skip = _input((2, clow // 2, 10, 6), torch.float64, seed=2, device="cpu")
    ref = _upfuse_reference(up, fuse, low, skip)
    wa, wb, bias = (t.double() for t in (folded.wa, folded.wb, folded.bias))
    y = torch.einsum("os,bshw->bohw", wb, skip) + bias[None, :, None, None]
    for ki in range(2):
        for kj in range(2):
            y[:, :, ki::2, kj::2] += torch.einsum("ol,blhw->bohw", wa[2 * ki + kj], low)
    assert (y - ref).abs().max().item() < 1e-5 * ref.abs().max().item()


def _library_or_skip() -> ctypes.CDLL:
    if not kernels.library_path().is_file():
        pytest.skip("kernel library not built (make -C plugins)")
    lib = kernels._load()
    if not hasattr(lib, "mstpp_conv_nchw"):
        pytest.skip("the built library predates the conv kernels (rebuild with make -C plugins)")
    return lib


def test_c_abi_refuses_unsupported_conv_and_upfuse():
    """Argument checks of the C ABI return before any CUDA call, so they run without a GPU."""
    lib = _library_or_skip()
    dummy = ctypes.c_void_p(0x1000)

    def conv(cin, cout, ksize=3, stride=1, pad=1, batch=1, height=8, width=8, dtype=0, x=dummy, y=dummy, w=dummy):
        return lib.mstpp_conv_nchw(x, y, w, None, batch, cin, height, width, cout, ksize, stride, pad, dtype, None)

    assert conv(32, 31) == -4
    assert conv(31, 30) == -4
    assert conv(124, 31) == -4
    assert conv(31, 31, ksize=4, stride=1) == -7
    assert conv(31, 31, ksize=3, stride=1, pad=0) == -7
    assert conv(31, 31, dtype=5) == -3
    assert conv(31, 31, batch=-1) == -2
    assert conv(31, 62, ksize=4, stride=2, height=1) == -2
    assert conv(31, 31, batch=0, x=None, y=None, w=None) == 0
    assert conv(31, 31, x=None) == -1
    assert conv(31, 31, y=ctypes.c_void_p(0x1000 + 64)) == -6  # y overlaps x
    assert b"(3, 1, 1) or (4, 2, 1)" in lib.mstpp_error_string(-7)

    def upfuse(clow, batch=1, dtype=0, low=dummy, skip=dummy, y=ctypes.c_void_p(0x100000)):
        return lib.mstpp_upfuse_nchw(low, skip, y, dummy, dummy, dummy, batch, clow, 4, 4, dtype, None)

    assert upfuse(31) == -4
    assert upfuse(63) == -4
    assert upfuse(62, dtype=3) == -3
    assert upfuse(62, batch=-2) == -2
    assert upfuse(62, batch=0) == 0
    assert upfuse(62, low=None) == -1
    assert upfuse(62, y=dummy) == -6


# ---------------------------------------------------------------- numpy emulation of conv_tc_kernel's index math

def _ptx_a(lane, i):  # PTX ISA m16n8k16 A fragment, element i (0..7) of lane: (row, col)
    g, t = lane // 4, lane % 4
    return g + 8 * ((i // 2) % 2), 2 * t + (i % 2) + 8 * (i // 4)


def _ptx_b(lane, i):  # B fragment element i (0..3): (k, n)
    g, t = lane // 4, lane % 4
    return 2 * t + (i % 2) + 8 * (i // 2), g


def _ptx_c(lane, i):  # C/D fragment element i (0..3): (row, col)
    g, t = lane // 4, lane % 4
    return g + 8 * (i // 2), 2 * t + (i % 2)


_A_IDX = np.array([[_ptx_a(l, i) for i in range(8)] for l in range(32)])
_B_IDX = np.array([[_ptx_b(l, i) for i in range(4)] for l in range(32)])
_C_IDX = np.array([[_ptx_c(l, i) for i in range(4)] for l in range(32)])


def _ldsm_x4(mem, addr):
    """ldmatrix.x4 (no trans): addr[l] = row l % 8 of matrix l / 8 (in 16-bit elements); returns [lane][matrix][2]."""
    lanes = np.arange(32)
    out = np.empty((32, 4, 2), dtype=mem.dtype)
    for i in range(4):
        rows = addr[8 * i + lanes // 4]
        out[:, i, 0] = mem[rows + 2 * (lanes % 4)]
        out[:, i, 1] = mem[rows + 2 * (lanes % 4) + 1]
    return out


def _mma(acc, a, b0, b1):
    """acc[32][4] += A . B with A from a[32][4 regs][2] and B from (b0, b1) [32][2], per the PTX tables."""
    A = np.zeros((16, 16), dtype=np.int64)
    A[_A_IDX[..., 0], _A_IDX[..., 1]] = a.reshape(32, 8)
    B = np.zeros((16, 8), dtype=np.int64)
    B[_B_IDX[..., 0], _B_IDX[..., 1]] = np.concatenate([b0, b1], axis=1)
    D = A @ B
    acc += D[_C_IDX[..., 0], _C_IDX[..., 1]]


def _emulate_conv_tc(x, w, ksize, stride, tile_h, tile_w):
    """conv_tc_kernel on integer data, line by line (smem as flat int arrays of 16-bit slots)."""
    batch, cin, height, width = x.shape
    cout = w.shape[0]
    kk_count = ksize * ksize
    ih, iw = stride * (tile_h - 1) + ksize, stride * (tile_w - 1) + ksize
    slot = (lambda hc: hc) if stride == 1 else (lambda hc: (hc % 2) * (iw // 2) + hc // 2)
    kx_offset = (lambda kx: kx) if stride == 1 else (lambda kx: (kx % 2) * (iw // 2) + kx // 2)
    xp, wp, no = 40, kk_count * 32 + 8, tile_h * tile_w
    nw = no // 8 // 8
    out_h, out_w = (height + 2 - ksize) // stride + 1, (width + 2 - ksize) // stride + 1
    y = np.full((batch, cout, out_h, out_w), -999, dtype=np.int64)
    groups = -(-cout // 32)
    lanes = np.arange(32)
    for image in range(batch):
        for oy0 in range(0, out_h, tile_h):
            for ox0 in range(0, out_w, tile_w):
                for cog in range(groups):
                    iy0, ix0 = stride * oy0 - 1, stride * ox0 - 1
                    acc = np.zeros((8, 2, nw, 32, 4), dtype=np.int64)
                    for c0 in range(0, cin, 32):
                        xs = np.full(ih * iw * xp, 10 ** 6, dtype=np.int64)  # unwritten slots poison sums
                        for cp in range(16):
                            for hr in range(ih):
                                for hc in range(iw):
                                    gy, gx, c = iy0 + hr, ix0 + hc, c0 + 2 * cp
                                    inside = 0 <= gy < height and 0 <= gx < width
                                    base = (hr * iw + slot(hc)) * xp + 2 * cp
                                    xs[base] = x[image, c, gy, gx] if inside and c < cin else 0
                                    xs[base + 1] = x[image, c + 1, gy, gx] if inside and c + 1 < cin else 0
                        wb = np.full(32 * wp, 10 ** 6, dtype=np.int64)
                        for co in range(32):
                            for kk in range(kk_count):
                                for cp in range(16):
                                    gco, c = cog * 32 + co, c0 + 2 * cp
                                    ok = gco < cout
                                    base = co * wp + kk * 32 + 2 * cp
                                    wb[base] = w[gco, c, kk // ksize, kk % ksize] if ok and c < cin else 0
                                    wb[base + 1] = w[gco, c + 1, kk // ksize, kk % ksize] if ok and c + 1 < cin else 0
                        a_base = (lanes % 8 + (lanes // 8) % 2 * 8) * wp + lanes // 16 * 8
                        for warp in range(8):
                            b_base = []
                            for i2 in range(nw // 2):
                                m = lanes // 8
                                q = (warp * nw + 2 * i2 + m // 2) * 8 + lanes % 8
                                qr, qc = q // tile_w, q % tile_w
                                b_base.append(((stride * qr) * iw + np.array([slot(v) for v in stride * qc])) * xp
                                              + (m % 2) * 8)
                            for kk in range(kk_count):
                                ky, kx = kk // ksize, kk % ksize
                                tap = (ky * iw + kx_offset(kx)) * xp
                                for h in range(2):
                                    a = [_ldsm_x4(wb, a_base + kk * 32 + h * 16),
                                         _ldsm_x4(wb, a_base + 16 * wp + kk * 32 + h * 16)]
                                    for i2 in range(nw // 2):
                                        b = _ldsm_x4(xs, b_base[i2] + tap + h * 16)
                                        for mt in range(2):
                                            _mma(acc[warp, mt, 2 * i2], a[mt], b[:, 0], b[:, 1])
                                            _mma(acc[warp, mt, 2 * i2 + 1], a[mt], b[:, 2], b[:, 3])
                    osp = no + 8
                    os_ = np.full(32 * osp, 10 ** 9, dtype=np.int64)
                    for warp in range(8):
                        for mt in range(2):
                            for i in range(nw):
                                co = mt * 16 + lanes // 4
                                q = (warp * nw + i) * 8 + 2 * (lanes % 4)
                                os_[co * osp + q] = acc[warp, mt, i, :, 0]
                                os_[co * osp + q + 1] = acc[warp, mt, i, :, 1]
                                os_[(co + 8) * osp + q] = acc[warp, mt, i, :, 2]
                                os_[(co + 8) * osp + q + 1] = acc[warp, mt, i, :, 3]
                    for e in range(32 * no):
                        co, q = e // no, e % no
                        gco, oy, ox = cog * 32 + co, oy0 + q // tile_w, ox0 + q % tile_w
                        if gco < cout and oy < out_h and ox < out_w:
                            y[image, gco, oy, ox] = os_[co * osp + q]
    return y


@pytest.mark.parametrize("case", [(3, 1, 8, 32, 31, 62, 11, 37), (4, 2, 8, 16, 62, 31, 19, 36)],
                         ids=["k3s1_tile8x32", "k4s2_tile8x16"])
def test_conv_tc_index_math_emulation(case):
    """The tensor-core kernel's halo slots, ldmatrix row addresses, fragment mapping and epilogue, emulated on small
    integers (exact), equal the direct convolution. Tiles as ConvTc3x3 / ConvTc4x4 in conv.cu."""
    ksize, stride, tile_h, tile_w, cin, cout, height, width = case
    rng = np.random.default_rng(ksize)
    x = rng.integers(-3, 4, size=(1, cin, height, width)).astype(np.int64)
    w = rng.integers(-3, 4, size=(cout, cin, ksize, ksize)).astype(np.int64)
    y = _emulate_conv_tc(x, w, ksize, stride, tile_h, tile_w)
    ref = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), stride=stride, padding=1)
    assert np.array_equal(y, ref.numpy().astype(np.int64))

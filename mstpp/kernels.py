"""ctypes bindings to the MST++ CUDA kernels in ``plugins/build/libmstpp_kernels.so``.

The functions take and return torch CUDA tensors and run on the current CUDA stream. Build the library with
``make -C plugins``; the environment variable ``MSTPP_KERNELS_LIB`` points at another build. The library is
loaded on the first call, so importing this module works without a GPU or a build.

The widths below are what MST++ needs of the kernels (from ``architecture.parts``); the library states what it
supports itself (``capabilities()``, the C ABI's ``mstpp_capability``), and loading fails at once, naming the
gap, when a build does not cover the model.

Precision: storage is float32, float16 or bfloat16; all statistics and arithmetic are float32.
"""
from __future__ import annotations

import ctypes
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from architecture import parts

from .resources import plugin_build_dir

if TYPE_CHECKING:
    import torch

__all__ = [
    "KernelLibraryError",
    "KernelCapabilities",
    "capabilities",
    "library_path",
    "load_library",
    "layer_norm_rows",
    "layer_norm_nchw",
    "l2_normalize",
    "gelu",
    "ffn_nchw",
    "msa_nchw",
    "conv_nchw",
    "UpfuseWeights",
    "fold_upfuse",
    "upfuse_nchw",
]

LIBRARY_NAME = "libmstpp_kernels.so"
DEFAULT_BUILD_DIR = plugin_build_dir()
ENV_VAR = "MSTPP_KERNELS_LIB"
# What MST++ asks of each kernel (the library must support at least these; see KernelCapabilities).
FFN_CHANNELS = parts.LEVEL_CHANNELS  # the feed-forward block at every level
MSA_CHANNELS = parts.LEVEL_CHANNELS  # the spectral attention at every level
MSA_HEAD_DIM = parts.HEAD_DIM
CONV_IN_CHANNELS = (parts.RGB_CHANNELS,) + parts.LEVEL_CHANNELS[:-1]  # conv_in, then every level down-sampled
CONV_OUT_CHANNELS = parts.LEVEL_CHANNELS
CONV_GEOMETRIES = parts.CONV_GEOMETRIES
UPFUSE_CHANNELS = parts.LEVEL_CHANNELS[1:]  # the lower level of each decoder step

_lib: Optional[ctypes.CDLL] = None
_caps: Optional["KernelCapabilities"] = None
_lib_lock = threading.Lock()


class KernelLibraryError(RuntimeError):
    """The kernel library is missing or cannot be loaded, or a kernel launch failed."""


@dataclass(frozen=True)
class KernelCapabilities:
    """What a build of the kernel library accepts, as it reports through ``mstpp_capability``."""

    abi_version: int
    layernorm_max_c: int
    ffn_channels: tuple[int, ...]
    msa_channels: tuple[int, ...]
    msa_head_dim: int
    conv_in_channels: tuple[int, ...]
    conv_out_channels: tuple[int, ...]
    conv_geometries: tuple[tuple[int, int, int], ...]
    upfuse_channels: tuple[int, ...]

    def gaps(self) -> list[str]:
        """What MST++ needs (the module constants) and this build lacks, in words; empty when it covers the model."""
        needs = (("FFN channels", FFN_CHANNELS, self.ffn_channels), ("MSA channels", MSA_CHANNELS, self.msa_channels),
                 ("MSA head width", (MSA_HEAD_DIM,), (self.msa_head_dim,)),
                 ("conv input channels", CONV_IN_CHANNELS, self.conv_in_channels),
                 ("conv output channels", CONV_OUT_CHANNELS, self.conv_out_channels),
                 ("conv geometries", CONV_GEOMETRIES, self.conv_geometries),
                 ("upfuse channels", UPFUSE_CHANNELS, self.upfuse_channels))
        return [f"{what} {sorted(set(need) - set(have))}" for what, need, have in needs if not set(need) <= set(have)]


# mstpp_capability ids (enum mstpp_capability_id in mstpp_kernels.h).
_CAP_IDS = {"abi_version": 0, "layernorm_max_c": 1, "ffn_channels": 2, "msa_channels": 3, "msa_head_dim": 4,
            "conv_in_channels": 5, "conv_out_channels": 6, "conv_geometries": 7, "upfuse_channels": 8}
_CAP_SCALARS = ("abi_version", "layernorm_max_c", "msa_head_dim")


def _read_capabilities(lib: ctypes.CDLL, path: Path) -> KernelCapabilities:
    if not hasattr(lib, "mstpp_capability"):
        raise KernelLibraryError(f"{path} predates mstpp_capability: rebuild it with `make -C plugins`")
    lib.mstpp_capability.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int64), ctypes.c_int]
    lib.mstpp_capability.restype = ctypes.c_int
    values = {}
    for name, what in _CAP_IDS.items():
        count = lib.mstpp_capability(what, None, 0)
        if count < 0:
            raise KernelLibraryError(f"{path} does not know capability {name}: rebuild it with `make -C plugins`")
        buf = (ctypes.c_int64 * count)()
        lib.mstpp_capability(what, buf, count)
        values[name] = tuple(int(v) for v in buf)
    for name in _CAP_SCALARS:
        values[name] = values[name][0]
    flat = values["conv_geometries"]
    values["conv_geometries"] = tuple(tuple(flat[i:i + 3]) for i in range(0, len(flat), 3))
    return KernelCapabilities(**values)


def capabilities() -> KernelCapabilities:
    """What the loaded kernel library supports (loads it first); raises KernelLibraryError."""
    _load()
    assert _caps is not None
    return _caps


def library_path() -> Path:
    """Where the kernel library is looked for: ``$MSTPP_KERNELS_LIB`` if set, else ``plugins/build/`` (``mstpp.resources``)."""
    override = os.environ.get(ENV_VAR)
    return Path(override) if override else DEFAULT_BUILD_DIR / LIBRARY_NAME


def load_library() -> None:
    """Load the kernel library now (otherwise the first kernel call does); raises KernelLibraryError."""
    _load()


def _load() -> ctypes.CDLL:
    global _lib, _caps
    with _lib_lock:
        if _lib is not None:
            return _lib
        path = library_path()
        if not path.is_file():
            raise KernelLibraryError(f"{path} not found: run `make -C plugins` (or set {ENV_VAR})")
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise KernelLibraryError(f"cannot load {path} ({exc}): run `make -C plugins`") from exc
        c_int, c_i64, c_float, c_void_p = ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
        lib.mstpp_error_string.argtypes = [c_int]
        lib.mstpp_error_string.restype = ctypes.c_char_p
        lib.mstpp_layernorm_rows.argtypes = [c_void_p, c_void_p, c_void_p, c_void_p, c_i64, c_int, c_float, c_int,
                                             c_void_p]
        lib.mstpp_layernorm_nchw.argtypes = [c_void_p, c_void_p, c_void_p, c_void_p, c_i64, c_int, c_i64, c_float,
                                             c_int, c_void_p]
        lib.mstpp_l2norm_workspace_size.argtypes = [c_i64, c_i64]
        lib.mstpp_l2norm_workspace_size.restype = ctypes.c_size_t
        lib.mstpp_l2norm_rows.argtypes = [c_void_p, c_void_p, c_i64, c_i64, c_float, c_int, c_void_p, c_void_p]
        lib.mstpp_gelu.argtypes = [c_void_p, c_void_p, c_i64, c_int, c_void_p]
        lib.mstpp_ffn_nchw.argtypes = [c_void_p] * 7 + [c_i64, c_int, c_i64, c_i64, c_float, c_int, c_void_p]
        lib.mstpp_msa_workspace_size.argtypes = [c_i64, c_int, c_i64, c_i64]
        lib.mstpp_msa_workspace_size.restype = ctypes.c_size_t
        lib.mstpp_msa_nchw.argtypes = [c_void_p] * 10 + [c_i64, c_int, c_i64, c_i64, c_int, c_void_p, c_void_p]
        lib.mstpp_conv_nchw.argtypes = [c_void_p] * 4 + [c_i64, c_int, c_i64, c_i64, c_int, c_int, c_int, c_int,
                                                         c_int, c_void_p]
        lib.mstpp_upfuse_nchw.argtypes = [c_void_p] * 6 + [c_i64, c_int, c_i64, c_i64, c_int, c_void_p]
        for name in ("mstpp_layernorm_rows", "mstpp_layernorm_nchw", "mstpp_l2norm_rows", "mstpp_gelu",
                     "mstpp_ffn_nchw", "mstpp_msa_nchw", "mstpp_conv_nchw", "mstpp_upfuse_nchw"):
            getattr(lib, name).restype = c_int
        caps = _read_capabilities(lib, path)
        gaps = caps.gaps()
        if gaps:
            raise KernelLibraryError(f"{path} does not cover MST++ ({'; '.join(gaps)}): rebuild it with "
                                     "`make -C plugins`")
        _lib, _caps = lib, caps
        return lib


def _dtype_code(x: "torch.Tensor", name: str) -> int:
    import torch

    codes = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
    if x.dtype not in codes:
        raise ValueError(f"{name} must be float32, float16 or bfloat16, got {x.dtype}")
    return codes[x.dtype]


def _check_input(x: "torch.Tensor", name: str, min_dim: int) -> int:
    if not x.is_cuda:
        raise ValueError(f"{name} must be a CUDA tensor, got device {x.device}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dims, got shape {tuple(x.shape)}")
    if not x.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    return _dtype_code(x, name)


def _check_affine(x: "torch.Tensor", gamma: "torch.Tensor", beta: "torch.Tensor", channels: int) -> None:
    import torch

    for name, t in (("gamma", gamma), ("beta", beta)):
        if t.dtype != torch.float32:
            raise ValueError(f"{name} must be float32 (affine parameters stay FP32), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} must be on {x.device}, got {t.device}")
        if t.numel() != channels or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous tensor of {channels} elements, got shape {tuple(t.shape)}")
    max_c = capabilities().layernorm_max_c
    if not 1 <= channels <= max_c:
        raise ValueError(f"channel count must be in [1, {max_c}], got {channels}")


def _output(x: "torch.Tensor", out: "Optional[torch.Tensor]") -> "torch.Tensor":
    import torch

    if out is None:
        return torch.empty_like(x, memory_format=torch.contiguous_format)
    if out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"out must match x ({tuple(x.shape)}, {x.dtype}, {x.device}), "
                         f"got ({tuple(out.shape)}, {out.dtype}, {out.device})")
    if not out.is_contiguous():
        raise ValueError("out must be contiguous")
    if out.data_ptr() < x.data_ptr() + x.numel() * x.element_size() and \
            x.data_ptr() < out.data_ptr() + out.numel() * out.element_size():
        raise ValueError("out must not overlap x (the kernels do not work in place)")
    return out


def _stream(x: "torch.Tensor") -> int:
    import torch

    return torch.cuda.current_stream(x.device).cuda_stream


def _raise_on_error(lib: ctypes.CDLL, code: int, what: str) -> None:
    if code != 0:
        raise KernelLibraryError(f"{what} failed: {lib.mstpp_error_string(code).decode()} (code {code})")


def layer_norm_rows(x: "torch.Tensor", gamma: "torch.Tensor", beta: "torch.Tensor", eps: float = 1e-5,
                    out: "Optional[torch.Tensor]" = None) -> "torch.Tensor":
    """LayerNorm over the last dim, as ``F.layer_norm(x, (C,), gamma, beta, eps)``.

    Args:
        x: [..., C] contiguous CUDA tensor, float32/float16/bfloat16.
        gamma, beta: [C] float32 on the same device.
        eps: added to the (biased) variance.
        out: optional preallocated result (same shape and dtype as x, contiguous, not overlapping x).

    Returns:
        [..., C], same dtype as x.
    """
    import torch

    dtype = _check_input(x, "x", 1)
    channels = x.shape[-1]
    _check_affine(x, gamma, beta, channels)
    y = _output(x, out)
    lib = _load()
    with torch.cuda.device(x.device):
        code = lib.mstpp_layernorm_rows(x.data_ptr(), y.data_ptr(), gamma.data_ptr(), beta.data_ptr(),
                                        x.numel() // max(channels, 1), channels, eps, dtype, _stream(x))
    _raise_on_error(lib, code, "mstpp_layernorm_rows")
    return y


def layer_norm_nchw(x: "torch.Tensor", gamma: "torch.Tensor", beta: "torch.Tensor", eps: float = 1e-5,
                    out: "Optional[torch.Tensor]" = None) -> "torch.Tensor":
    """LayerNorm over dim 1 of an NCHW tensor, without permutes.

    Equal to ``F.layer_norm(x.permute(0, 2, 3, 1), (C,), gamma, beta, eps).permute(0, 3, 1, 2)``.

    Args:
        x: [B, C, H, W] (or [B, C, L]) contiguous CUDA tensor, float32/float16/bfloat16.
        gamma, beta: [C] float32 on the same device.
        eps: added to the (biased) variance.
        out: optional preallocated result (same shape and dtype as x, contiguous, not overlapping x).

    Returns:
        Same shape and dtype as x.
    """
    import torch

    dtype = _check_input(x, "x", 3)
    batch, channels = x.shape[0], x.shape[1]
    _check_affine(x, gamma, beta, channels)
    hw = math.prod(x.shape[2:])
    y = _output(x, out)
    lib = _load()
    with torch.cuda.device(x.device):
        code = lib.mstpp_layernorm_nchw(x.data_ptr(), y.data_ptr(), gamma.data_ptr(), beta.data_ptr(), batch,
                                        channels, hw, eps, dtype, _stream(x))
    _raise_on_error(lib, code, "mstpp_layernorm_nchw")
    return y


def l2_normalize(x: "torch.Tensor", eps: float = 1e-12,
                 out: "Optional[torch.Tensor]" = None) -> "torch.Tensor":
    """L2 normalisation along the last dim, as ``F.normalize(x, dim=-1, eps=eps)``.

    Args:
        x: [..., L] contiguous CUDA tensor, float32/float16/bfloat16 (in MST++: [B, heads, 31, H*W]).
        eps: lower bound of the norm.
        out: optional preallocated result (same shape and dtype as x, contiguous, not overlapping x).

    Returns:
        Same shape and dtype as x. The sum of squares is accumulated in float32.
    """
    import torch

    dtype = _check_input(x, "x", 1)
    length = x.shape[-1]
    rows = x.numel() // length if length else 0
    y = _output(x, out)
    lib = _load()
    workspace = torch.empty(lib.mstpp_l2norm_workspace_size(rows, length), dtype=torch.uint8, device=x.device)
    with torch.cuda.device(x.device):
        code = lib.mstpp_l2norm_rows(x.data_ptr(), y.data_ptr(), rows, length, eps, dtype, workspace.data_ptr(),
                                     _stream(x))
    _raise_on_error(lib, code, "mstpp_l2norm_rows")
    return y


def gelu(x: "torch.Tensor", out: "Optional[torch.Tensor]" = None) -> "torch.Tensor":
    """Exact (erf) GELU, as ``F.gelu(x)`` with the default ``approximate='none'``.

    Args:
        x: any shape, contiguous CUDA tensor, float32/float16/bfloat16.
        out: optional preallocated result (same shape and dtype as x, contiguous, not overlapping x).

    Returns:
        Same shape and dtype as x, computed in float32.
    """
    import torch

    dtype = _check_input(x, "x", 0)
    y = _output(x, out)
    lib = _load()
    with torch.cuda.device(x.device):
        code = lib.mstpp_gelu(x.data_ptr(), y.data_ptr(), x.numel(), dtype, _stream(x))
    _raise_on_error(lib, code, "mstpp_gelu")
    return y


def _check_block_input(x: "torch.Tensor", widths: tuple[int, ...], channel: str = "C",
                       why: str = "MST++ levels") -> tuple[int, int]:
    """The checks an MST++ kernel needs on its activation x before its weights: a 4-D tensor of a supported dtype
    with one of ``widths`` channels (``channel`` names them in the messages). Returns (dtype code, channels)."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    dtype = _dtype_code(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x must be [B, {channel}, H, W], got shape {tuple(x.shape)}")
    channels = x.shape[1]
    if channels not in widths:
        listed = ", ".join(str(w) for w in widths[:-1]) + f" or {widths[-1]}"
        raise ValueError(f"x must have {listed} channels ({why}), got {channel}={channels}")
    return dtype, channels


def _block_weight(t: "torch.Tensor", name: str, shapes, x: "torch.Tensor") -> "torch.Tensor":
    """Checks t against the accepted shapes and returns it as a contiguous float32 tensor on x's device."""
    import torch

    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if tuple(t.shape) not in shapes:
        accepted = " or ".join(str(list(s)) for s in shapes)
        raise ValueError(f"{name} must have shape {accepted}, got {list(t.shape)}")
    return t.to(device=x.device, dtype=torch.float32).contiguous()


def ffn_nchw(x: "torch.Tensor", ln_weight: "torch.Tensor", ln_bias: "torch.Tensor", w1: "torch.Tensor",
             wdw: "torch.Tensor", w2: "torch.Tensor", eps: float = 1e-5,
             out: "Optional[torch.Tensor]" = None) -> "torch.Tensor":
    """MST++ feed-forward block with its pre-norm and residual, fused: ``x + PreNorm(C, FeedForward(C))(x)``.

    ``y = x + W2 . GELU(DW3x3(GELU(W1 . LN(x))))`` on NCHW, as ``architecture.mst_plus_plus`` computes it
    (LayerNorm over channels, 1x1 conv C->4C, exact GELU, depthwise 3x3 with zero padding, GELU, 1x1 conv 4C->C,
    no biases); the 4C hidden state stays on chip. float32 x: float32 arithmetic throughout (no TF32). float16 /
    bfloat16 x: both 1x1 convolutions on tensor cores with operands of x's dtype and float32 accumulation (LN,
    depthwise conv and GELUs in float32), so errors are a few units of the dtype's roundoff (see
    tests/test_kernels_ffn.py).

    Args:
        x: [B, C, H, W] contiguous CUDA tensor, float32/float16/bfloat16, C in (31, 62, 124).
        ln_weight, ln_bias: [C] LayerNorm affine parameters.
        w1: [4C, C] or [4C, C, 1, 1] (``net[0].weight``).
        wdw: [4C, 1, 3, 3] or [4C, 3, 3] (``net[2].weight``).
        w2: [C, 4C] or [C, 4C, 1, 1] (``net[4].weight``).
        eps: LayerNorm epsilon.
        out: optional preallocated result (same shape and dtype as x, contiguous, not overlapping x).
    The parameters may be any floating dtype and device; they are converted to contiguous float32 on x's device.

    Returns:
        [B, C, H, W], same dtype as x.
    """
    import torch

    dtype, channels = _check_block_input(x, FFN_CHANNELS)
    hidden = 4 * channels
    ln_weight = _block_weight(ln_weight, "ln_weight", [(channels,)], x)
    ln_bias = _block_weight(ln_bias, "ln_bias", [(channels,)], x)
    w1 = _block_weight(w1, "w1", [(hidden, channels), (hidden, channels, 1, 1)], x)
    wdw = _block_weight(wdw, "wdw", [(hidden, 1, 3, 3), (hidden, 3, 3)], x)
    w2 = _block_weight(w2, "w2", [(channels, hidden), (channels, hidden, 1, 1)], x)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    _check_input(x, "x", 4)  # device and layout last: the argument errors above need no GPU
    y = _output(x, out)
    lib = _load()
    batch, height, width = x.shape[0], x.shape[2], x.shape[3]
    with torch.cuda.device(x.device):
        code = lib.mstpp_ffn_nchw(x.data_ptr(), y.data_ptr(), ln_weight.data_ptr(), ln_bias.data_ptr(),
                                  w1.data_ptr(), wdw.data_ptr(), w2.data_ptr(), batch, channels, height, width,
                                  eps, dtype, _stream(x))
    _raise_on_error(lib, code, "mstpp_ffn_nchw")
    return y


def msa_nchw(x: "torch.Tensor", wq: "torch.Tensor", wk: "torch.Tensor", wv: "torch.Tensor",
             rescale: "torch.Tensor", wproj: "torch.Tensor", bproj: "torch.Tensor", wpos1: "torch.Tensor",
             wpos2: "torch.Tensor", out: "Optional[torch.Tensor]" = None) -> "torch.Tensor":
    """MST++ spectral-wise self-attention with its block residual, fused: ``x + SpectralMSA(C, 31, C // 31)(x)``.

    ``y = x + proj(blockdiag(A) v) + pos_emb(v)``, ``v = to_v(x)``, ``A_h = softmax(rescale[h] * kn_h qn_h^T)``
    with q/k rows L2-normalised over the pixels, exactly the function of
    ``architecture.mst_plus_plus.SpectralMSA`` (heads of 31 channels). The attention is computed through the Gram
    matrix x x^T of each image (two reads of x, one write of y), deterministically. float32 x: float32 arithmetic
    throughout (no TF32). float16 / bfloat16 x: the Gram matrix and the per-pixel products Wv x and M x on tensor
    cores with operands of x's dtype (the stored x values, Wv and M rounded to it) and float32 accumulation; the
    softmax, depthwise convolutions and GELU in float32 (see tests/test_kernels_msa.py for the error bounds).

    Args:
        x: [B, C, H, W] contiguous CUDA tensor, float32/float16/bfloat16, C in (31, 62, 124).
        wq, wk, wv: [C, C] or [C, C, 1, 1] (``to_q.weight``, ``to_k.weight``, ``to_v.weight``).
        rescale: [heads, 1, 1] or [heads] (``rescale``), heads = C // 31.
        wproj: [C, C] or [C, C, 1, 1] (``proj.weight``); bproj: [C] (``proj.bias``).
        wpos1, wpos2: [C, 1, 3, 3] or [C, 3, 3] (``pos_emb[0].weight``, ``pos_emb[2].weight``).
        out: optional preallocated result (same shape and dtype as x, contiguous, not overlapping x).
    The parameters may be any floating dtype and device; they are converted to contiguous float32 on x's device.
    The workspace is allocated on x's device for every call; the kernels run on the current stream.

    Returns:
        [B, C, H, W], same dtype as x.
    """
    import torch

    dtype, channels = _check_block_input(x, MSA_CHANNELS)
    heads = channels // MSA_HEAD_DIM
    square = [(channels, channels), (channels, channels, 1, 1)]
    wq = _block_weight(wq, "wq", square, x)
    wk = _block_weight(wk, "wk", square, x)
    wv = _block_weight(wv, "wv", square, x)
    rescale = _block_weight(rescale, "rescale", [(heads, 1, 1), (heads,)], x)
    wproj = _block_weight(wproj, "wproj", square, x)
    bproj = _block_weight(bproj, "bproj", [(channels,)], x)
    wpos1 = _block_weight(wpos1, "wpos1", [(channels, 1, 3, 3), (channels, 3, 3)], x)
    wpos2 = _block_weight(wpos2, "wpos2", [(channels, 1, 3, 3), (channels, 3, 3)], x)
    _check_input(x, "x", 4)  # device and layout last: the argument errors above need no GPU
    y = _output(x, out)
    lib = _load()
    batch, height, width = x.shape[0], x.shape[2], x.shape[3]
    workspace = torch.empty(lib.mstpp_msa_workspace_size(batch, channels, height, width), dtype=torch.uint8,
                            device=x.device)
    with torch.cuda.device(x.device):
        code = lib.mstpp_msa_nchw(x.data_ptr(), y.data_ptr(), wq.data_ptr(), wk.data_ptr(), wv.data_ptr(),
                                  rescale.data_ptr(), wproj.data_ptr(), bproj.data_ptr(), wpos1.data_ptr(),
                                  wpos2.data_ptr(), batch, channels, height, width, dtype, workspace.data_ptr(),
                                  _stream(x))
    _raise_on_error(lib, code, "mstpp_msa_nchw")
    return y


def _check_glue_tensor(t: "torch.Tensor", name: str, x: "torch.Tensor", shape: Optional[tuple] = None) -> None:
    """A 4-D activation of the glue kernels: a tensor of x's dtype (and device, and shape if given)."""
    import torch

    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != x.dtype:
        raise ValueError(f"{name} must have the dtype of x ({x.dtype}), got {t.dtype}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")


def conv_nchw(x: "torch.Tensor", w: "torch.Tensor", stride: int, padding: int,
              residual: "Optional[torch.Tensor]" = None) -> "torch.Tensor":
    """Bias-free 2-D convolution on NCHW, the MST++ glue cases: ``F.conv2d(x, w, stride=stride, padding=padding)``
    plus an optional residual, without layout transforms.

    Geometries: 3x3 with stride 1 and padding 1, 4x4 with stride 2 and padding 1 (zero padding). float32 x: float32
    FMA throughout (no TF32). float16 / bfloat16 x with 31 or 62 input channels: tensor cores with x as stored, w
    rounded to x's dtype and float32 accumulation; with 3 input channels float32 FMA. y is rounded once, after the
    residual add (see tests/test_kernels_conv.py for the error bounds).

    Args:
        x: [B, Cin, H, W] contiguous CUDA tensor, float32/float16/bfloat16, Cin in (3, 31, 62).
        w: [Cout, Cin, k, k] (``Conv2d.weight``), Cout in (31, 62, 124); any floating dtype and device (converted to
            contiguous float32 on x's device).
        stride, padding: (1, 1) for k = 3, (2, 1) for k = 4.
        residual: optional [B, Cout, Ho, Wo] contiguous tensor of x's dtype on x's device, added before the store.

    Returns:
        [B, Cout, Ho, Wo] with Ho = (H + 2 padding - k) // stride + 1 (same for Wo), x's dtype.
    """
    import torch

    dtype, cin = _check_block_input(x, CONV_IN_CHANNELS, "Cin", "MST++ glue convolutions")
    if not isinstance(w, torch.Tensor) or w.dim() != 4 or w.shape[2] != w.shape[3]:
        shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(f"w must be a [Cout, Cin, k, k] tensor, got {shape}")
    ksize = int(w.shape[2])
    if (ksize, stride, padding) not in CONV_GEOMETRIES:
        raise ValueError(f"unsupported convolution (kernel {ksize}, stride {stride}, padding {padding}); "
                         f"supported: {', '.join(f'k{k} s{s} p{p}' for k, s, p in CONV_GEOMETRIES)}")
    batch, _, height, width = x.shape
    cout = int(w.shape[0])
    if cout not in CONV_OUT_CHANNELS:
        raise ValueError(f"w must have 31, 62 or 124 output channels (MST++ glue convolutions), got Cout={cout}")
    w = _block_weight(w, "w", [(cout, cin, ksize, ksize)], x)
    if height + 2 * padding < ksize or width + 2 * padding < ksize:
        raise ValueError(f"x is too small for a {ksize}x{ksize} convolution with padding {padding}: "
                         f"{height}x{width}")
    out_h = (height + 2 * padding - ksize) // stride + 1
    out_w = (width + 2 * padding - ksize) // stride + 1
    out_shape = (batch, cout, out_h, out_w)
    if residual is not None:
        _check_glue_tensor(residual, "residual", x, out_shape)
    _check_input(x, "x", 4)  # device and layout last: the argument errors above need no GPU
    if residual is not None:
        _check_input(residual, "residual", 4)
        if residual.device != x.device:
            raise ValueError(f"residual must be on {x.device}, got {residual.device}")
    y = torch.empty(out_shape, dtype=x.dtype, device=x.device)
    lib = _load()
    with torch.cuda.device(x.device):
        code = lib.mstpp_conv_nchw(x.data_ptr(), y.data_ptr(), w.data_ptr(),
                                   residual.data_ptr() if residual is not None else None, batch, cin, height, width,
                                   cout, ksize, stride, padding, dtype, _stream(x))
    _raise_on_error(lib, code, "mstpp_conv_nchw")
    return y


class UpfuseWeights:
    """The decoder's transposed conv + 1x1 fuse conv folded into one linear map per output parity
    (mstpp_upfuse_nchw's weights; see fold_upfuse). wa: [4, Cs, Clow], wb: [Cs, Cs], bias: [Cs], float32."""

    def __init__(self, wa: "torch.Tensor", wb: "torch.Tensor", bias: "torch.Tensor"):
        self.wa, self.wb, self.bias = wa, wb, bias

    @property
    def low_channels(self) -> int:
        return int(self.wa.shape[2])


def fold_upfuse(w_up: "torch.Tensor", b_up: "torch.Tensor", w_fuse: "torch.Tensor") -> UpfuseWeights:
    """Fold ``Conv1x1(cat([ConvTranspose2d(k2, s2)(low), skip]))`` into mstpp_upfuse_nchw's weights.

    The single place of the fold. Computed in float64 on the weights' device, then rounded to float32:
    ``wa[2 ki + kj] = w_fuse[:, :Cs] @ w_up[:, :, ki, kj].T``, ``wb = w_fuse[:, Cs:]``, ``bias = w_fuse[:, :Cs] @ b_up``.

    Args:
        w_up: [Clow, Cs, 2, 2] (``ConvTranspose2d.weight``, layout [in, out, kH, kW]), Clow in (62, 124), Cs = Clow / 2.
        b_up: [Cs] (``ConvTranspose2d.bias``).
        w_fuse: [Cs, Clow, 1, 1] or [Cs, Clow] (the 1x1 fuse ``Conv2d.weight``, input = cat([up, skip])).
    """
    import torch

    for name, t in (("w_up", w_up), ("b_up", b_up), ("w_fuse", w_fuse)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point torch.Tensor")
    if w_up.dim() != 4 or tuple(w_up.shape[2:]) != (2, 2) or w_up.shape[0] not in UPFUSE_CHANNELS \
            or w_up.shape[1] * 2 != w_up.shape[0]:
        raise ValueError(f"w_up must be [Clow, Clow / 2, 2, 2] with Clow in {UPFUSE_CHANNELS}, got {list(w_up.shape)}")
    clow = int(w_up.shape[0])
    cs = clow // 2
    if tuple(b_up.shape) != (cs,):
        raise ValueError(f"b_up must have shape [{cs}], got {list(b_up.shape)}")
    if tuple(w_fuse.shape) not in ((cs, clow, 1, 1), (cs, clow)):
        raise ValueError(f"w_fuse must have shape [{cs}, {clow}, 1, 1] or [{cs}, {clow}], got {list(w_fuse.shape)}")
    device = w_up.device
    wu = w_up.detach().to(dtype=torch.float64)
    wf = w_fuse.detach().to(device=device, dtype=torch.float64).reshape(cs, clow)
    bu = b_up.detach().to(device=device, dtype=torch.float64)
    wf_up, wf_skip = wf[:, :cs], wf[:, cs:]
    wa = torch.stack([wf_up @ wu[:, :, ki, kj].T for ki in range(2) for kj in range(2)])
    return UpfuseWeights(wa.float().contiguous(), wf_skip.float().contiguous(), (wf_up @ bu).float().contiguous())


def upfuse_nchw(low: "torch.Tensor", skip: "torch.Tensor", w_up: "Optional[torch.Tensor]" = None,
                b_up: "Optional[torch.Tensor]" = None, w_fuse: "Optional[torch.Tensor]" = None,
                folded: "Optional[UpfuseWeights]" = None) -> "torch.Tensor":
    """MST++ decoder step, fused: ``Conv1x1(cat([ConvTranspose2d(low), skip], dim=1))`` without the concat.

    Both ops are linear, so the kernel applies the folded map (fold_upfuse) per output pixel:
    ``y(p) = wa[p mod 2] . low(p / 2) + wb . skip(p) + bias``, float32 FMA for every dtype, y rounded once. Pass
    either the raw weights (folded on every call: a few small float64 ops) or ``folded=fold_upfuse(...)`` (fold
    once, e.g. when the model is set up).

    Args:
        low: [B, Clow, Hl, Wl] contiguous CUDA tensor, float32/float16/bfloat16, Clow in (62, 124).
        skip: [B, Clow / 2, 2 Hl, 2 Wl], contiguous, low's dtype and device.
        w_up, b_up, w_fuse: ``ConvTranspose2d(Clow, Clow / 2, 2, 2).weight / .bias`` and the fuse
            ``Conv2d(Clow, Clow / 2, 1, bias=False).weight`` (see fold_upfuse), or None with ``folded``.
        folded: the result of fold_upfuse for these weights (moved to low's device if needed).

    Returns:
        [B, Clow / 2, 2 Hl, 2 Wl], low's dtype.
    """
    import torch

    if not isinstance(low, torch.Tensor):
        raise ValueError(f"low must be a torch.Tensor, got {type(low).__name__}")
    dtype = _dtype_code(low, "low")
    if low.dim() != 4 or low.shape[1] not in UPFUSE_CHANNELS:
        raise ValueError(f"low must be [B, Clow, H, W] with Clow in {UPFUSE_CHANNELS}, got {tuple(low.shape)}")
    batch, clow, height, width = low.shape
    out_shape = (batch, clow // 2, 2 * height, 2 * width)
    _check_glue_tensor(skip, "skip", low, out_shape)
    if folded is None:
        if w_up is None or b_up is None or w_fuse is None:
            raise ValueError("pass w_up, b_up and w_fuse, or folded=fold_upfuse(w_up, b_up, w_fuse)")
        folded = fold_upfuse(w_up, b_up, w_fuse)
    elif not isinstance(folded, UpfuseWeights):
        raise ValueError(f"folded must come from fold_upfuse, got {type(folded).__name__}")
    if folded.low_channels != clow:
        raise ValueError(f"the weights are for Clow={folded.low_channels}, low has {clow} channels")
    _check_input(low, "low", 4)  # device and layout last: the argument errors above need no GPU
    _check_input(skip, "skip", 4)
    if skip.device != low.device:
        raise ValueError(f"skip must be on {low.device}, got {skip.device}")
    wa, wb, bias = (t.to(device=low.device, dtype=torch.float32).contiguous()
                    for t in (folded.wa, folded.wb, folded.bias))
    y = torch.empty(out_shape, dtype=low.dtype, device=low.device)
    lib = _load()
    with torch.cuda.device(low.device):
        code = lib.mstpp_upfuse_nchw(low.data_ptr(), skip.data_ptr(), y.data_ptr(), wa.data_ptr(), wb.data_ptr(),
                                     bias.data_ptr(), batch, clow, height, width, dtype, _stream(low))
    _raise_on_error(lib, code, "mstpp_upfuse_nchw")
    return y

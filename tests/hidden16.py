"""float64 models of the fused kernels' 16-bit hidden arithmetic (plugins/kernels/dwconv.cuh), for the test references.

For FP16 storage the kernels keep the depthwise inputs in FP16, accumulate the nine taps of each depthwise 3x3 in
HFMA2 (one rounding to FP16 per tap, in the order kernel row 0..2 x column 0..2) and evaluate the GELU after a
depthwise convolution in half2 arithmetic. These functions repeat each of those FP16 roundings on float64 tensors,
so a reference built from them differs from the kernel only by the hardware tanh (``tanh.approx``, a few ulp of
the tanh value) and the rounding flips that difference causes downstream. Both 16-bit storages use the tanh-form
GELU with the refitted coefficients below (max abs error 2.71e-4 against the exact erf GELU).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: 0.5 v (1 + tanh(GELU_A v + GELU_B v^3)): the kernels' GELU for 16-bit storage (dwconv.cuh).
GELU_A = 0.8001570785529808
GELU_B = 0.03470089343609711
#: max |gelu_tanh(v) - GELU(v)| over all v (checked on a fine grid by test_hidden16_gelu_error).
GELU_TANH_MAX_ERR = 2.71e-4


def rnd16(t: torch.Tensor) -> torch.Tensor:
    """Round to FP16 and back to float64."""
    return t.to(torch.float16).to(torch.float64)


def gelu_tanh(v: torch.Tensor) -> torch.Tensor:
    """The kernels' tanh-form GELU in float64 (no hardware approximation)."""
    return 0.5 * v * (1.0 + torch.tanh(v * (GELU_A + GELU_B * v * v)))


def gelu_half2(o: torch.Tensor) -> torch.Tensor:
    """dw::gelu_fast2 step by step: every half2 operation rounds to FP16 (FMA: one rounding); tanh exact."""
    a = rnd16(torch.tensor(GELU_A, dtype=torch.float64))
    b = rnd16(torch.tensor(GELU_B, dtype=torch.float64))
    o = rnd16(o)
    p = rnd16(b * rnd16(o * o) + a)
    t = rnd16(torch.tanh(rnd16(o * p)))
    h = 0.5 * o  # exact
    return rnd16(h * t + h)


def dw3x3_half(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Depthwise 3x3 (zero padding 1) of FP16 values h [B, K, H, W] with weights [K, 3, 3] (or [K, 1, 3, 3]) rounded
    to FP16, accumulated as HFMA2 does: acc = fp16(acc + w * h) tap by tap, rows then columns."""
    k = h.shape[1]
    w = rnd16(weight.reshape(k, 3, 3).to(device=h.device, dtype=torch.float64))
    hp = F.pad(rnd16(h), (1, 1, 1, 1))
    height, width = h.shape[2], h.shape[3]
    acc = torch.zeros_like(h, dtype=torch.float64)
    for dy in range(3):
        for dx in range(3):
            acc = rnd16(acc + w[:, dy, dx].view(1, k, 1, 1) * hp[:, :, dy:dy + height, dx:dx + width])
    return acc

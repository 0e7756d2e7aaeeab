"""GPU kernel time per run, from torch.profiler (CUPTI sees every kernel in the process: torch's, cuDNN's,
onnxruntime's and ours)."""
from __future__ import annotations

from typing import Callable

import torch

# Kernel-name fragments -> the part of MST++ they belong to; the first match wins.
KERNEL_GROUPS = (
    ("mstpp ffn kernel", ("ffn",)),
    ("mstpp attention kernels", ("msa", "gram", "attn_")),
    ("mstpp glue kernels", ("mstpp::",)),  # our convolutions and sampling (after the two groups above)
    ("convolution (cuDNN/cuBLAS)", ("conv", "cudnn", "gemm", "sm90_xmma", "cutlass", "implicit", "wgrad", "dgrad")),
    ("layout/copy", ("copy", "transpose", "permute", "cat", "pad", "reflection")),
    ("elementwise/reduction", ("elementwise", "reduce", "softmax", "norm", "gelu")),
)


def kernel_group(name: str) -> str:
    """The MST++ part a GPU kernel (by its mangled or demangled name) is counted under."""
    low = name.lower()
    for group, fragments in KERNEL_GROUPS:
        if any(f in low for f in fragments):
            return group
    return "other"


def profile_kernels(step: Callable[[], object], runs: int = 10, top: int = 25) -> dict:
    """Run ``step`` ``runs`` times under the profiler (after it has been warmed up by the caller).

    Returns ``{"ms_per_run_events": float, "gpu_kernels_ms_per_run": [{"kernel", "ms", "calls"}] (top
    ``top``), "groups_ms_per_run": {group: ms}}``; kernel times are summed device time per run, so gaps
    between kernels show as ``ms_per_run_events`` minus the kernel sum.
    """
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        start.record()
        for _ in range(runs):
            step()
        end.record()
        torch.cuda.synchronize()
    rows = sorted(((e.key, e.device_time_total / 1e3 / runs, e.count // runs) for e in prof.key_averages()
                   if e.device_time_total > 0), key=lambda r: -r[1])
    groups: dict[str, float] = {}
    for name, ms, _ in rows:
        group = kernel_group(name)
        groups[group] = groups.get(group, 0.0) + ms
    return {"ms_per_run_events": start.elapsed_time(end) / runs,
            "kernel_sum_ms_per_run": sum(ms for _, ms, _ in rows),
            "groups_ms_per_run": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
            "gpu_kernels_ms_per_run": [{"kernel": k[:120], "ms": ms, "calls": n} for k, ms, n in rows[:top]]}

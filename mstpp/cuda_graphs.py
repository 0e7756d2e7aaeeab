"""Capturing work into a CUDA graph: the one warm-up-then-capture sequence every replaying caller uses.

The fused route replays its forward, the benchmark replays a route's ``run`` (``mstpp.bench.timing``), and the
kernel benchmark replays batches of kernel calls; each captures through ``capture`` and adds only what is its
own (a static input, a check against eager, a timing loop).
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch

T = TypeVar("T")

__all__ = ["capture"]


def capture(fn: Callable[[], T], device: str | torch.device | None = None,
            warmup_runs: int = 1) -> tuple[torch.cuda.CUDAGraph, T]:
    """Run ``fn`` ``warmup_runs`` times on a side stream, then capture one call of it into a CUDA graph.

    The warm-up keeps lazy initialisation (cuBLAS handles, cuDNN algorithm choice, first-call allocations) out of
    the graph, on a side stream as ``torch.cuda.graph`` asks. ``fn`` must read static buffers: a replay repeats the
    captured work on the same memory.

    Returns:
        (graph, what the captured call returned): its tensors are the static outputs that each
        ``graph.replay()`` rewrites.
    """
    device = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup_runs):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out

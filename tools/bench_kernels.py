#!/usr/bin/env python3
"""Benchmark the MST++ CUDA kernels against their PyTorch eager equivalents, in GB/s against copy bandwidth.

Shapes are MST++'s at batch 1 and a 512x488 (padded) input, HW = 249,856:
  LayerNorm rows   [249,856, C] for C = 31, 62, 124 (the issue's case: PyTorch's channel LayerNorm)
  LayerNorm NCHW   [1, C, 512, 488]; PyTorch does permute -> layer_norm -> permute -> contiguous
  L2Norm           [heads * 31, HW / 4^level] for the three levels (heads 1, 2, 4)
  GELU             the FFN hidden state [4C, HW / 4^level] for the three levels
  FFN              the fused feed-forward block (mstpp_ffn_nchw) against PyTorch eager PreNorm(FeedForward) + x,
                   at the three levels ([1, C, H/2^l, W/2^l], C = 31 * 2^l) and at batch 16 for C = 31
  MSA              the fused spectral attention (mstpp_msa_nchw) against PyTorch eager SpectralMSA(x) + x, same
                   shapes; bandwidth counts its minimum traffic: x read twice (Gram pass, fused pass), y written once
  GLUE             the glue convolutions (mstpp_conv_nchw: conv_in 3->31, 31->31 3x3 with and without residual,
                   4x4/s2 31->62 and 62->124) against F.conv2d (cuDNN, NCHW), and the decoder step
                   (mstpp_upfuse_nchw, Clow 124 and 62, folded weights) against ConvTranspose2d -> cat -> 1x1 conv;
                   GFLOP/s count the useful MACs (2 * Cout * Cin * k^2 per output pixel)
Each case runs in float32 (TF32 off) and float16. Timing: CUDA-graph replays of back-to-back calls (no launch overhead), median of
--runs replays, inputs rotated over enough buffers that the working set exceeds the L2 cache (a cache-resident
input would flatter every kernel). Bandwidth counts the minimum traffic: every input element read once,
every output element written once (gamma/beta ignored). The FFN is compute-bound: its rows also give GFLOP/s
(2 * N * (8C^2 + 36C) for the two 1x1 and the depthwise convolutions; LN and GELU not counted).

Example:  python -m tools.bench_kernels --out docs/results/kernels_bench.json
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict, List


TARGETS = {"layernorm": 0.70, "gelu": 0.80, "l2norm": 0.60}  # fraction of copy bandwidth, from the issue
OPS = ("layernorm", "l2norm", "gelu", "ffn", "msa", "glue")
LAYERNORM_SPEEDUP_TARGET = 20.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON to this path")
    parser.add_argument("--height", type=int, default=512, help="padded input height (default 512)")
    parser.add_argument("--width", type=int, default=488, help="padded input width (default 488)")
    parser.add_argument("--runs", type=int, default=100, help="timed calls per case, median reported (>= 50)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls before timing (default 10)")
    parser.add_argument("--ops", default=",".join(OPS),
                        help=f"comma-separated subset of {','.join(OPS)} to run (default: all)")
    args = parser.parse_args(argv)
    args.ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    unknown = sorted(set(args.ops) - set(OPS))
    if unknown:
        parser.error(f"unknown --ops {unknown}; choose from {list(OPS)}")
    if args.runs < 50:
        parser.error("--runs must be >= 50")
    return args


class Timer:
    """GPU time per call from CUDA-graph replays.

    A graph holds ``max(n_sets, 10)`` back-to-back calls over the rotating buffer sets; each replay is
    timed with CUDA events and divided by the calls in it. Timing single eager calls instead would
    measure the host's launch overhead (tens of microseconds through ctypes or PyTorch's dispatcher),
    which is larger than most of these kernels.
    """

    def __init__(self, torch, runs: int, warmup: int):
        self.torch, self.runs, self.warmup = torch, runs, warmup

    def median_ms(self, fn: Callable[[int], object], n_sets: int = 1) -> float:
        """fn(i) runs one call on buffer set i; returns the median GPU time of one call in ms."""
        from mstpp import cuda_graphs

        torch = self.torch
        for i in range(max(self.warmup, n_sets)):
            fn(i)
        calls = max(n_sets, 10)
        graph, _ = cuda_graphs.capture(lambda: [fn(i) for i in range(calls)])
        graph.replay()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(self.runs)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(self.runs)]
        for i in range(self.runs):
            starts[i].record()
            graph.replay()
            ends[i].record()
        torch.cuda.synchronize()
        del graph
        return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends)) / calls


def buffer_count(bytes_per_set: int, l2_bytes: int) -> int:
    """Enough input/output sets that cycling through them touches > 3x the L2 cache."""
    return max(2, math.ceil(3 * l2_bytes / max(bytes_per_set, 1)))


def copy_bandwidth(torch, timer: Timer) -> Dict:
    """Device-to-device copy of 512 MiB, timed eagerly: a captured copy becomes a graph memcpy node,
    which ran ~20% slower than the copy kernel here, and launch overhead is negligible at this size."""
    n_bytes = 512 << 20
    src = torch.empty(n_bytes, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    for _ in range(timer.warmup):
        dst.copy_(src)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(timer.runs)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(timer.runs)]
    for start, end in zip(starts, ends):
        start.record()
        dst.copy_(src)
        end.record()
    torch.cuda.synchronize()
    ms = statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))
    return {"bytes_moved": 2 * n_bytes, "ms": ms, "gb_per_s": 2 * n_bytes / ms / 1e6, "timing": "eager, CUDA events"}


def time_pair(timer: Timer, ours: Callable, theirs: Callable, make_inputs: Callable, moved: int,
              l2_bytes: int) -> tuple:
    """Median ms of ``ours(*inputs)`` and ``theirs(*inputs)`` over rotating input sets from ``make_inputs()``,
    enough of them that each call's ``moved`` bytes come from DRAM, not L2. Returns (ours, theirs, n_sets)."""
    sets = [make_inputs() for _ in range(buffer_count(moved, l2_bytes))]
    ours_ms = timer.median_ms(lambda i: ours(*sets[i % len(sets)]), len(sets))
    theirs_ms = timer.median_ms(lambda i: theirs(*sets[i % len(sets)]), len(sets))
    return ours_ms, theirs_ms, len(sets)


def run_cases(torch, kernels, args, timer: Timer, copy_gbs: float, l2_bytes: int) -> List[Dict]:
    import torch.nn.functional as F

    hw = args.height * args.width
    results = []

    def case(op: str, name: str, dtype, shape, ours: Callable, theirs: Callable, make_inputs: Callable):
        elem = torch.tensor([], dtype=dtype).element_size()
        numel = math.prod(shape)
        moved = 2 * numel * elem
        ours_ms, theirs_ms, n_sets = time_pair(timer, ours, theirs, make_inputs, moved, l2_bytes)
        gbs = moved / ours_ms / 1e6
        row = {
            "op": op, "case": name, "dtype": str(dtype).replace("torch.", ""), "shape": list(shape),
            "bytes_moved": moved, "buffers": n_sets,
            "ms": ours_ms, "gb_per_s": gbs, "fraction_of_copy": gbs / copy_gbs,
            "torch_ms": theirs_ms, "torch_gb_per_s": moved / theirs_ms / 1e6, "speedup": theirs_ms / ours_ms,
            "target_fraction_of_copy": TARGETS[op],
        }
        row["meets_target"] = row["fraction_of_copy"] >= TARGETS[op] and (
            op != "layernorm" or row["speedup"] >= LAYERNORM_SPEEDUP_TARGET)
        results.append(row)

    for dtype in (torch.float32, torch.float16):
        if "layernorm" not in args.ops:
            break

        def layernorm_inputs(shape, channels, dtype=dtype):
            """Factory of (x, gamma, beta, gamma and beta in x's dtype for PyTorch, output buffer)."""
            def make():
                x = torch.randn(shape, device="cuda").to(dtype)
                gamma = 1 + 0.1 * torch.randn(channels, device="cuda")
                beta = 0.1 * torch.randn(channels, device="cuda")
                return x, gamma, beta, gamma.to(dtype), beta.to(dtype), torch.empty_like(x)
            return make

        for channels in (31, 62, 124):
            shape = (hw, channels)
            make = layernorm_inputs(shape, channels)
            case("layernorm", f"rows C={channels}", dtype, shape,
                 lambda x, g, b, gt, bt, out: kernels.layer_norm_rows(x, g, b, out=out),
                 lambda x, g, b, gt, bt, out: F.layer_norm(x, (x.shape[-1],), gt, bt, 1e-5), make)

        for channels in (31, 62, 124):
            shape = (1, channels, args.height, args.width)
            make = layernorm_inputs(shape, channels)
            case("layernorm", f"NCHW C={channels}", dtype, shape,
                 lambda x, g, b, gt, bt, out: kernels.layer_norm_nchw(x, g, b, out=out),
                 lambda x, g, b, gt, bt, out: F.layer_norm(
                     x.permute(0, 2, 3, 1), (x.shape[1],), gt, bt, 1e-5).permute(0, 3, 1, 2).contiguous(), make)

    for dtype in (torch.float32, torch.float16):
        for level, heads in enumerate((1, 2, 4)):
            if "l2norm" not in args.ops:
                break
            shape = (heads * 31, hw // 4 ** level)

            def make(shape=shape, dtype=dtype):
                x = (4 * torch.randn(shape, device="cuda")).to(dtype)
                return x, torch.empty_like(x)

            case("l2norm", f"level {level} heads={heads}", dtype, shape,
                 lambda x, out: kernels.l2_normalize(x, out=out),
                 lambda x, out: F.normalize(x, dim=-1), make)

        for level in range(3):
            if "gelu" not in args.ops:
                break
            shape = (4 * 31 * 2 ** level, hw // 4 ** level)

            def make(shape=shape, dtype=dtype):
                x = (2 * torch.randn(shape, device="cuda")).to(dtype)
                return x, torch.empty_like(x)

            case("gelu", f"FFN level {level}", dtype, shape,
                 lambda x, out: kernels.gelu(x, out=out), lambda x, out: F.gelu(x), make)
    return results


def ffn_flops(shape) -> int:
    """FLOPs of one FFN block: the two 1x1 convolutions (2 * 4C^2 MACs per pixel) and the depthwise 3x3 (36C)."""
    batch, channels, height, width = shape
    return 2 * batch * height * width * (8 * channels * channels + 36 * channels)


def time_block_pair(torch, timer: Timer, kernel: Callable, params: List, block, shape, dtype, moved: int,
                    l2_bytes: int) -> Dict:
    """Times ``kernel(x, *params, out=out)`` against PyTorch's ``block(x) + x`` (``time_pair``). Returns the row's
    common fields: case, dtype, shape, bytes_moved, buffers, ms, gb_per_s, torch_ms, speedup."""
    def make_inputs():
        return torch.randn(shape, device="cuda").to(dtype), torch.empty(shape, device="cuda", dtype=dtype)

    @torch.no_grad()
    def theirs(x, out):
        return block(x) + x

    ours_ms, theirs_ms, n_sets = time_pair(timer, lambda x, out: kernel(x, *params, out=out), theirs, make_inputs,
                                           moved, l2_bytes)
    return {"case": f"C={shape[1]} {shape[2]}x{shape[3]} b={shape[0]}", "dtype": str(dtype).replace("torch.", ""),
            "shape": list(shape), "bytes_moved": moved, "buffers": n_sets, "ms": ours_ms,
            "gb_per_s": moved / ours_ms / 1e6, "torch_ms": theirs_ms, "speedup": theirs_ms / ours_ms}


def run_ffn_cases(torch, kernels, args, timer: Timer, copy_gbs: float, l2_bytes: int) -> List[Dict]:
    """mstpp_ffn_nchw against PyTorch eager ``PreNorm(C, FeedForward(C))(x) + x`` (cuDNN, TF32 off)."""
    from architecture.mst_plus_plus import FeedForward, PreNorm

    h, w = args.height, args.width
    shapes = [(1, 31, h, w), (1, 62, h // 2, w // 2), (1, 124, h // 4, w // 4), (16, 31, h, w)]
    results = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):  # FP16/BF16: the tensor-core kernel
        for shape in shapes:
            channels = shape[1]
            torch.manual_seed(channels)
            block = PreNorm(channels, FeedForward(channels)).cuda().eval()
            params = [p.detach().float().contiguous() for p in (
                block.norm.weight, block.norm.bias, block.fn.net[0].weight, block.fn.net[2].weight,
                block.fn.net[4].weight)]
            block = block.to(dtype)
            elem = torch.tensor([], dtype=dtype).element_size()
            moved = 2 * math.prod(shape) * elem
            row = time_block_pair(torch, timer, kernels.ffn_nchw, params, block, shape, dtype, moved, l2_bytes)
            flops = ffn_flops(shape)
            results.append({
                "op": "ffn", **row, "flops": flops, "fraction_of_copy": row["gb_per_s"] / copy_gbs,
                "gflop_per_s": flops / row["ms"] / 1e6, "torch_gflop_per_s": flops / row["torch_ms"] / 1e6,
            })
            del block
    return results


def run_msa_cases(torch, kernels, args, timer: Timer, copy_gbs: float, l2_bytes: int) -> List[Dict]:
    """mstpp_msa_nchw against PyTorch eager ``SpectralMSA(C, 31, C // 31)(x) + x`` (TF32 off)."""
    from architecture.mst_plus_plus import SpectralMSA

    h, w = args.height, args.width
    shapes = [(1, 31, h, w), (1, 62, h // 2, w // 2), (1, 124, h // 4, w // 4), (16, 31, h, w)]
    results = []
    for dtype in (torch.float32, torch.float16):
        for shape in shapes:
            channels = shape[1]
            torch.manual_seed(channels)
            block = SpectralMSA(channels, 31, channels // 31).cuda().eval()
            with torch.no_grad():
                block.rescale.uniform_(0.5, 3.0)
            params = [p.detach().float().contiguous() for p in (
                block.to_q.weight, block.to_k.weight, block.to_v.weight, block.rescale, block.proj.weight,
                block.proj.bias, block.pos_emb[0].weight, block.pos_emb[2].weight)]
            block = block.to(dtype)
            elem = torch.tensor([], dtype=dtype).element_size()
            moved = 3 * math.prod(shape) * elem  # x read twice, y written once
            row = time_block_pair(torch, timer, kernels.msa_nchw, params, block, shape, dtype, moved, l2_bytes)
            results.append({"op": "msa", **row, "fraction_of_copy": row["gb_per_s"] / copy_gbs})
            del block
    return results


def run_glue_cases(torch, kernels, args, timer: Timer, copy_gbs: float, l2_bytes: int) -> List[Dict]:
    """mstpp_conv_nchw against F.conv2d (cuDNN, TF32 off) and mstpp_upfuse_nchw against the unfused decoder step."""
    import torch.nn.functional as F

    h, w = args.height, args.width
    # (name, Cin, Cout, k, stride, H, W, residual)
    convs = [("conv_in 3->31", 3, 31, 3, 1, h, w, False), ("3x3 31->31", 31, 31, 3, 1, h, w, False),
             ("3x3 31->31 +res", 31, 31, 3, 1, h, w, True), ("down 31->62", 31, 62, 4, 2, h, w, False),
             ("down 62->124", 62, 124, 4, 2, h // 2, w // 2, False)]
    results = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        elem = torch.tensor([], dtype=dtype).element_size()
        for name, cin, cout, ksize, stride, height, width, with_res in convs:
            torch.manual_seed(cin + cout)
            weight = torch.randn(cout, cin, ksize, ksize, device="cuda") / math.sqrt(cin * ksize * ksize)
            weight_t = weight.to(dtype)
            out_h, out_w = (height + 2 - ksize) // stride + 1, (width + 2 - ksize) // stride + 1
            shape_in, shape_out = (1, cin, height, width), (1, cout, out_h, out_w)
            moved = (math.prod(shape_in) + math.prod(shape_out) * (2 if with_res else 1)) * elem

            def make_inputs(shape_in=shape_in, shape_out=shape_out, with_res=with_res, dtype=dtype):
                res = torch.randn(shape_out, device="cuda").to(dtype) if with_res else None
                return torch.randn(shape_in, device="cuda").to(dtype), res

            def ours(x, res, weight=weight, stride=stride):
                return kernels.conv_nchw(x, weight, stride, 1, residual=res)

            @torch.no_grad()
            def theirs(x, res, weight_t=weight_t, stride=stride):
                y = F.conv2d(x, weight_t, stride=stride, padding=1)
                return y if res is None else y + res

            ours_ms, theirs_ms, n_sets = time_pair(timer, ours, theirs, make_inputs, moved, l2_bytes)
            flops = 2 * math.prod(shape_out) * cin * ksize * ksize
            results.append({"op": "conv", "case": name, "dtype": str(dtype).replace("torch.", ""),
                            "shape": list(shape_in), "bytes_moved": moved, "buffers": n_sets, "ms": ours_ms,
                            "gb_per_s": moved / ours_ms / 1e6, "torch_ms": theirs_ms, "speedup": theirs_ms / ours_ms,
                            "flops": flops, "gflop_per_s": flops / ours_ms / 1e6,
                            "fraction_of_copy": moved / ours_ms / 1e6 / copy_gbs})
        for clow, height, width in ((124, h // 4, w // 4), (62, h // 2, w // 2)):
            cs = clow // 2
            torch.manual_seed(clow)
            up = torch.nn.ConvTranspose2d(clow, cs, 2, 2).cuda().eval()
            fuse = torch.nn.Conv2d(clow, cs, 1, bias=False).cuda().eval()
            folded = kernels.fold_upfuse(up.weight, up.bias, fuse.weight)
            up_t, fuse_t = up.to(dtype), fuse.to(dtype)
            shape_low, shape_out = (1, clow, height, width), (1, cs, 2 * height, 2 * width)
            moved = (math.prod(shape_low) + 2 * math.prod(shape_out)) * elem

            def make_inputs(shape_low=shape_low, shape_out=shape_out, dtype=dtype):
                return torch.randn(shape_low, device="cuda").to(dtype), torch.randn(shape_out, device="cuda").to(dtype)

            def ours(low, skip, folded=folded):
                return kernels.upfuse_nchw(low, skip, folded=folded)

            @torch.no_grad()
            def theirs(low, skip, up_t=up_t, fuse_t=fuse_t):
                return fuse_t(torch.cat([up_t(low), skip], dim=1))

            ours_ms, theirs_ms, n_sets = time_pair(timer, ours, theirs, make_inputs, moved, l2_bytes)
            flops = 2 * math.prod(shape_out) * (clow + cs) * cs  # folded form: Clow + Cs MACs per output channel
            results.append({"op": "upfuse", "case": f"upfuse Clow={clow}", "dtype": str(dtype).replace("torch.", ""),
                            "shape": list(shape_low), "bytes_moved": moved, "buffers": n_sets, "ms": ours_ms,
                            "gb_per_s": moved / ours_ms / 1e6, "torch_ms": theirs_ms, "speedup": theirs_ms / ours_ms,
                            "flops": flops, "gflop_per_s": flops / ours_ms / 1e6,
                            "fraction_of_copy": moved / ours_ms / 1e6 / copy_gbs})
    return results


def print_msa_table(rows: List[Dict]) -> None:
    header = f"{'msa case':<26}{'dtype':<9}{'ms':>9}{'GB/s':>8}{'%copy':>7}{'torch ms':>10}{'speedup':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['case']:<26}{r['dtype']:<9}{r['ms']:>9.4f}{r['gb_per_s']:>8.0f}{100 * r['fraction_of_copy']:>6.0f}%"
              f"{r['torch_ms']:>10.4f}{r['speedup']:>8.1f}x")


def print_flops_table(op: str, rows: List[Dict]) -> None:
    """The rows of a compute-bound op (FFN, glue convolutions) with their GFLOP/s."""
    header = f"{op + ' case':<26}{'dtype':<9}{'ms':>9}{'GB/s':>8}{'GFLOP/s':>9}{'torch ms':>10}{'speedup':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['case']:<26}{r['dtype']:<9}{r['ms']:>9.4f}{r['gb_per_s']:>8.0f}{r['gflop_per_s']:>9.0f}"
              f"{r['torch_ms']:>10.4f}{r['speedup']:>8.1f}x")


def print_table(copy: Dict, rows: List[Dict]) -> None:
    print(f"device copy bandwidth: {copy['gb_per_s']:.0f} GB/s (read + write, {copy['bytes_moved'] >> 20} MiB)")
    header = f"{'op':<10}{'case':<20}{'dtype':<9}{'ms':>9}{'GB/s':>8}{'%copy':>7}{'torch ms':>10}{'speedup':>9}  target"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['op']:<10}{r['case']:<20}{r['dtype']:<9}{r['ms']:>9.4f}{r['gb_per_s']:>8.0f}"
              f"{100 * r['fraction_of_copy']:>6.0f}%{r['torch_ms']:>10.4f}{r['speedup']:>8.1f}x  "
              f"{'ok' if r['meets_target'] else 'MISSED'}")


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench_kernels: no CUDA GPU visible to torch; nothing to measure", file=sys.stderr)
        return 2
    from mstpp import kernels
    from mstpp.bench.environment import capture_environment

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False  # the PyTorch FFN/MSA references run their 1x1 convolutions in FP32
    timer = Timer(torch, args.runs, args.warmup)
    env = capture_environment("cuda")
    l2_bytes = env.get("l2_cache_bytes") or (50 << 20)
    copy = copy_bandwidth(torch, timer)
    rows = run_cases(torch, kernels, args, timer, copy["gb_per_s"], l2_bytes)
    ffn_rows = run_ffn_cases(torch, kernels, args, timer, copy["gb_per_s"], l2_bytes) if "ffn" in args.ops else []
    msa_rows = run_msa_cases(torch, kernels, args, timer, copy["gb_per_s"], l2_bytes) if "msa" in args.ops else []
    glue_rows = run_glue_cases(torch, kernels, args, timer, copy["gb_per_s"], l2_bytes) if "glue" in args.ops else []
    print_table(copy, rows)
    if ffn_rows:
        print()
        print_flops_table("ffn", ffn_rows)
    if msa_rows:
        print()
        print_msa_table(msa_rows)
    if glue_rows:
        print()
        print_flops_table("glue", glue_rows)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {"environment": env, "protocol": {"runs": args.runs, "warmup": args.warmup, "statistic": "median",
                                                   "timing": "CUDA-graph replays of >= 10 calls over rotating buffers (> 3x L2), CUDA events, per call",
                                                   "height": args.height, "width": args.width},
                  "ops": args.ops, "copy_bandwidth": copy, "results": rows, "ffn_results": ffn_rows,
                  "msa_results": msa_rows, "glue_results": glue_rows}
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

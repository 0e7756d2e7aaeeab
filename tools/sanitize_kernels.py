#!/usr/bin/env python3
"""Run every kernel once on small, awkward shapes (partial tiles, odd widths, misaligned pointers), for
`compute-sanitizer --tool memcheck python -m tools.sanitize_kernels`. Exits non-zero on any kernel error."""
from __future__ import annotations

import sys


def main() -> int:
    import torch

    from mstpp import kernels

    dev = "cuda"
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for channels in (31, 62, 124, 7, 1024):
            gamma = torch.ones(channels, device=dev)
            beta = torch.zeros(channels, device=dev)
            kernels.layer_norm_rows(torch.randn(67, channels, device=dev).to(dtype), gamma, beta)
            kernels.layer_norm_nchw(torch.randn(2, channels, 9, 11, device=dev).to(dtype), gamma, beta)
            kernels.layer_norm_nchw(torch.randn(1, channels, 8, 16, device=dev).to(dtype), gamma, beta)
        storage = torch.randn(62 * 101 + 1, device=dev).to(dtype)
        kernels.layer_norm_rows(storage[1:].view(101, 62), torch.ones(62, device=dev), torch.zeros(62, device=dev))
        for rows, length in ((31, 3001), (62, 62_464), (3, 1)):
            kernels.l2_normalize(torch.randn(rows, length, device=dev).to(dtype))
        storage = torch.randn(31 * 1001 + 3, device=dev).to(dtype)
        kernels.l2_normalize(storage[3:].view(31, 1001))
        kernels.l2_normalize(storage[1:1 + 31 * 1001].view(31, 1001))
        for n in (1, 9, 4097):
            kernels.gelu(torch.randn(n, device=dev).to(dtype))
        kernels.gelu(torch.randn(1001, device=dev).to(dtype)[1:])
        for channels in (31, 62, 124):  # fused FFN: partial tiles, 1-pixel and 1-row images
            hidden = 4 * channels
            params = (torch.ones(channels, device=dev), torch.zeros(channels, device=dev),
                      torch.randn(hidden, channels, device=dev), torch.randn(hidden, 3, 3, device=dev),
                      torch.randn(channels, hidden, device=dev))
            for shape in ((2, channels, 17, 23), (1, channels, 1, 1), (1, channels, 1, 37)):
                kernels.ffn_nchw(torch.randn(*shape, device=dev).to(dtype), *params)
            # fused attention: the direct path (<= 32 pixels), partial tiles, and a multi-chunk Gram pass
            square = lambda: torch.randn(channels, channels, device=dev) / channels ** 0.5  # noqa: E731
            heads = channels // 31
            params = (square(), square(), square(), torch.ones(heads, device=dev), square(),
                      torch.zeros(channels, device=dev), torch.randn(channels, 3, 3, device=dev) / 3,
                      torch.randn(channels, 3, 3, device=dev) / 3)
            for shape in ((1, channels, 1, 1), (2, channels, 5, 6), (2, channels, 17, 23), (1, channels, 97, 131)):
                kernels.msa_nchw(torch.randn(*shape, device=dev).to(dtype), *params)
        # glue convolutions: partial tiles, 1-pixel images, batch, residual, both kernels of each geometry
        for cin in (3, 31, 62):
            for cout in (31, 62, 124):
                for ksize, stride in ((3, 1), (4, 2)):
                    w = torch.randn(cout, cin, ksize, ksize, device=dev) / (cin * ksize * ksize) ** 0.5
                    for shape in ((2, cin, 17, 37), (1, cin, 1, 1), (1, cin, 2, 45)):
                        if ksize == 4 and min(shape[2:]) < 2:
                            continue
                        x = torch.randn(*shape, device=dev).to(dtype)
                        y = kernels.conv_nchw(x, w, stride, 1)
                        kernels.conv_nchw(x, w, stride, 1, residual=torch.randn_like(y))
        for clow in (62, 124):  # decoder upsample + fuse
            folded = kernels.fold_upfuse(torch.randn(clow, clow // 2, 2, 2, device=dev),
                                         torch.randn(clow // 2, device=dev), torch.randn(clow // 2, clow, device=dev))
            for batch, height, width in ((2, 9, 13), (1, 1, 1), (1, 33, 5)):
                low = torch.randn(batch, clow, height, width, device=dev).to(dtype)
                skip = torch.randn(batch, clow // 2, 2 * height, 2 * width, device=dev).to(dtype)
                kernels.upfuse_nchw(low, skip, folded=folded)
    torch.cuda.synchronize()
    print("sanitize_kernels: all kernels ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())

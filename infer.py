#!/usr/bin/env python3
"""Recover 31-band spectral cubes (400-700 nm) from RGB images with MST++.

Examples:
  python infer.py data/                                  # every image in data/ -> outputs/cubes/
  python infer.py photo.jpg --route torch-fp16 --out-dir cubes/
  python infer.py scene.png --weights MST_plus_plus.pth --no-mat

For each input X it writes X.npy (float32 [31, H, W]), X.mat (key 'cube', [H, W, 31], when scipy is
installed) and X_preview.png (false colour plus the 450/550/650 nm bands). Images of different sizes
are batched separately. Any route of performance_latency.py --list-routes can be used. Images must be
at least 5x5 pixels; a batch estimated not to fit in memory is refused before anything runs
(docs/memory_estimates.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mstpp.cli import add_weights_arg, positive_int, run_cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files (jpg/png/tif, 8 or 16 bit; .npy RGB) or folders")
    p.add_argument("--out-dir", type=Path, default=Path("outputs") / "cubes", help="default outputs/cubes")
    p.add_argument("--route", default=None,
                   help="inference route (default: torch-fp32 on CPU, torch-tf32 with a GPU)")
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per batch (default 4)")
    p.add_argument("--no-mat", action="store_true", help="do not write .mat files")
    add_weights_arg(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch
    from tqdm import tqdm

    from mstpp.backends import ROUTES, RouteUnavailable, make_runner
    from mstpp.errors import UserError
    from mstpp.io import batches_by_size, find_images, read_rgb, write_cube
    from mstpp.weights import resolve_weights

    route = args.route or ("torch-tf32" if torch.cuda.is_available() else "torch-fp32")
    if route not in ROUTES:
        raise UserError(f"unknown route {route!r}; see performance_latency.py --list-routes")
    paths = find_images(args.inputs)
    if not paths:
        raise UserError(f"no images found in {', '.join(args.inputs)}")
    from mstpp.preflight import check_images
    check_images(paths, route, args.batch_size, "cuda" if torch.cuda.is_available() else "cpu")
    images = [read_rgb(p) for p in paths]
    state, source = resolve_weights(args.weights)
    print(source.description)
    try:
        runner = make_runner(route, state)
    except RouteUnavailable as exc:
        raise UserError(str(exc)) from None
    stems = _unique_stems(paths)
    with runner, tqdm(total=len(paths), desc=f"MST++ [{route}]", unit="img") as bar:
        for idx, batch in batches_by_size(images, args.batch_size):
            try:
                runner.prepare(tuple(batch.shape))
            except RouteUnavailable as exc:
                raise UserError(str(exc)) from None
            try:
                cubes = runner.run(runner.make_input(batch)).float().cpu().numpy()
            except torch.cuda.OutOfMemoryError:  # the estimate was short: still one line, no traceback
                raise UserError(f"{route} ran out of GPU memory on a {tuple(batch.shape)} batch; "
                                "try a smaller --batch-size or image") from None
            for i, cube in zip(idx, cubes):
                if not np.isfinite(cube).all():
                    print(f"warning: {paths[i]}: output has NaN/Inf values", file=sys.stderr)
                write_cube(cube, args.out_dir / stems[i], mat=not args.no_mat)
                bar.update(1)
    print(f"wrote {len(paths)} cube(s) to {args.out_dir}")
    return 0


def _unique_stems(paths: list[Path]) -> list[str]:
    # Two inputs named alike in different folders must not overwrite each other's cube.
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        n = seen.get(p.stem, 0)
        seen[p.stem] = n + 1
        out.append(p.stem if n == 0 else f"{p.stem}_{n}")
    return out


if __name__ == "__main__":
    sys.exit(run_cli(main))

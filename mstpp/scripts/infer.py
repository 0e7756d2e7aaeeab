"""Recover 31-band spectral cubes (400-700 nm) from RGB images with MST++.

For each input X it writes X.npy (float32 [31, H, W]), X.mat (key 'cube', [H, W, 31], when scipy is
installed) and X_preview.png (false colour plus the 450/550/650 nm bands). Images of different sizes
are batched separately. Any route of performance_latency.py --list-routes can be used. Images must be
at least 5x5 pixels; a batch estimated not to fit in memory is refused before anything runs
(docs/memory_estimates.md).

Examples:
  python infer.py data/samples                           # every image in data/samples -> outputs/cubes/
  python infer.py data/samples/synthetic_scene_00.png --out-dir cubes/ --no-mat
  python infer.py data/samples --weights model/mstpp_synthetic.pth --batch-size 2
  python infer.py data/samples --route torch-fp16        # needs a CUDA GPU
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from mstpp.cli import CliParser, add_weights_arg, positive_int, run_cli

#: Images per batch with a GPU. On the CPU one image at a time is as fast (the convolutions already use
#: every core) and the progress bar moves after each image instead of after the whole batch.
GPU_BATCH = 4


def build_parser() -> CliParser:
    p = CliParser(__doc__)
    p.add_argument("inputs", nargs="+", help="image files (jpg/png/tif, 8 or 16 bit; .npy RGB) or folders")
    p.add_argument("--out-dir", type=Path, default=Path("outputs") / "cubes",
                   help="where the cubes and previews go (default outputs/cubes)")
    p.add_argument("--route", default=None,
                   help="inference route (default: torch-fp32 on CPU, torch-tf32 with a GPU)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help=f"images per batch (default {GPU_BATCH} with a GPU, 1 on the CPU)")
    p.add_argument("--no-mat", action="store_true", help="do not write .mat files")
    add_weights_arg(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    import torch
    from tqdm import tqdm

    from mstpp.backends import ROUTES, RouteUnavailable, make_runner
    from mstpp.devices import default_device
    from mstpp.errors import UserError
    from mstpp.io import batches_by_size, find_images, read_rgb, write_cube
    from mstpp.weights import resolve_weights

    on_gpu = default_device() == "cuda"
    route = args.route or ("torch-tf32" if on_gpu else "torch-fp32")
    if route not in ROUTES:
        raise UserError(f"unknown route {route!r}; see performance_latency.py --list-routes")
    paths = find_images(args.inputs)
    if not paths:
        raise UserError(f"no images found in {', '.join(args.inputs)}")
    batch_size = args.batch_size or (GPU_BATCH if on_gpu else 1)
    from mstpp.preflight import check_images
    check_images(paths, route, batch_size, default_device())
    images = [read_rgb(p) for p in paths]
    state, source = resolve_weights(args.weights)
    print(source.description)
    try:
        runner = make_runner(route, state)
    except RouteUnavailable as exc:
        raise UserError(str(exc)) from None
    stems = _unique_stems(paths)
    batches = batches_by_size(images, batch_size)
    with runner, tqdm(total=len(paths), desc=f"MST++ [{route}]", unit="img") as bar:
        for idx, batch in batches:
            # A batch is one call: say what runs now, so a long first batch does not look like a hang.
            bar.set_postfix_str(f"running {len(idx)} x {batch.shape[2]}x{batch.shape[3]}")
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
        bar.set_postfix_str("done")
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

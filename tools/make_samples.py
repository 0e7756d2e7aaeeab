#!/usr/bin/env python3
"""Write the sample RGB images shipped in data/samples/ (deterministic; held-out synthetic scenes).

Each sample is an evaluation scene of the synthetic generator (482x512, NTIRE 2022 camera pipeline),
saved as PNG of the camera's 8-bit output, with its ground-truth cube as <name>_gt.npy beside it when
--with-cubes is given (cubes are large and not shipped).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out-dir", type=Path, default=Path("data") / "samples")
    p.add_argument("--indices", type=int, nargs="+", default=[0, 1, 4], help="evaluation scene indices")
    p.add_argument("--with-cubes", action="store_true")
    args = p.parse_args()
    import cv2
    import numpy as np

    from mstpp.synth.generator import eval_scene

    args.out_dir.mkdir(parents=True, exist_ok=True)
    for i in args.indices:
        scene = eval_scene(i)
        rgb = scene.rendered.rgb8[0].permute(1, 2, 0).numpy()
        path = args.out_dir / f"synthetic_scene_{i:02d}.png"
        cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
        if args.with_cubes:
            np.save(path.with_name(path.stem + "_gt.npy"), scene.cubes[0].numpy())
        print(f"wrote {path} ({scene.meta[0].get('illuminant')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

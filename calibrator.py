#!/usr/bin/env python3
"""INT8 calibration for MST++: activation ranges at every convolution input, saved as a cache file.

Runs PyTorch FP32 over calibration images - real ones (default data/samples, plus any --images) and
synthetic NTIRE-style training scenes - and records, per convolution input, max |x| and a high
percentile of |x|. The cache feeds `mst_trt_api.py --mode INT8 --calib-cache FILE` (Q/DQ scales =
range / 127); `mst_onnxparser.py --mode INT8` calibrates on the same images through onnxruntime.

Examples:
  python calibrator.py                                       # -> build/calib.json
  python calibrator.py --images photos/ --synthetic 16 --percentile 99.9 --cache build/calib.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mstpp.cli import add_weights_arg, run_cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", nargs="*", default=(), help="real RGB images or folders (default data/samples)")
    p.add_argument("--synthetic", type=int, default=4, help="synthetic training scenes to add (default 4)")
    p.add_argument("--crop", type=int, default=256, help="centre crop in pixels (default 256; 0 = full images)")
    p.add_argument("--method", choices=("max", "percentile"), default="percentile",
                   help="which range the cache serves by default (both are stored)")
    p.add_argument("--percentile", type=float, default=99.99, help="percentile of |x| (default 99.99)")
    p.add_argument("--cache", type=Path, default=Path("build") / "calib.json", help="output cache file")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    add_weights_arg(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mstpp.errors import UserError

    if not 50 < args.percentile <= 100:
        raise UserError("--percentile must be in (50, 100]")
    if args.synthetic < 0 or args.crop < 0:
        raise UserError("--synthetic and --crop must be >= 0")
    import torch

    from mstpp.calibration import calibrate, calibration_images, save_cache
    from mstpp.weights import resolve_weights, state_fingerprint

    state, source = resolve_weights(args.weights)
    print(source.description)
    images = calibration_images(args.images, args.synthetic, args.crop or None)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ranges = calibrate(state, images, args.percentile, device)
    path = save_cache(args.cache, ranges, args.method, args.percentile, len(images), state_fingerprint(state))
    print(f"{len(ranges)} convolution inputs calibrated on {len(images)} images -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

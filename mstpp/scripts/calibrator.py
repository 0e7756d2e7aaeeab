"""INT8 calibration for MST++: activation ranges at every convolution input, saved as a cache file.

Runs PyTorch FP32 over calibration images - real ones (default data/samples, plus any --images) and
synthetic NTIRE-style training scenes - and records, per convolution input, max |x| and a high
percentile of |x|. The cache feeds `mst_trt_api.py --mode INT8 --calib-cache FILE` (Q/DQ scales =
range / 127); `mst_onnxparser.py --mode INT8` calibrates on the same images through onnxruntime.

Examples:
  python calibrator.py                                       # -> build/calib.json
  python calibrator.py --images data/samples --synthetic 16 --percentile 99.9 --cache build/calib.json
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mstpp.cli import CliParser, add_device_arg, add_weights_arg, non_negative_int, run_cli


def build_parser() -> CliParser:
    p = CliParser(__doc__)
    p.add_argument("--images", nargs="*", default=(), metavar="PATH",
                   help="real RGB images or folders (default data/samples)")
    p.add_argument("--synthetic", type=non_negative_int, default=4,
                   help="synthetic training scenes to add (default 4)")
    p.add_argument("--crop", type=non_negative_int, default=256,
                   help="centre crop in pixels (default 256; 0 = full images)")
    p.add_argument("--method", choices=("max", "percentile"), default="percentile",
                   help="which range the cache serves by default; both are stored (default percentile)")
    p.add_argument("--percentile", type=float, default=99.99, help="percentile of |x|, in (50, 100] (default 99.99)")
    p.add_argument("--cache", type=Path, default=Path("build") / "calib.json",
                   help="output cache file (default build/calib.json)")
    add_device_arg(p)
    add_weights_arg(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from mstpp.errors import UserError

    if not 50 < args.percentile <= 100:
        raise UserError("--percentile must be in (50, 100]")
    from mstpp.calibration import calibrate, calibration_images, save_cache
    from mstpp.devices import resolve_device
    from mstpp.weights import resolve_weights, state_fingerprint

    device = resolve_device(args.device)
    state, source = resolve_weights(args.weights)
    print(source.description)
    images = calibration_images(args.images, args.synthetic, args.crop or None)
    ranges = calibrate(state, images, args.percentile, device)
    path = save_cache(args.cache, ranges, args.method, args.percentile, len(images), state_fingerprint(state))
    print(f"{len(ranges)} convolution inputs calibrated on {len(images)} images -> {path}")
    return 0

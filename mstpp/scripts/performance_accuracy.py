"""Accuracy of every MST++ route against PyTorch FP32 (TF32 off), and against ground truth.

Per route: abs and rel error against torch-fp32 (mean, median, p99, max) on the full image and on the
NTIRE centre crop (128 px off each border), NaN/Inf counts, and on the synthetic held-out scenes,
which have ground truth, MRAE / RMSE / PSNR / SAM. Real images: data/samples and any --images.

Writes <out-dir>/<tag>.json and .csv; make_report.py adds them to docs/REPORT.md.

Examples:
  python performance_accuracy.py                                   # default routes for this machine
  python performance_accuracy.py --quick                           # CPU smoke profile (128 px crops)
  python performance_accuracy.py --routes torch-fp16,ort-cuda-fp16 --images data/samples --synthetic 10  # GPU
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mstpp.cli import CliParser, add_device_arg, add_weights_arg, file_stem, non_negative_int, run_cli

GPU_ROUTES = ("torch-tf32", "torch-fp16", "torch-bf16", "ort-cuda", "ort-cuda-fp16", "trt-parser-fp32",
              "trt-parser-fp16", "trt-api-fp32", "trt-api-fp16", "fused-fp16")
CPU_ROUTES = ("ort-cpu",)
DEFAULT_IMAGES = Path("data") / "samples"


def build_parser() -> CliParser:
    p = CliParser(__doc__)
    p.add_argument("--routes", default=None,
                   help=f"comma-separated routes (default: those this machine can run: {','.join(GPU_ROUTES)} "
                        f"with a GPU, {','.join(CPU_ROUTES)} on the CPU; torch-fp32 is the reference, always run)")
    p.add_argument("--images", nargs="*", default=[str(DEFAULT_IMAGES)], metavar="PATH",
                   help="real RGB images or folders (default data/samples)")
    p.add_argument("--synthetic", type=non_negative_int, default=None,
                   help="held-out synthetic scenes with ground truth (default 8; 2 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="CPU smoke profile: 128 px centre crops, 2 synthetic scenes (default without a GPU)")
    add_weights_arg(p)
    add_device_arg(p)
    p.add_argument("--out-dir", type=Path, default=Path("docs") / "results",
                   help="where <tag>.json and <tag>.csv go (default docs/results)")
    p.add_argument("--tag", type=file_stem, default=None,
                   help="result file stem (default accuracy-<gpu or cpu>[-quick])")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, argv)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from mstpp.backends import ROUTES
    from mstpp.bench.accuracy import (REFERENCE_ROUTE, evaluate_routes, real_samples, synthetic_samples,
                                      write_accuracy)
    from mstpp.bench.environment import capture_environment, environment_slug
    from mstpp.devices import resolve_device
    from mstpp.errors import UserError
    from mstpp.metrics import REL_ERROR_FLOOR
    from mstpp.weights import resolve_weights

    device = resolve_device(args.device)
    quick = args.quick or device == "cpu"
    if args.routes:
        routes = [r.strip() for r in args.routes.split(",") if r.strip()]
        unknown = [r for r in routes if r not in ROUTES]
        if unknown:
            raise UserError(f"unknown route {unknown[0]!r}; see performance_latency.py --list-routes")
    else:
        routes = list(GPU_ROUTES if device.startswith("cuda") else CPU_ROUTES)
    n_synth = args.synthetic if args.synthetic is not None else (2 if quick else 8)
    state, source = resolve_weights(args.weights)
    print(source.description)
    samples = real_samples([p for p in args.images if Path(p).exists() or p != str(DEFAULT_IMAGES)])
    crop = 128 if quick else None
    if crop:
        samples = [s.__class__(s.name, s.rgb[:, :crop, :crop].copy(), None, s.source) for s in samples]
    samples += synthetic_samples(n_synth, crop)
    if not samples:
        raise UserError("no images: pass --images or --synthetic N")
    print(f"{len(samples)} images ({sum(s.gt is not None for s in samples)} with ground truth) on {device}; "
          f"reference {REFERENCE_ROUTE}; routes: {', '.join(routes)}")
    rows = evaluate_routes(routes, samples, state, device, progress=not args.no_progress)
    env = capture_environment(device)
    tag = args.tag or f"accuracy-{environment_slug(env)}" + ("-quick" if quick else "")
    meta = {"tag": tag, "weights": source.description, "rel_error_floor": REL_ERROR_FLOOR,
            "reference": f"{REFERENCE_ROUTE} (PyTorch FP32 eager, TF32 off)",
            "images": [s.name for s in samples], "quick": quick,
            "centre_crop": "128 px off each border (images larger than 256 px)"}
    json_path, _ = write_accuracy(rows, env, meta, args.out_dir, tag)
    _print_table(rows)
    print(f"wrote {json_path}")
    return 0


def _print_table(rows) -> None:
    cols = ("mean_abs", "p99_abs", "max_abs", "mean_rel", "centre_mean_abs", "nan_count", "mrae", "psnr")
    print(f"\n{'route':<22}{'status':<8}" + "".join(f"{c:>16}" for c in cols))
    for r in rows:
        vals = "".join(f"{r[c]:>16.3g}" if isinstance(r.get(c), (int, float)) else f"{'-':>16}" for c in cols)
        print(f"{r['route']:<22}{r['status']:<8}{vals}  {r.get('reason', '')[:60]}")

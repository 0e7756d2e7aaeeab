"""What every command-line script shares: argument types, the weights line, error handling."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from .errors import UserError

EXIT_USER_ERROR = 2


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated positive integers, e.g. ``1,2,4``."""
    return [positive_int(part.strip()) for part in text.split(",") if part.strip()]


def add_shape_args(parser: argparse.ArgumentParser, batch: int = 1) -> None:
    """--batch_size/--height/--width with the 2022 benchmark shape (1x3x512x482) as default."""
    parser.add_argument("--batch_size", "--batch-size", type=positive_int, default=batch,
                        help=f"batch size B of the [B, 3, H, W] input (default {batch})")
    parser.add_argument("--height", type=positive_int, default=512, help="input height H (default 512)")
    parser.add_argument("--width", type=positive_int, default=482,
                        help="input width W (default 482; 512x482 is an ARAD_1K frame transposed)")


def add_weights_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="MST++ weights: an official checkpoint (.pth with 'state_dict'), a bare state "
                             "dict, an .npz from get_weights.py, or an ONNX file from torch2onnx.py "
                             "(default: the shipped weights, else a seeded random initialisation)")


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main`` and turn a UserError into one line on stderr and exit code 2 (no traceback)."""
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)

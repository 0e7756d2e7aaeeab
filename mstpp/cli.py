"""The one command-line layer of every script: parser, argument types, shared options, error handling.

A script module (``mstpp/scripts/X.py``) builds a :class:`CliParser` from its docstring and runs its work
through :func:`run_cli`::

    def build_parser() -> CliParser:
        p = CliParser(__doc__)
        p.add_argument("--size", type=positive_int, default=4, help="tiles per side")
        return p

    def main(argv=None) -> int:
        return run_cli(_run, argv)

User mistakes (bad arguments, or a :class:`UserError` raised anywhere below) end as one ``error: ...``
line on stderr and exit status 2: no usage dump, no traceback.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from .errors import UserError

__all__ = ["EXIT_USER_ERROR", "CliParser", "UsageError", "UserError", "add_device_arg", "add_shape_args",
           "add_weights_arg", "bhw_shape", "device_name", "existing_dir", "existing_file", "existing_path",
           "file_stem", "int_list", "non_negative_float", "non_negative_int", "positive_float", "positive_int",
           "run_cli"]

EXIT_USER_ERROR = 2


class UsageError(UserError):
    """A command line argparse rejected (unknown option, bad value, missing argument)."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's layout and appends ``(default: X)`` to every option help that does not
    already state its default. Flags (store_true) are off by default and say nothing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.nargs == 0:
            return text
        if not action.option_strings and action.nargs in ("+", "*"):
            return text
        shown = action.default
        if isinstance(shown, (list, tuple)):
            shown = " ".join(str(v) for v in shown) if shown else "none"
        # argparse %-formats help strings: a literal % in the shown default must be doubled.
        return f"{text} (default: {str(shown).replace('%', '%%')})"


def split_docstring(doc: str) -> tuple[str, str]:
    """(description, examples) of a script docstring whose examples start at a line ``Examples:``.

    The examples go to the end of ``--help`` so that the last thing a user reads is what to type.
    """
    lines = (doc or "").strip("\n").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().lower() in ("examples:", "example:")), None)
    if start is None:
        return "\n".join(lines).strip(), ""
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith((" ", "\t"))):
        end += 1
    examples = "\n".join(lines[start:end]).rstrip()
    rest = "\n".join(lines[:start] + lines[end:]).strip()
    return rest, examples


class CliParser(argparse.ArgumentParser):
    """The parser of every script: the docstring as description, its ``Examples:`` block as epilog,
    defaults shown in every option's help, and errors raised as :class:`UsageError`.

    Raising (instead of argparse's print-usage-and-exit) lets :func:`run_cli` print the one ``error:``
    line and lets tests call ``main(argv)`` in-process and read the exit status.
    """

    def __init__(self, doc: str | None = None, **kwargs) -> None:
        description, examples = split_docstring(doc or "")
        kwargs.setdefault("description", description or None)
        kwargs.setdefault("epilog", examples or None)
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    @property
    def examples(self) -> list[str]:
        """The example command lines of the epilog (``python X.py ...``), comments stripped."""
        out = []
        for line in (self.epilog or "").splitlines()[1:]:
            command = line.split("  #", 1)[0].strip()
            if command:
                out.append(command)
        return out


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; a :class:`UserError` becomes one ``error:`` line on stderr and status 2."""
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


# ---------------------------------------------------------------- argument types

def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1 (expected a positive integer)")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated positive integers, e.g. ``1,2,4`` -> sorted, without repeats."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of positive integers")
    return sorted({positive_int(t) for t in items})


def bhw_shape(text: str) -> tuple[int, int, int]:
    """argparse type: ``BxHxW`` with positive integers, e.g. ``1x512x482``."""
    m = re.fullmatch(r"(\d+)x(\d+)x(\d+)", text.strip())
    if not m or min(int(g) for g in m.groups()) < 1:
        raise argparse.ArgumentTypeError(f"expected BxHxW with positive integers, e.g. 1x512x482, got {text!r}")
    return int(m[1]), int(m[2]), int(m[3])


def file_stem(text: str) -> str:
    """argparse type: a result-file stem (letters, digits, ``_ . -``; no folders)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise argparse.ArgumentTypeError(f"a tag is a file name stem (letters, digits, '_', '.', '-'), got {text!r}")
    return text


def existing_path(text: str) -> Path:
    """argparse type: a file or folder that exists."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"not found: {text}")
    return path


def existing_file(text: str) -> Path:
    """argparse type: a file that exists."""
    path = existing_path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"not a file: {text}")
    return path


def existing_dir(text: str) -> Path:
    """argparse type: a folder that exists."""
    path = existing_path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"not a folder: {text}")
    return path


def device_name(text: str) -> str:
    """argparse type: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (checked against the machine later, by
    :func:`mstpp.devices.resolve_device`, so that bad syntax is reported before torch loads)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


# ---------------------------------------------------------------- options shared by several scripts

def add_shape_args(parser: argparse.ArgumentParser, batch: int = 1) -> None:
    """--batch_size/--height/--width with the 2022 benchmark shape (1x3x512x482) as default."""
    parser.add_argument("--batch_size", "--batch-size", type=positive_int, default=batch,
                        help=f"batch size B of the [B, 3, H, W] input (default {batch})")
    parser.add_argument("--height", type=positive_int, default=512, help="input height H (default 512)")
    parser.add_argument("--width", type=positive_int, default=482,
                        help="input width W (default 482; 512x482 is an ARAD_1K frame transposed)")


def add_weights_arg(parser: argparse.ArgumentParser) -> None:
    """--weights: any MST++ weights file ``mstpp.weights.resolve_weights`` reads."""
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="MST++ weights: an official checkpoint (.pth with 'state_dict'), a bare state "
                             "dict, an .npz from get_weights.py, or an ONNX file from torch2onnx.py "
                             "(default: the shipped weights, else a seeded random initialisation)")


def add_device_arg(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """--device: where PyTorch work runs; resolve it with :func:`mstpp.devices.resolve_device`."""
    parser.add_argument("--device", type=device_name, default=default,
                        help="auto, cpu, cuda or cuda:N (default: cuda when a CUDA GPU is visible, else cpu)")

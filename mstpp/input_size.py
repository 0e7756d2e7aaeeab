"""The smallest input MST++ accepts, checked in one place before any route, export or engine build.

MST++ reflect-pads H and W up to a multiple of 8, and reflect padding needs every pad to be smaller
than the side it pads. Sizes 1-4 fail (PyTorch: "Padding size should be less than the corresponding
input dimension"; ONNX Runtime rejects the Pad node the same way); 5 and up work for any batch.
"""
from __future__ import annotations

from architecture import MIN_SIZE

from .errors import UserError

#: Smallest height and width (pixels) of an MST++ input.
MIN_INPUT_SIZE = MIN_SIZE


def size_problem(height: int, width: int) -> str | None:
    """Why an input of ``height`` x ``width`` cannot run, or None when it can."""
    if height >= MIN_INPUT_SIZE and width >= MIN_INPUT_SIZE:
        return None
    return (f"is {height}x{width} (HxW), but MST++ needs at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} pixels "
            f"(its reflect padding to a multiple of 8 needs each side >= {MIN_INPUT_SIZE})")


def check_input_size(height: int, width: int, what: str = "the input") -> None:
    """Raise UserError naming the smallest size when ``height`` x ``width`` is too small for MST++.

    ``what`` names the input in the message, e.g. an image path or "--height/--width".
    """
    problem = size_problem(int(height), int(width))
    if problem is not None:
        raise UserError(f"{what} {problem}")

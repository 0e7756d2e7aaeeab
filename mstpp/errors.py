"""Errors a user can cause and fix. Scripts print them as one line and exit non-zero."""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a missing file, a wrong checkpoint, an unsupported option.

    The message is shown as-is, without a traceback, so it must say what is wrong and what to do.
    """


class WeightsError(UserError):
    """A weights file that is not a usable MST++ checkpoint."""


class ImageError(UserError):
    """An image that cannot be read or is not an RGB image."""

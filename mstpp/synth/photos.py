"""Scene layouts from real photographs bundled with scikit-image (no downloads).

Each photo is resized/cropped to 512 x 512, split into SLIC superpixels, and summarised as:
  labels [512, 512] int64 superpixel ids, luminance [512, 512] linear luminance in [0, 1],
  sp_rgb [S, 3] mean linear colour per superpixel (colour photos; grey for grey photos).
A synthetic scene keeps the photo's layout (superpixels) and shading (luminance) but replaces the
colours by measured reflectance spectra (see ``generator``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

PHOTO_SIZE = 512
N_SEGMENTS = 400

# Only images that ship inside the scikit-image wheel (skimage/data/*.png|jpg); the others in
# skimage.data are fetched with pooch and would need the network. Split by photo: no photo is in both.
TRAIN_PHOTOS = ("astronaut", "rocket", "immunohistochemistry", "retina", "colorwheel", "logo",
                "camera", "brick", "grass", "gravel", "moon", "cell", "clock")
EVAL_PHOTOS = ("chelsea", "coffee", "coins", "page")
PHOTO_SPLITS = {"train": TRAIN_PHOTOS, "eval": EVAL_PHOTOS}


@dataclass(frozen=True)
class PhotoLayout:
    """One photo's layout. labels [H, W] int64; luminance [H, W] float32; sp_rgb [S, 3]; is_colour."""

    name: str
    labels: torch.Tensor
    luminance: torch.Tensor
    sp_rgb: torch.Tensor
    is_colour: bool


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _load_photo(name: str) -> np.ndarray:
    """float64 [512, 512, 3] sRGB in [0, 1] (grey photos repeated over 3 channels)."""
    import cv2
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3].astype(np.float64) / (255.0 if img.max() > 1 else 1.0)
    h, w = img.shape[:2]
    scale = PHOTO_SIZE / min(h, w)  # cover 512 x 512, then centre-crop
    nh, nw = max(PHOTO_SIZE, round(h * scale)), max(PHOTO_SIZE, round(w * scale))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    top, left = (nh - PHOTO_SIZE) // 2, (nw - PHOTO_SIZE) // 2
    return np.clip(img[top:top + PHOTO_SIZE, left:left + PHOTO_SIZE], 0.0, 1.0)


@lru_cache(maxsize=None)
def photo_layout(name: str) -> PhotoLayout:
    """SLIC layout of one bundled photo (cached per process; SLIC is deterministic)."""
    from skimage.segmentation import slic

    srgb = _load_photo(name)
    is_colour = bool(np.abs(srgb - srgb.mean(2, keepdims=True)).max() > 0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Grey photos are stored as 3 equal channels, so one call works for both kinds.
        labels = slic(srgb, n_segments=N_SEGMENTS, compactness=10.0, start_label=0, channel_axis=-1)
    lin = _srgb_to_linear(srgb)
    lum = lin @ np.array([0.2126, 0.7152, 0.0722])
    n = int(labels.max()) + 1
    counts = np.bincount(labels.ravel(), minlength=n).clip(min=1)
    sp_rgb = np.stack([np.bincount(labels.ravel(), lin[..., c].ravel(), minlength=n) / counts
                       for c in range(3)], axis=1)
    return PhotoLayout(name=name, labels=torch.from_numpy(labels.astype(np.int64)),
                       luminance=torch.from_numpy(lum.astype(np.float32)),
                       sp_rgb=torch.from_numpy(sp_rgb.astype(np.float32)), is_colour=is_colour)


def layouts_for_split(split: str, names: tuple[str, ...] | None = None) -> list[PhotoLayout]:
    """Layouts of the photos of ``split`` (or of ``names``, a subset, e.g. for fast tests)."""
    return [photo_layout(n) for n in (names if names is not None else PHOTO_SPLITS[split])]

"""Images in, spectral cubes out.

MST++ preprocessing (as in the NTIRE 2022 code): read BGR, convert to RGB, float32, and min-max
normalise the whole image (all channels together) to [0, 1]. Reflect padding to a multiple of 8
happens inside the model.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .errors import ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
#: Band centres of the MST++ output (nm).
WAVELENGTHS_NM = np.arange(400, 701, 10)


def _cv2():
    import cv2  # opencv is only needed for image files

    return cv2


def normalise_minmax(rgb: np.ndarray, origin: str = "image") -> np.ndarray:
    """[..., any] float array -> same shape in [0, 1] by the global min and max (MST++ preprocessing)."""
    rgb = rgb.astype(np.float32, copy=False)
    if not np.isfinite(rgb).all():
        raise ImageError(f"{origin}: contains NaN or Inf values")
    lo, hi = float(rgb.min()), float(rgb.max())
    if hi <= lo:
        raise ImageError(f"{origin}: is constant (every value {lo:g}); it cannot be min-max normalised")
    return (rgb - lo) / (hi - lo)


def _hwc_from_npy(arr: np.ndarray, origin: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return arr
    if arr.ndim == 3 and arr.shape[0] == 3:
        return np.transpose(arr, (1, 2, 0))
    raise ImageError(f"{origin}: array of shape {arr.shape} is not an RGB image ([H, W, 3] or [3, H, W])")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an RGB image (8/16-bit jpg/png/tif/bmp, or .npy in RGB order) -> [3, H, W] float32 in [0, 1].

    Raises:
        ImageError: missing file, unreadable/corrupt file, grayscale image, unsupported array.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ImageError(f"{path}: not a readable .npy array ({exc})") from None
        hwc = _hwc_from_npy(np.asarray(arr), str(path))
    elif suffix in IMAGE_SUFFIXES:
        cv2 = _cv2()
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # keeps 16-bit depth and alpha
        if img is None:
            raise ImageError(f"{path}: cannot be decoded as an image (corrupt or not an image file)")
        if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
            raise ImageError(f"{path}: is a grayscale image; MST++ needs a 3-channel RGB image")
        if img.shape[2] == 4:
            img = img[:, :, :3]  # alpha carries no colour
        hwc = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise ImageError(f"{path}: unsupported file type {suffix!r}; use one of "
                         f"{', '.join(IMAGE_SUFFIXES + ('.npy',))}")
    return np.ascontiguousarray(np.transpose(normalise_minmax(hwc, str(path)), (2, 0, 1)))


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and directories into a sorted list of image files (directories: one level)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES + (".npy",)))
        elif p.exists():
            found.append(p)
        else:
            raise ImageError(f"image not found: {p}")
    return found


def batches_by_size(images: Sequence[np.ndarray], max_batch: int) -> list[tuple[list[int], torch.Tensor]]:
    """Group [3, H, W] images of equal size into batches [B, 3, H, W] of at most ``max_batch``.

    Returns (indices into ``images``, batch) pairs, so images of different sizes are never padded
    together and results can be put back in input order.
    """
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        by_shape[tuple(img.shape)].append(i)
    out = []
    for idx in by_shape.values():
        for start in range(0, len(idx), max_batch):
            chunk = idx[start:start + max_batch]
            out.append((chunk, torch.from_numpy(np.stack([images[i] for i in chunk]))))
    return out


# --- cube rendering -------------------------------------------------------------------------------

def _cie1931_cmf(wl: np.ndarray) -> np.ndarray:
    """CIE 1931 2-degree colour-matching functions from the multi-lobe Gaussian fit of
    Wyman, Sloan & Shirley (JCGT 2013). wl: [N] nm -> [N, 3] (x-bar, y-bar, z-bar)."""
    def g(x: np.ndarray, mu: float, s1: float, s2: float) -> np.ndarray:
        return np.exp(-0.5 * ((x - mu) / np.where(x < mu, s1, s2)) ** 2)

    x = 1.056 * g(wl, 599.8, 37.9, 31.0) + 0.362 * g(wl, 442.0, 16.0, 26.7) - 0.065 * g(wl, 501.1, 20.4, 26.2)
    y = 0.821 * g(wl, 568.8, 46.9, 40.5) + 0.286 * g(wl, 530.9, 16.3, 31.1)
    z = 1.217 * g(wl, 437.0, 11.8, 36.0) + 0.681 * g(wl, 459.0, 26.0, 13.8)
    return np.stack([x, y, z], axis=1)


_XYZ_TO_LINEAR_SRGB = np.array([[3.2406, -1.5372, -0.4986],
                                [-0.9689, 1.8758, 0.0415],
                                [0.0557, -0.2040, 1.0570]])


def cube_to_srgb(cube: np.ndarray) -> np.ndarray:
    """False-colour rendering of a cube [31, H, W] (400-700 nm) -> uint8 sRGB [H, W, 3].

    The cube is integrated against the CIE 1931 observer, converted to sRGB, scaled so that the
    99th percentile maps to white (cubes have no absolute scale), and gamma-encoded.
    """
    cmf = _cie1931_cmf(WAVELENGTHS_NM.astype(np.float64))  # [31, 3]
    # Negative radiance is unphysical (an untrained or low-precision model can produce it): clip first.
    xyz = np.tensordot(np.clip(np.nan_to_num(cube.astype(np.float64)), 0, None), cmf, axes=([0], [0]))  # [H, W, 3]
    rgb = np.clip(xyz @ _XYZ_TO_LINEAR_SRGB.T, 0, None)
    scale = np.percentile(rgb, 99) or 1.0
    rgb = np.clip(rgb / scale, 0, 1)
    srgb = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)
    return (srgb * 255 + 0.5).astype(np.uint8)


def preview_image(cube: np.ndarray, bands_nm: Sequence[int] = (450, 550, 650)) -> np.ndarray:
    """A strip [H, W * (1 + len(bands_nm)), 3] uint8: false colour, then each band in grey."""
    tiles = [cube_to_srgb(cube)]
    finite = np.nan_to_num(cube)
    hi = float(np.percentile(finite, 99.5)) or 1.0
    lo = min(float(finite.min()), 0.0)
    for nm in bands_nm:
        band = finite[int(np.argmin(np.abs(WAVELENGTHS_NM - nm)))]
        grey = (np.clip((band - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)
        tiles.append(np.repeat(grey[:, :, None], 3, axis=2))
    return np.concatenate(tiles, axis=1)


def write_cube(cube: np.ndarray, out_stem: str | Path, mat: bool = True, preview: bool = True) -> list[Path]:
    """Save a cube [31, H, W] as ``<stem>.npy`` (+ ``.mat`` with key 'cube' [H, W, 31] when scipy is
    installed, + ``_preview.png``). Returns the written paths."""
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    cube = np.asarray(cube, dtype=np.float32)
    written = [out_stem.with_suffix(".npy")]
    np.save(written[0], cube)
    if mat:
        try:
            from scipy.io import savemat
        except ImportError:
            pass
        else:
            written.append(out_stem.with_suffix(".mat"))
            savemat(written[-1], {"cube": np.transpose(cube, (1, 2, 0)), "bands": WAVELENGTHS_NM[None, :]},
                    do_compression=True)
    if preview:
        written.append(out_stem.parent / f"{out_stem.name}_preview.png")
        _cv2().imwrite(str(written[-1]), preview_image(cube)[:, :, ::-1])
    return written


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file without decoding its pixels where the format allows it.

    Lets size and memory checks run before a large image is read. Pillow reads the header only; .npy
    files are memory-mapped; without Pillow the image is decoded by ``read_rgb``'s reader.

    Raises:
        ImageError: as ``read_rgb`` for files that cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ImageError(f"{path}: not a readable .npy array ({exc})") from None
        hwc_shape = _hwc_from_npy(arr, str(path)).shape
        return int(hwc_shape[0]), int(hwc_shape[1])
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        # Pillow refuses very large images as "decompression bombs" even when only asked for the size,
        # and those are exactly the ones whose size must be known before decoding.
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path) as img:
                width, height = img.size
            return int(height), int(width)
        except Exception:  # let the full reader produce its one-line message for this file
            pass
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    _, height, width = read_rgb(path).shape
    return int(height), int(width)

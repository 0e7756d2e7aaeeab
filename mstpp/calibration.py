"""INT8 calibration: activation ranges at every convolution input, from real and synthetic images.

Both TensorRT routes use the same images: the network-API builder reads the per-module ranges stored in
the cache file; the ONNX routes collect tensor ranges of the ONNX graph from them (``mstpp.onnx.quantize``).
Cache file (JSON): ``{"method", "percentile", "images", "weights", "ranges": {module: {"max", "pXX"}}}``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from architecture import SpectralMSA

from .errors import UserError
from .io import find_images, read_rgb
from .resources import data_dir

#: Percentile of |x| stored beside max |x| (the network-API route builds with it by default).
DEFAULT_PERCENTILE = 99.99
#: Elements sampled per tensor for the percentile (torch.quantile limits its input size).
_SAMPLE = 1 << 20


def calibration_images(paths: Sequence[str | Path] = (), synthetic: int = 4, crop: int | None = 256,
                       seed: int = 0) -> list[np.ndarray]:
    """RGB images [3, H, W] in [0, 1]: real images from ``paths`` (default data/samples) and
    ``synthetic`` scenes from the physically based generator, centre-cropped to ``crop`` pixels."""
    samples = data_dir() / "samples"  # the sample photos shipped in data/
    files = find_images(paths or ([samples] if samples.is_dir() else []))
    images = [read_rgb(p) for p in files]
    if synthetic:
        # Training-split scenes: calibrating on the held-out evaluation scenes would flatter INT8.
        from .synth.generator import SyntheticGenerator

        gen = SyntheticGenerator("train", seed=seed, device="cpu")
        size = (crop, crop) if crop else (482, 512)
        images += [gen.scenes(i, 1, size).inputs[0].numpy() for i in range(synthetic)]
    if not images:
        raise UserError("no calibration images: pass --images DIR or allow synthetic scenes")
    if crop:
        images = [_centre_crop(img, crop) for img in images]
    return images


def fit_image(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """[3, h, w] -> [3, height, width]: transposed when that fits exactly (ARAD frames are 482x512,
    the benchmark shape 512x482), else resized; calibration statistics survive either."""
    if img.shape[1:] == (height, width):
        return img
    if img.shape[1:] == (width, height):
        return np.ascontiguousarray(img.transpose(0, 2, 1))
    import torch.nn.functional as F

    resized = F.interpolate(torch.from_numpy(np.ascontiguousarray(img))[None].float(), size=(height, width),
                            mode="area")
    return resized[0].numpy()


def _centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    _, h, w = img.shape
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return np.ascontiguousarray(img[:, top:top + size, left:left + size])


class RangeObserver:
    """Forward hooks that record max |x| and a high percentile of |x| at each convolution input.

    Keys are the module names the network builder uses: ``conv_in``, ``...pos_emb.0``,
    ``...to_q``/``to_k``/``to_v`` (the S-MSA input), ``...proj`` (the attention output).
    """

    def __init__(self, model: nn.Module, percentile: float = DEFAULT_PERCENTILE) -> None:
        self.percentile = percentile
        self.max: dict[str, float] = {}
        self.pct: dict[str, list[float]] = {}
        self.handles = []
        for name, module in model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                self.handles.append(module.register_forward_pre_hook(self._pre(name)))
            elif isinstance(module, SpectralMSA):
                keys = [f"{name}.to_q", f"{name}.to_k", f"{name}.to_v"]
                self.handles.append(module.register_forward_pre_hook(self._pre(*keys)))
                self.handles.append(module.attn_out.register_forward_hook(
                    lambda _m, _i, out, key=f"{name}.proj": self._record((key,), out)))

    def _pre(self, *keys: str):
        return lambda _module, inputs: self._record(keys, inputs[0])

    def _record(self, keys: Iterable[str], x: torch.Tensor) -> None:
        a = x.detach().abs().float().flatten()
        amax = float(a.max())
        if a.numel() > _SAMPLE:
            a = a[torch.randint(0, a.numel(), (_SAMPLE,), generator=torch.Generator().manual_seed(0))]
        pct = float(torch.quantile(a, self.percentile / 100.0))
        for key in keys:
            self.max[key] = max(self.max.get(key, 0.0), amax)
            self.pct.setdefault(key, []).append(pct)

    def ranges(self) -> dict[str, dict[str, float]]:
        tag = f"p{self.percentile:g}"
        return {k: {"max": self.max[k], tag: float(np.max(self.pct[k]))} for k in sorted(self.max)}

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def calibrate(state_dict: Mapping[str, torch.Tensor], images: Sequence[np.ndarray], percentile: float = DEFAULT_PERCENTILE,
              device: str = "cpu", progress: bool = True) -> dict[str, dict[str, float]]:
    """Run MST++ (FP32) over ``images`` and return the ranges at every convolution input."""
    from tqdm import tqdm

    from architecture import build_model

    model = build_model("mst_plus_plus")
    model.load_state_dict(state_dict)
    model = model.eval().to(device)
    observer = RangeObserver(model, percentile)
    try:
        with torch.no_grad():
            for img in tqdm(images, desc="calibrating", unit="img", disable=not progress):
                model(torch.from_numpy(img)[None].to(device))
    finally:
        observer.close()
    return observer.ranges()


def save_cache(path: str | Path, ranges: Mapping, method: str, percentile: float, images: int, weights: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"method": method, "percentile": percentile, "images": images,
                                "weights": weights, "ranges": ranges}, indent=1) + "\n")
    return path


def load_amax(path: str | Path, method: str | None = None) -> dict[str, float]:
    """{module: amax} from a cache file; ``method`` (``max`` or ``percentile``) defaults to the file's."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"calibration cache not found: {path} (make one with calibrator.py)")
    try:
        data = json.loads(path.read_text())
        method = method or data["method"]
        key = "max" if method == "max" else f"p{data['percentile']:g}"
        return {module: float(r[key]) for module, r in data["ranges"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a calibration cache from calibrator.py ({exc})") from None

"""Synthetic RGB -> 31-band training and evaluation data, generated on the fly in torch.

A scene is ``radiance(x, l) = shading(x) * reflectance(region(x), l) * illuminant(l)``:

* layout: SLIC superpixels of a bundled scikit-image photo (random zoom/flip/offset), or dead leaves;
* reflectance: a measured spectrum per region. For colour photos it is drawn among the K spectra whose
  camera colour under D65 is nearest to the superpixel's chromaticity, sometimes mixed with a second
  one (convex mixtures of reflectances are physical); grey photos and dead leaves draw at random;
* shading: the photo's linear luminance (or dead-leaves shade), divided by the spectrum's own
  luminance so the image keeps the photo's brightness, capped so shading * reflectance <= 1;
* illuminant: CIE daylight at a random CCT, or a tabulated A / fluorescent / discharge / LED source.

Then ``camera.simulate`` renders it exactly like NTIRE 2022. Splits ('train' / 'eval') are disjoint in
photos, reflectance sets, tabulated illuminants and daylight CCT bands. Every call derives its random
numbers from (seed, split, index) only, so results are reproducible and independent of call order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .camera import Rendered, simulate
from .photos import PHOTO_SIZE, layouts_for_split
from .procedural import dead_leaves
from .tables import SPLITS, camera_matrix, daylight_spd, load_tables

#: ARAD_1K image size (H, W); evaluation scenes use it.
EVAL_SIZE = (482, 512)
#: Seed of the evaluation scenes: fixed, so that every run evaluates the same 50 scenes.
EVAL_SEED = 2022
N_EVAL_SCENES = 50
#: Candidate spectra per superpixel (nearest in chromaticity).
N_CANDIDATES = 6
FAMILY_WEIGHTS = {"daylight": 0.55, "tungsten": 0.10, "fluorescent": 0.15, "discharge": 0.05, "led": 0.15}
REFLECTANCE_FLOOR = 0.002
LUMINANCE_FLOOR = 0.004  # photos have pure-black pixels; real scenes always reflect a little


@dataclass
class SceneBatch:
    """Rendered batch plus what it was made of (one metadata dict per image)."""

    rendered: Rendered
    meta: list[dict] = field(default_factory=list)

    @property
    def inputs(self) -> torch.Tensor:
        return self.rendered.inputs

    @property
    def cubes(self) -> torch.Tensor:
        return self.rendered.cubes


def _derive_seed(*parts: int) -> int:
    # SeedSequence mixes the parts well: neighbouring (seed, index) pairs give unrelated streams.
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class SyntheticGenerator:
    """Deterministic synthetic scene generator for one split.

    Args:
        split: 'train' or 'eval'.
        seed: base seed; together with the batch index it fixes every random choice.
        device: where scenes are built (layouts and rendering run there; JPEG runs on the CPU).
        photos: optional subset of the split's photo names (tests use one or two to start fast).
        photo_fraction: share of photo-layout scenes in a batch (the rest are dead leaves).
    """

    def __init__(self, split: str = "train", seed: int = 0, device: str | torch.device = "cpu",
                 photos: tuple[str, ...] | None = None, photo_fraction: float = 0.7) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split, self.seed, self.device = split, int(seed), torch.device(device)
        self.photo_fraction = float(photo_fraction)
        self.tables = load_tables(split)
        self.cam = camera_matrix().to(self.device)
        self.reflectances = self.tables.reflectances.to(self.device)          # [N, 31]
        self.layouts = layouts_for_split(split, photos)
        self._prepare_photos()
        self._prepare_illuminants()

    # ----------------------------------------------------------------------------------- set-up
    def _reference_colours(self) -> torch.Tensor:
        """White-balanced camera RGB of every reflectance under D65: [N, 3] (white -> (1, 1, 1))."""
        d65 = daylight_spd(torch.tensor([6504.0]), self.tables.daylight_basis)[0]
        cam = self.cam.cpu()
        white = cam @ d65
        return (self.tables.reflectances * d65) @ cam.T / white

    def _prepare_photos(self) -> None:
        ref = self._reference_colours()
        self._ref_g = ref[:, 1].to(self.device)                                 # [N] luminance proxy
        ref_chroma = ref / ref.sum(1, keepdim=True).clamp_min(1e-6)
        s_max = max(int(l.labels.max()) + 1 for l in self.layouts)
        cands, colour = [], []
        for layout in self.layouts:
            sp = layout.sp_rgb / layout.sp_rgb.sum(1, keepdim=True).clamp_min(1e-6)
            dist = torch.cdist(sp[:, :2], ref_chroma[:, :2])                     # [S, N]
            k = min(N_CANDIDATES, dist.shape[1])
            idx = dist.topk(k, dim=1, largest=False).indices
            pad = torch.zeros(s_max, k, dtype=torch.int64)
            pad[: idx.shape[0]] = idx
            cands.append(pad)
            colour.append(layout.is_colour)
        self._cands = torch.stack(cands).to(self.device)                         # [P, S, K]
        self._is_colour = torch.tensor(colour, device=self.device)               # [P]
        self._labels = torch.stack([l.labels for l in self.layouts]).float()[:, None].to(self.device)
        self._lum = torch.stack([l.luminance for l in self.layouts])[:, None].to(self.device)
        self._n_sp = s_max

    def _prepare_illuminants(self) -> None:
        fams = sorted(set(self.tables.illuminant_families))
        self._families = ["daylight"] + fams
        w = torch.tensor([FAMILY_WEIGHTS.get(f, 0.05) for f in self._families])
        self._family_probs = w / w.sum()

    # ------------------------------------------------------------------------------ sampling
    def _illuminants(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, list[str], list[str]]:
        """n illuminant spectra [n, 31] (max 1), their names and their families."""
        fam = torch.multinomial(self._family_probs, n, replacement=True, generator=gen)
        spds, names, families = [], [], []
        ranges = self.tables.daylight_cct_ranges
        widths = torch.tensor([hi - lo for lo, hi in ranges])
        for f in fam.tolist():
            family = self._families[f]
            families.append(family)
            if family == "daylight":
                r = int(torch.multinomial(widths, 1, generator=gen))
                lo, hi = ranges[r]
                cct = lo + float(torch.rand(1, generator=gen)) * (hi - lo)
                spds.append(daylight_spd(torch.tensor([cct]), self.tables.daylight_basis)[0])
                names.append(f"daylight_{cct:.0f}K")
            else:
                members = [i for i, fm in enumerate(self.tables.illuminant_families) if fm == family]
                i = members[int(torch.randint(len(members), (1,), generator=gen))]
                spds.append(self.tables.illuminants[i])
                names.append(self.tables.illuminant_names[i])
        return torch.stack(spds).to(self.device), names, families

    def _mix(self, first: torch.Tensor, second: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Reflectances [B, S, 31] from index tensors [B, S]: half pure, half convex mixtures."""
        mixed = torch.rand(first.shape, generator=gen) < 0.5
        w = torch.where(mixed, 0.5 + 0.5 * torch.rand(first.shape, generator=gen), torch.ones(first.shape))
        w = w.to(self.device)[..., None]
        refl = w * self.reflectances[first.to(self.device)] + (1 - w) * self.reflectances[second.to(self.device)]
        if self.split == "train":
            # Smooth multiplicative jitter (two cosines over the band axis, ~+-15 %) widens the training
            # spectra beyond the few hundred measured ones while keeping them smooth like real surfaces.
            b, s = first.shape
            lam = torch.linspace(0, 1, refl.shape[-1])
            amp = 0.15 * torch.randn(b, s, 2, 1, generator=gen)
            phase = 2 * math.pi * torch.rand(b, s, 2, 1, generator=gen)
            freq = torch.tensor([1.0, 2.0])[:, None]
            jitter = torch.exp((amp * torch.cos(math.pi * freq * lam + phase)).sum(2))
            refl = refl * jitter.to(self.device)
        return refl.clamp(REFLECTANCE_FLOOR, 1.0)

    def _photo_radiance(self, n: int, size: tuple[int, int], zoom: tuple[float, float],
                        gen: torch.Generator, photo_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, list[dict]]:
        """Radiance [n, 31, H, W] with photo layouts; zoom = range of input pixels per output pixel."""
        h, w = size
        p = photo_ids if photo_ids is not None else torch.randint(len(self.layouts), (n,), generator=gen)
        s_hi = min(zoom[1], PHOTO_SIZE / max(h, w))
        s = zoom[0] + torch.rand(n, generator=gen) * max(s_hi - zoom[0], 0.0)
        half_w, half_h = w * s / PHOTO_SIZE, h * s / PHOTO_SIZE
        tx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - half_w).clamp_min(0)
        ty = (torch.rand(n, generator=gen) * 2 - 1) * (1 - half_h).clamp_min(0)
        flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = half_w * flip, tx
        theta[:, 1, 1], theta[:, 1, 2] = half_h, ty
        grid = F.affine_grid(theta.to(self.device), [n, 1, h, w], align_corners=False)
        pd = p.to(self.device)
        labels = F.grid_sample(self._labels[pd], grid, mode="nearest", align_corners=False)[:, 0].long()
        lum = F.grid_sample(self._lum[pd], grid, mode="bilinear", align_corners=False)[:, 0]

        k = self._cands.shape[-1]
        pick = torch.randint(k, (n, self._n_sp, 2), generator=gen).to(self.device)
        cand = self._cands[pd]                                                   # [n, S, K]
        near = torch.gather(cand, 2, pick).cpu()                                 # [n, S, 2]
        rand = torch.randint(self.reflectances.shape[0], (n, self._n_sp, 2), generator=gen)
        colour = self._is_colour[pd].cpu()[:, None, None]
        idx = torch.where(colour, near, rand)
        refl = self._mix(idx[..., 0], idx[..., 1], gen)                          # [n, S, 31]

        # Shading keeps the photo's brightness: luminance / the spectrum's own luminance proxy,
        # capped so that no band reflects more than all the light (shading * reflectance <= 1).
        y_ref = (refl * self._ref_weights()).sum(-1)                             # [n, S]
        cap = 1.0 / refl.amax(-1)
        flat = labels.flatten(1)                                                 # [n, HW]
        shade = torch.minimum(lum.flatten(1).clamp_min(LUMINANCE_FLOOR) / torch.gather(y_ref, 1, flat),
                              torch.gather(cap, 1, flat))
        pix = refl[torch.arange(n, device=self.device)[:, None], flat]           # [n, HW, 31]
        radiance = (pix * shade[..., None]).permute(0, 2, 1).reshape(n, -1, h, w)
        meta = [{"kind": "photo", "photo": self.layouts[int(i)].name, "zoom": round(float(z), 3)}
                for i, z in zip(p, s)]
        return radiance, meta

    def _ref_weights(self) -> torch.Tensor:
        """Weights [31] with ``(refl * weights).sum() = white-balanced camera G under D65``."""
        if not hasattr(self, "_ref_w"):
            d65 = daylight_spd(torch.tensor([6504.0]), self.tables.daylight_basis)[0].to(self.device)
            g = self.cam[1] * d65
            self._ref_w = g / g.sum()
        return self._ref_w

    def _leaves_radiance(self, n: int, size: tuple[int, int], gen: torch.Generator) -> tuple[torch.Tensor, list[dict]]:
        """Radiance [n, 31, H, W] with dead-leaves layouts."""
        h, w = size
        n_leaves = int(torch.randint(40, 160, (1,), generator=gen))
        labels, shade = dead_leaves(n, h, w, n_leaves, gen, self.device)
        idx = torch.randint(self.reflectances.shape[0], (n, n_leaves + 1, 2), generator=gen)
        refl = self._mix(idx[..., 0], idx[..., 1], gen)
        flat = labels.flatten(1)
        pix = refl[torch.arange(n, device=self.device)[:, None], flat]
        radiance = (pix * shade.flatten(1)[..., None]).permute(0, 2, 1).reshape(n, -1, h, w)
        return radiance, [{"kind": "dead_leaves", "leaves": n_leaves} for _ in range(n)]

    # --------------------------------------------------------------------------------- public
    def scenes(self, index: int, batch_size: int, size: tuple[int, int],
               zoom: tuple[float, float] = (0.4, 2.0), noise: bool = True, jpeg: bool = True) -> SceneBatch:
        """Batch ``index`` of full scenes at ``size`` (H, W), rendered: inputs [B,3,H,W], cubes [B,31,H,W]."""
        gen = torch.Generator().manual_seed(_derive_seed(self.seed, SPLITS.index(self.split), index, 1))
        n_photo = int(round(batch_size * self.photo_fraction)) if self.layouts else 0
        parts, meta = [], []
        if n_photo:
            r, m = self._photo_radiance(n_photo, size, zoom, gen)
            parts.append(r)
            meta += m
        if batch_size - n_photo:
            r, m = self._leaves_radiance(batch_size - n_photo, size, gen)
            parts.append(r)
            meta += m
        return self._finish(torch.cat(parts), meta, gen, index, noise, jpeg)

    def _finish(self, radiance: torch.Tensor, meta: list[dict], gen: torch.Generator, index: int,
                noise: bool, jpeg: bool) -> SceneBatch:
        spd, names, families = self._illuminants(radiance.shape[0], gen)
        radiance = radiance * spd[:, :, None, None]
        noise_gen = torch.Generator(device=self.device).manual_seed(
            _derive_seed(self.seed, SPLITS.index(self.split), index, 2))
        rendered = simulate(radiance, self.cam, noise_gen, noise=noise, jpeg=jpeg)
        for m, name, family in zip(meta, names, families):
            m.update(illuminant=name, illuminant_family=family, split=self.split)
        return SceneBatch(rendered, meta)

    def training_batch(self, index: int, batch_size: int, patch: int, scene_size: int | None = None,
                       patches_per_scene: int = 1) -> SceneBatch:
        """Random ``patch`` x ``patch`` crops, ``patches_per_scene`` of them from each rendered scene.

        Scenes are ``scene_size`` pixels square (default 2 x patch), rendered and min-max normalised whole
        before cropping, as the full image is at inference. Several patches per scene cut the rendering
        cost per batch by that factor; the patches of one scene share its layout and illuminant. Returns inputs [B, 3, patch, patch], cubes
        [B, 31, patch, patch] and one metadata dict per patch. ``patches_per_scene=1`` gives the same batches
        as before that option existed.
        """
        if patches_per_scene < 1:
            raise ValueError(f"patches_per_scene must be >= 1, got {patches_per_scene}")
        scene = scene_size or 2 * patch
        n_scenes = -(-batch_size // patches_per_scene)
        full = self.scenes(index, n_scenes, (scene, scene))
        gen = torch.Generator().manual_seed(_derive_seed(self.seed, SPLITS.index(self.split), index, 3))
        ys = torch.randint(scene - patch + 1, (batch_size,), generator=gen).tolist()
        xs = torch.randint(scene - patch + 1, (batch_size,), generator=gen).tolist()
        source = [i // patches_per_scene for i in range(batch_size)]

        def crop(t: torch.Tensor) -> torch.Tensor:
            return torch.stack([t[s, :, y:y + patch, x:x + patch] for s, y, x in zip(source, ys, xs)])

        r = full.rendered
        meta = [dict(full.meta[s]) for s in source]
        return SceneBatch(Rendered(crop(r.rgb8), crop(r.inputs), crop(r.cubes)), meta)


def eval_scene(index: int, generator: SyntheticGenerator | None = None, seed: int = EVAL_SEED) -> SceneBatch:
    """Held-out evaluation scene ``index`` at 482 (H) x 512 (W): one image, built on the CPU.

    Scenes are built on the CPU whatever device is used later, so that every machine evaluates on
    the same data. Every fifth scene is dead leaves; the others cycle through the eval photos.
    """
    gen_obj = generator or _eval_generator(seed)
    gen = torch.Generator().manual_seed(_derive_seed(seed, 1, index, 1))
    if index % 5 == 4 or not gen_obj.layouts:
        radiance, meta = gen_obj._leaves_radiance(1, EVAL_SIZE, gen)
    else:
        pid = torch.tensor([index % len(gen_obj.layouts)])
        radiance, meta = gen_obj._photo_radiance(1, EVAL_SIZE, (0.6, 1.0), gen, photo_ids=pid)
    batch = gen_obj._finish(radiance, meta, gen, 10_000 + index, True, True)
    batch.meta[0]["index"] = index
    return batch


_EVAL_CACHE: dict[int, SyntheticGenerator] = {}


def _eval_generator(seed: int) -> SyntheticGenerator:
    if seed not in _EVAL_CACHE:
        _EVAL_CACHE[seed] = SyntheticGenerator("eval", seed=seed, device="cpu")
    return _EVAL_CACHE[seed]


def eval_scenes(n: int = N_EVAL_SCENES, seed: int = EVAL_SEED):
    """Yield the first ``n`` evaluation scenes (``SceneBatch`` of one image each), deterministically."""
    for i in range(n):
        yield eval_scene(i, seed=seed)

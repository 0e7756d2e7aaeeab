"""MST++ weights: official checkpoints, bare state dicts, ``.npz`` files, and the shipped default.

Every loader returns a plain ``{state-dict name: float32 tensor}`` mapping that has been checked
against the model's own names and shapes, so a wrong file fails with one message that names the
problem instead of a ``load_state_dict`` traceback.
"""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from architecture import build_model

from .errors import WeightsError
from .resources import shipped_weights

#: Seed of the default initialisation used while no trained weights ship with the toolkit.
DEFAULT_SEED = 0
#: Trained weights shipped with the toolkit; used by default once the file exists.
SHIPPED_WEIGHTS = shipped_weights()

_NPZ_PREFIXES = ("", "weight/", "weights/")


@dataclass(frozen=True)
class WeightSource:
    """Where weights came from, in words fit for a report line."""

    path: str | None
    description: str

    @property
    def is_random(self) -> bool:
        return self.path is None


def _strip_module_prefix(state: Mapping[str, object]) -> dict[str, object]:
    # DataParallel/DistributedDataParallel training saves every key as "module.<name>".
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _to_tensor(name: str, value: object) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float32)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, dtype=np.float32))  # a copy: loaded arrays can be read-only
    raise WeightsError(f"weight {name!r} is a {type(value).__name__}, not a tensor")


def check_state_dict(state: Mapping[str, object], model: nn.Module | None = None,
                     origin: str = "weights") -> dict[str, torch.Tensor]:
    """Validate names and shapes against ``model`` (default: MST++) and return float32 tensors.

    Raises:
        WeightsError: missing or unexpected keys, or the first shape mismatch, named in one line.
    """
    model = model if model is not None else build_model("mst_plus_plus")
    expected = model.state_dict()
    state = _strip_module_prefix(state)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
        hint = " - is this an MST++ checkpoint?" if len(missing) > len(expected) // 2 else ""
        raise WeightsError(f"{origin}: keys do not match MST++: {'; '.join(parts)}{hint}")
    out: dict[str, torch.Tensor] = {}
    for name, ref in expected.items():
        tensor = _to_tensor(name, state[name])
        if tuple(tensor.shape) != tuple(ref.shape):
            raise WeightsError(f"{origin}: {name} has shape {tuple(tensor.shape)}, "
                               f"MST++ expects {tuple(ref.shape)}")
        out[name] = tensor
    return out


def _load_torch_file(path: Path) -> Mapping[str, object]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({first})") from None
    except Exception as exc:  # unpickling errors come in many classes
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return obj["state_dict"]
    if isinstance(obj, dict):
        return obj
    raise WeightsError(f"{path}: holds a {type(obj).__name__}, expected a state dict or "
                       "a training checkpoint with a 'state_dict' entry")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            files = list(data.files)
            for prefix in _NPZ_PREFIXES:
                if prefix and not any(k.startswith(prefix) for k in files):
                    continue
                picked = {k[len(prefix):]: data[k] for k in files if k.startswith(prefix)}
                if "conv_in.weight" in picked:
                    return picked
            return {k: data[k] for k in files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"{path}: not a readable .npz file ({exc})") from None


def _load_onnx(path: Path) -> dict[str, np.ndarray]:
    from .onnx.weight_map import state_dict_from_onnx  # onnx is only needed for this format

    return state_dict_from_onnx(path)


def read_state_dict(path: str | Path, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Read and validate MST++ weights from ``path``.

    Accepts official training checkpoints (``{'state_dict': ...}``, keys with or without ``module.``),
    bare state dicts (``.pth``/``.pt``), ``.npz`` files keyed by state-dict names (optionally under a
    ``weight/`` prefix), and ONNX files exported by this toolkit.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        raw: Mapping[str, object] = _load_npz(path)
    elif suffix == ".onnx":
        raw = _load_onnx(path)
    else:
        raw = _load_torch_file(path)
    return check_state_dict(raw, model, origin=str(path))


def seeded_state_dict(seed: int = DEFAULT_SEED) -> dict[str, torch.Tensor]:
    """MST++ parameters from PyTorch's default initialisation under a fixed seed (deterministic)."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = build_model("mst_plus_plus")
    finally:
        torch.random.set_rng_state(gen_state)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def file_digest(path: str | Path, length: int = 12) -> str:
    """First ``length`` hex digits of the file's SHA-256 (what ``sha256sum FILE`` prints): names the exact
    weights file a result was measured with. ``state_fingerprint`` names the tensors inside, whatever the format."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def state_fingerprint(state: Mapping[str, torch.Tensor | np.ndarray], length: int = 12) -> str:
    """First ``length`` hex digits of a content hash of the weights themselves, whatever file held them.

    SHA-256 over the entries in sorted name order, each as its name (UTF-8), a NUL byte, its shape
    written like ``31x3x3x3``, a NUL byte, and its values as little-endian float32 in C order. The same
    tensors saved as .pth, .npz or inside an ONNX file give the same fingerprint (``file_digest`` differs
    per file); it names build products made from weights (the ONNX/engine cache, calibration caches).
    """
    h = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        arr = np.ascontiguousarray(arr, dtype="<f4")
        h.update(name.encode() + b"\0" + "x".join(map(str, arr.shape)).encode() + b"\0")
        h.update(arr.tobytes())
    return h.hexdigest()[:length]


def resolve_weights(path: str | Path | None) -> tuple[dict[str, torch.Tensor], WeightSource]:
    """Weights for ``--weights PATH``; with no path, the shipped weights or the seeded default."""
    if path is not None and str(path) != "":
        state = read_state_dict(path)
        return state, WeightSource(str(path), f"weights: {path} (sha256 {file_digest(path)})")
    if SHIPPED_WEIGHTS.is_file():
        return read_state_dict(SHIPPED_WEIGHTS), WeightSource(
            str(SHIPPED_WEIGHTS), f"weights: shipped {SHIPPED_WEIGHTS.name} (sha256 {file_digest(SHIPPED_WEIGHTS)}; "
                                  "trained on synthetic scenes; see model/MODEL_CARD.md)")
    return seeded_state_dict(), WeightSource(
        None, f"weights: NOT TRAINED - seeded random initialisation (seed {DEFAULT_SEED}); "
              "outputs are not real spectra. Pass --weights PATH for a trained checkpoint.")


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[nn.Module, WeightSource]:
    """MST++ in eval mode with weights from ``resolve_weights(path)``."""
    state, source = resolve_weights(path)
    model = build_model("mst_plus_plus")
    model.load_state_dict(state, strict=True)
    return model.eval().to(device), source


def save_npz(state: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write weights as ``.npz`` keyed by state-dict names (float32)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()})
    return path


def save_checkpoint(state: Mapping[str, torch.Tensor], path: str | Path, epoch: int = 0, iteration: int = 0) -> Path:
    """Write weights in the official training-checkpoint layout (``module.``-prefixed keys)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch, "iter": iteration,
                "state_dict": {f"module.{k}": v.detach().cpu() for k, v in state.items()},
                "optimizer": {}}, path)
    return path

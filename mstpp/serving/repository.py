"""A Triton model repository for NVIDIA's Triton container, whose native backends run our plans and ONNX files.

    <root>/mstpp_trt/config.pbtxt     platform tensorrt_plan,    1/model.plan
    <root>/mstpp_onnx/config.pbtxt    platform onnxruntime_onnx, 1/model.onnx

Tensor names are the ones our exports use (input ``rgb`` FP32 [B, 3, H, W], output ``cube`` FP32
[B, 31, H, W]). A plan's batch limit comes from the shape profile recorded beside it at build time
(``<plan>.json``): Triton must not form a batch the profile cannot take. The configs are plain text in
Triton's ModelConfig text format, so writing them needs neither Triton nor protobuf.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import UserError

TRT_MODEL = "mstpp_trt"
ONNX_MODEL = "mstpp_onnx"
INPUT_NAME = "rgb"
OUTPUT_NAME = "cube"


@dataclass(frozen=True)
class InputProfile:
    """The input shapes a model accepts: per dimension of [B, 3, H, W], the smallest and the largest."""

    min: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    def spatial_dims(self) -> list[int]:
        """[H, W] for the config: the size where it is fixed, -1 where it varies."""
        return [lo if lo == hi else -1 for lo, hi in zip(self.min[2:], self.max[2:])]


def plan_profile(plan: Path) -> InputProfile:
    """The optimisation profile recorded beside a plan by ``mst_onnxparser.py`` / ``mst_trt_api.py``."""
    from ..trt.plan import read_plan_record

    record = read_plan_record(plan)
    if record is None:
        raise UserError(f"{plan}: no build record ({plan.name}.json) beside it, so its shape profile is unknown; "
                        "build the plan with mst_onnxparser.py or mst_trt_api.py")
    inp = record.get("input") or {}
    if inp.get("name", INPUT_NAME) != INPUT_NAME or len(inp.get("min", [])) != 4 or len(inp.get("max", [])) != 4:
        raise UserError(f"{plan}: its build record does not describe an input 'rgb' [B, 3, H, W]")
    return InputProfile(tuple(int(v) for v in inp["min"]), tuple(int(v) for v in inp["max"]))  # type: ignore[arg-type]


def onnx_profile(onnx_path: Path, max_batch: int) -> InputProfile:
    """The input shape of an exported ONNX file; symbolic dimensions become 1..``max_batch`` (batch) or free."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inputs = {i.name: i for i in model.graph.input}
    if INPUT_NAME not in inputs or OUTPUT_NAME not in {o.name for o in model.graph.output}:
        raise UserError(f"{onnx_path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r} (torch2onnx.py "
                        f"names them so), found inputs {sorted(inputs)}")
    dims = inputs[INPUT_NAME].type.tensor_type.shape.dim
    fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(fixed) != 4:
        raise UserError(f"{onnx_path}: input {INPUT_NAME!r} has rank {len(fixed)}, expected [B, 3, H, W]")
    lo = tuple(v if v is not None else (1 if i == 0 else 16) for i, v in enumerate(fixed))
    hi = tuple(v if v is not None else (max_batch if i == 0 else 1 << 30) for i, v in enumerate(fixed))
    return InputProfile(lo, hi)  # type: ignore[arg-type]


def batch_limit(profile: InputProfile, requested: int | None, what: str) -> int:
    """Triton's max_batch_size for a profile: 0 when the batch is fixed, else its largest batch (or less)."""
    lo, hi = profile.min[0], profile.max[0]
    if lo == hi:
        if requested not in (None, hi):
            raise UserError(f"{what}: its batch is fixed at {hi}; --max-batch {requested} cannot apply")
        return 0
    if lo != 1:
        raise UserError(f"{what}: its profile starts at batch {lo}; Triton sends batches from 1, so rebuild it "
                        "with a minimum batch of 1")
    if requested is not None and requested > hi:
        raise UserError(f"{what}: its profile allows batches up to {hi}; --max-batch {requested} is larger")
    return hi if requested is None else requested


def render_config(name: str, platform: str, profile: InputProfile, max_batch: int, gpus: Sequence[int] | None,
                  instances: int, queue_delay_us: int) -> str:
    """config.pbtxt text. With ``max_batch == 0`` the dims hold the fixed batch and no batcher is configured."""
    spatial = profile.spatial_dims()
    lead = [] if max_batch else [profile.max[0]]
    in_dims = lead + [3] + spatial
    out_dims = lead + [31] + spatial

    def dims(values: Sequence[int]) -> str:
        return "[ " + ", ".join(str(v) for v in values) + " ]"

    lines = [f'name: "{name}"', f'platform: "{platform}"', f"max_batch_size: {max_batch}",
             "input [", "  {", f'    name: "{INPUT_NAME}"', "    data_type: TYPE_FP32", f"    dims: {dims(in_dims)}",
             "  }", "]", "output [", "  {", f'    name: "{OUTPUT_NAME}"', "    data_type: TYPE_FP32",
             f"    dims: {dims(out_dims)}", "  }", "]", "instance_group [", "  {", f"    count: {instances}",
             "    kind: KIND_GPU"]
    if gpus:
        lines.append(f"    gpus: {dims(gpus)}")
    lines += ["  }", "]"]
    if max_batch:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {queue_delay_us}", "}"]
    return "\n".join(lines) + "\n"


def write_repository(root: str | Path, plan: str | Path | None = None, onnx: str | Path | None = None,
                     max_batch: int | None = None, gpus: Sequence[int] | None = None, instances: int = 1,
                     queue_delay_us: int = 1000) -> list[Path]:
    """Write ``mstpp_trt`` (from ``plan``) and/or ``mstpp_onnx`` (from ``onnx``) under ``root``.

    Args:
        max_batch: Triton's max_batch_size; None = the plan profile's largest batch (16 for ONNX).
        gpus: GPU indices for the instance group; None = every GPU.
        instances: model instances per GPU.
    Returns:
        the model directories written.
    """
    root = Path(root)
    written = []
    for source, name, platform, filename in ((plan, TRT_MODEL, "tensorrt_plan", "model.plan"),
                                              (onnx, ONNX_MODEL, "onnxruntime_onnx", "model.onnx")):
        if source is None:
            continue
        source = Path(source)
        if not source.is_file():
            raise UserError(f"not found: {source}")
        if platform == "tensorrt_plan":
            profile = plan_profile(source)
        else:
            if (source.parent / (source.name + ".data")).exists():
                raise UserError(f"{source}: its weights live in {source.name}.data; export a single-file ONNX")
            profile = onnx_profile(source, max_batch or 16)
        limit = batch_limit(profile, max_batch, str(source))
        model_dir = root / name
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, model_dir / "1" / filename)
        (model_dir / "config.pbtxt").write_text(render_config(name, platform, profile, limit, gpus, instances,
                                                              queue_delay_us))
        written.append(model_dir)
    return written

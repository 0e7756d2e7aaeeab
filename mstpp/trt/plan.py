"""Loading plans: refuse, with a message that says why, a plan built by another TensorRT or for another GPU."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from .builder import make_logger, plan_record_path
from .version import TrtInfo


def read_plan_record(plan_path: str | Path) -> dict[str, Any] | None:
    """The JSON written beside the plan at build time, or None for a plan built elsewhere."""
    path = plan_record_path(plan_path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise UserError(f"{path}: not valid JSON; rebuild the plan or delete the file") from None


def check_compatible(record: dict[str, Any] | None, info: TrtInfo, gpu: str | None, capability: str | None,
                     plan_path: str | Path) -> None:
    """Raise UserError when the plan's build record names another TensorRT or another GPU."""
    if record is None:
        return  # built by another tool: let TensorRT decide
    built = record.get("tensorrt", {})
    if built.get("flavour") != info.flavour or built.get("version") != info.version:
        raise UserError(f"{plan_path}: built with {built.get('flavour')} {built.get('version')}, but "
                        f"{info.summary} is installed; plans are not portable across versions - rebuild it")
    dev = record.get("device", {})
    want = dev.get("compute_capability")
    if want and capability and want != capability and not info.is_rtx:
        raise UserError(f"{plan_path}: built for {dev.get('gpu')} (compute capability {want}); this GPU is "
                        f"{gpu} ({capability}) - rebuild the plan on this GPU")


def deserialize(info: TrtInfo, plan_path: str | Path, gpu: str | None = None, capability: str | None = None):
    """(runtime, engine) for a plan file, after the compatibility check.

    The runtime is returned because it must outlive the engine.
    """
    plan_path = Path(plan_path)
    if not plan_path.is_file():
        raise UserError(f"plan not found: {plan_path}")
    check_compatible(read_plan_record(plan_path), info, gpu, capability, plan_path)
    trt = info.module
    logger = make_logger(trt)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        detail = "; ".join(logger.errors[-2:]) or "TensorRT gave no reason"
        raise UserError(f"{plan_path}: TensorRT could not load this plan ({detail}); rebuild it with this "
                        "TensorRT on this GPU")
    return runtime, engine

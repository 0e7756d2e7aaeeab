"""The two ways to an MST++ engine, shared by the scripts and the TensorRT runner."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import UserError
from .builder import BuildError, BuildSettings, build_plan
from .network import build_mstpp_network
from .version import TrtInfo


def network_input_shape(settings: BuildSettings) -> tuple[int, ...]:
    """(B, 3, H, W) with -1 where the profile lets a dimension vary."""
    s = settings.shapes
    return tuple(lo if lo == hi else -1 for lo, hi in zip(s.min, s.max))


def build_api_engine(info: TrtInfo, weights: Mapping[str, np.ndarray], settings: BuildSettings,
                     plan_path: str | Path, act_amax: Mapping[str, float] | None = None,
                     verbose: bool = False, progress: bool = True) -> Path:
    """Network-API engine: MST++ added layer by layer (``network.build_mstpp_network``)."""
    keep: list = []  # arrays TensorRT reads during the build

    def fill(network, _logger) -> str:
        return build_mstpp_network(info.module, network, weights, network_input_shape(settings),
                                   settings.precision, settings.plugins, act_amax, keep)

    return build_plan(info, fill, settings, plan_path, verbose=verbose, progress=progress)


def build_parser_engine(info: TrtInfo, onnx_file: str | Path, settings: BuildSettings, plan_path: str | Path,
                        verbose: bool = False, progress: bool = True) -> Path:
    """ONNX-parser engine from an MST++ ONNX already in the wanted precision (FP32/FP16/Q/DQ INT8)."""

    def fill(network, logger) -> str:
        parser = info.module.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_file)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(min(parser.num_errors, 3)))
            raise BuildError(f"the TensorRT ONNX parser rejected {onnx_file}: {errors}")
        inp = network.get_input(0)
        s = settings.shapes
        if any(d >= 0 and lo != hi for d, lo, hi in zip(inp.shape, s.min, s.max)):
            raise UserError(f"{onnx_file} has a static input {tuple(inp.shape)}; export it with "
                            "torch2onnx.py --dynamic to build a dynamic engine")
        if all(d >= 0 for d in inp.shape) and tuple(inp.shape) != s.opt:
            raise UserError(f"{onnx_file} is static {tuple(inp.shape)}, but the engine shape is {s.opt}; "
                            "pass matching --batch_size/--height/--width or export again")
        return inp.name

    return build_plan(info, fill, settings, plan_path, verbose=verbose, progress=progress)

"""The one CLI layer: argument types, the parser's one-line errors, the device choice, and every
script's --help (each option described with its default, examples last, examples that parse)."""
from __future__ import annotations

import argparse
import importlib
import shlex
from pathlib import Path

import pytest

from mstpp import cli
from mstpp.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("infer", "torch2onnx", "get_weights", "mst_onnxparser", "mst_trt_api", "calibrator",
           "performance_latency", "performance_accuracy", "performance_int8", "make_report", "train",
           "evaluate_weights", "serve", "performance_serving")
#: Interpreters the examples may name: the project's, or the serving environment's (PyTriton needs numpy < 2).
PYTHONS = ("python", ".venv-serve/bin/python")
#: Files the 2022 command lines in the examples create themselves (torch2onnx -> get_weights -> builders).
MADE_BY_EXAMPLES = ("mst_plus_plus",)


def _script(name: str):
    return importlib.import_module(f"mstpp.scripts.{name}")


@pytest.mark.parametrize("name", SCRIPTS)
def test_top_level_script_is_a_thin_wrapper(name):
    text = (REPO / f"{name}.py").read_text()
    code = [line for line in text.splitlines() if line.strip() and not line.startswith(("#", '"""'))]
    assert f"from mstpp.scripts.{name} import main" in text and "raise SystemExit(main())" in text
    assert len(text.splitlines()) <= 12 and "sys.path" not in text, code


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_describes_every_option_with_its_default_and_ends_with_examples(name):
    parser = _script(name).build_parser()
    assert isinstance(parser, cli.CliParser)
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), f"{name}: {action.option_strings or action.dest} has no help"
        if action.option_strings and action.nargs != 0:
            assert "default" in formatter._get_help_string(action), f"{name}: {action.option_strings} hides its default"
    text = parser.format_help().rstrip().splitlines()
    start = max(i for i, line in enumerate(text) if line.strip() == "Examples:")
    examples = [line.strip() for line in text[start + 1:]]
    assert examples and all(line.startswith(tuple(f"{py} " for py in PYTHONS)) for line in examples), examples


def _example_commands():
    for name in SCRIPTS:
        for line in _script(name).build_parser().examples:
            for part in line.split("&&"):
                yield name, part.strip()


@pytest.mark.parametrize("name,command", list(_example_commands()))
def test_help_examples_parse_and_name_existing_inputs(name, command):
    words = shlex.split(command)
    assert words[0] in PYTHONS and words[1].endswith(".py"), command
    target = words[1][:-3]
    assert target in SCRIPTS, command
    args = _script(target).build_parser().parse_args(words[2:])
    for dest in ("inputs", "images", "weights", "model_path", "init", "arad", "onnx_path"):
        value = getattr(args, dest, None)
        if dest == "onnx_path" and target == "torch2onnx":
            continue  # an output there
        for item in [value] if isinstance(value, (str, Path)) else (value or ()):
            if any(tag in str(item) for tag in MADE_BY_EXAMPLES) or str(item).startswith("model/mstpp"):
                continue  # written by an earlier example (torch2onnx.py, get_weights.py)
            assert (REPO / item).exists(), f"{command}: {item} does not exist"


# ---------------------------------------------------------------- parser and types

def _parser():
    p = cli.CliParser("Summary.\n\nDetails.\n\nExamples:\n  python x.py --n 2   # two\n")
    p.add_argument("--n", type=cli.positive_int, default=1, help="count")
    p.add_argument("--sizes", type=cli.int_list, default=None, help="sizes (default 1,2)")
    p.add_argument("--shape", type=cli.bhw_shape, default=(1, 16, 16), help="shape")
    p.add_argument("--device", type=cli.device_name, default=None, help="device (default: auto)")
    p.add_argument("--tag", type=cli.file_stem, default="x", help="tag")
    p.add_argument("--src", type=cli.existing_file, default=None, help="input (default: none)")
    return p


@pytest.mark.parametrize("argv,fragment", [
    (["--n", "0"], "must be >= 1"), (["--n", "two"], "positive integer"), (["--sizes", ","], "comma-separated"),
    (["--shape", "1x0x4"], "BxHxW"), (["--device", "gpu"], "cuda:N"), (["--tag", "../x"], "file name stem"),
    (["--src", "/nonexistent/file"], "not found"), (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_parser_errors_raise_usage_error(argv, fragment):
    with pytest.raises(cli.UsageError, match=None) as info:
        _parser().parse_args(argv)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_run_cli_prints_one_error_line_and_returns_2(capsys):
    code = cli.run_cli(lambda argv: _parser().parse_args(argv) and 0, ["--n", "-4"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: argument --n: -4 must be >= 1")

    def fails(argv):
        raise UserError("the file is not MST++")

    assert cli.run_cli(fails, []) == 2 and capsys.readouterr().err == "error: the file is not MST++\n"


def test_types_and_help_layout():
    args = _parser().parse_args(["--sizes", "4,1,4", "--shape", "2x64x60", "--device", "cuda:1"])
    assert args.sizes == [1, 4] and args.shape == (2, 64, 60) and args.device == "cuda:1"
    text = _parser().format_help()
    assert text.rstrip().endswith("python x.py --n 2   # two") and "count (default: 1)" in text
    assert "sizes (default 1,2)" in text and "(default: None)" not in text
    assert _parser().examples == ["python x.py --n 2"]


def test_device_choice():
    import torch

    from mstpp.devices import default_device, resolve_device

    assert resolve_device(None) == resolve_device("auto") == default_device()
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(UserError, match="not a device name"):
        resolve_device("tpu:x")


def test_no_script_imports_another_and_no_default_device_copies():
    import re

    for path in [*REPO.glob("mstpp/**/*.py"), *REPO.glob("*.py")]:
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) (train|evaluate_weights|performance_\w+|infer)\b", text, re.M), path
        if path.name != "devices.py":
            assert 'if torch.cuda.is_available() else "cpu"' not in text, f"{path}: use mstpp.devices"


def test_infer_progress_moves_per_image_on_the_cpu(tmp_path):
    import subprocess
    import sys

    import cv2
    import numpy as np
    import torch

    if torch.cuda.is_available():
        pytest.skip("the CPU default batch size is checked")
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8))
    proc = subprocess.run([sys.executable, "infer.py", str(tmp_path), "--out-dir", str(tmp_path / "o"), "--no-mat"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # One image per batch on the CPU: the bar reaches 1/2 before the second image runs.
    assert "1/2" in proc.stderr and "running 1 x 16x16" in proc.stderr

"""Physically grounded synthetic RGB <-> 31-band data (400-700 nm, 10 nm) rendered like NTIRE 2022.

    from mstpp.synth import SyntheticGenerator, eval_scene
    gen = SyntheticGenerator("train", seed=0, device="cuda")
    batch = gen.training_batch(index=0, batch_size=32, patch=128)   # inputs [32,3,128,128], cubes [32,31,128,128]
    scene = eval_scene(0)                                           # held-out 482 x 512 scene

Modules: ``tables`` (spectral data files), ``camera`` (NTIRE camera simulation), ``photos`` and
``procedural`` (layouts), ``generator`` (scenes and splits), ``baselines`` and ``evaluate``.
"""
from .camera import Rendered, minmax_normalise, render_linear, simulate
from .generator import EVAL_SEED, EVAL_SIZE, N_EVAL_SCENES, SceneBatch, SyntheticGenerator, eval_scene, eval_scenes
from .tables import CAMERA_GAINS, WAVELENGTHS, camera_matrix, daylight_spd, load_tables, read_camera_qe

__all__ = ["CAMERA_GAINS", "EVAL_SEED", "EVAL_SIZE", "N_EVAL_SCENES", "WAVELENGTHS", "Rendered", "SceneBatch",
           "SyntheticGenerator", "camera_matrix", "daylight_spd", "eval_scene", "eval_scenes", "load_tables",
           "minmax_normalise", "read_camera_qe", "render_linear", "simulate"]

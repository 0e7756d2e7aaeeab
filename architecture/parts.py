"""The names of MST++'s parts: its sizes, where every block sits in the module tree, and what its weights are called.

Everything that takes the model apart instead of calling ``forward`` (the fused-kernel route, the TensorRT
network builder, the CUDA kernel bindings) reads the layout from here, so no consumer indexes
``fn.net[2]`` or spells ``"body.0.encoder_layers.1.0"`` by hand. Keys are those of the official checkpoint
(``MST_Plus_Plus().state_dict()``); ``tests/test_model.py`` checks that the names below cover that state dict
exactly.

    from architecture import parts
    for stage in parts.stages():                    # StageParts("body.0"), ...
        for msab in stage.msabs():                  # "body.0.encoder_layers.0.0", ..., "body.0.decoder_layers.1.2"
            for attn, ffn in parts.msab_blocks(msab):
                keys = parts.weight_keys(attn, parts.ATTENTION_WEIGHTS)   # {"wq": "...to_q.weight", ...}
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

#: Channels per attention head; MST++ uses one head per 31 channels at every level.
HEAD_DIM = 31
#: Bands of the RGB input.
RGB_CHANNELS = 3
#: Feature channels at the first level (``n_feat``), and the spectral bands in and out of every MST stage.
N_FEAT = 31
#: Cascaded MST stages (``MST_Plus_Plus(stage=3)``).
STAGES = 3
#: Down-sampling levels of every MST stage (``MST(stage=2)``); the bottleneck sits below the last.
LEVELS = 2
#: (attention, feed-forward) pairs in every MSAB (``num_blocks=[1, 1, 1]``).
BLOCKS_PER_MSAB = 1
#: Hidden width of the feed-forward block, as a multiple of its channels.
FFN_MULT = 4
#: Spatial sizes are reflect-padded up to this multiple (the official code's 8; LEVELS down-samplings need 4).
PAD_MULTIPLE = 8
#: Smallest height and width MST++ accepts. Reflect padding needs each pad < the padded size; a size
#: s < 8 is padded by 8 - s, so s must exceed PAD_MULTIPLE / 2 (checked for every H, W in 1..20).
MIN_SIZE = PAD_MULTIPLE // 2 + 1
#: Channels of the MSABs at level 0 (full resolution), 1, ..., LEVELS (bottleneck): 31, 62, 124.
LEVEL_CHANNELS = tuple(N_FEAT * 2 ** level for level in range(LEVELS + 1))
#: The convolutions between the blocks as (kernel size, stride, padding): the 3x3 ones (conv_in, embedding,
#: mapping, conv_out) and the 4x4 stride-2 down-sampling.
CONV_GEOMETRIES = ((3, 1, 1), (4, 2, 1))

#: Names of the top-level convolutions (RGB -> features, features -> cube).
CONV_IN = "conv_in"
CONV_OUT = "conv_out"

#: The spectral attention weights under an attention prefix, named as the kernels' and plugins' arguments.
ATTENTION_WEIGHTS: Mapping[str, str] = {
    "wq": "to_q.weight", "wk": "to_k.weight", "wv": "to_v.weight", "rescale": "rescale",
    "wproj": "proj.weight", "bproj": "proj.bias",
    "wpos1": "pos_emb.0.weight", "wpos2": "pos_emb.2.weight",
}
#: The activation between the two depthwise convolutions of the positional embedding.
ATTENTION_POS_GELU = "pos_emb.1"

#: The feed-forward weights under a feed-forward (PreNorm) prefix, named as the kernels' and plugins' arguments.
FEED_FORWARD_WEIGHTS: Mapping[str, str] = {
    "ln_weight": "norm.weight", "ln_bias": "norm.bias",
    "w1": "fn.net.0.weight", "wdw": "fn.net.2.weight", "w2": "fn.net.4.weight",
}
#: The feed-forward's LayerNorm and its two activations (after the expansion and after the depthwise conv).
FEED_FORWARD_NORM = "norm"
FEED_FORWARD_GELUS = ("fn.net.1", "fn.net.3")


def weight_keys(prefix: str, names: Mapping[str, str]) -> dict[str, str]:
    """``{argument name: full state-dict key}`` of one part, e.g. ``weight_keys(attn, ATTENTION_WEIGHTS)``."""
    return {name: f"{prefix}.{key}" for name, key in names.items()}


def msab_blocks(msab: str) -> list[tuple[str, str]]:
    """(attention prefix, feed-forward prefix) of every pair in the MSAB at ``msab``, in forward order."""
    return [(f"{msab}.blocks.{i}.0", f"{msab}.blocks.{i}.1") for i in range(BLOCKS_PER_MSAB)]


@dataclass(frozen=True)
class StageParts:
    """Where the parts of one MST stage (a U-shaped encoder / bottleneck / decoder) sit under ``prefix``.

    Encoder level ``i`` runs an MSAB and then a 4x4 stride-2 down-sampling; decoder level ``i`` (from the
    bottleneck up) runs a 2x2 stride-2 transposed convolution, concatenates the skip of encoder level
    ``LEVELS - 1 - i``, fuses with a 1x1 convolution and runs an MSAB.
    """

    prefix: str

    @property
    def embedding(self) -> str:
        return f"{self.prefix}.embedding"

    @property
    def mapping(self) -> str:
        return f"{self.prefix}.mapping"

    @property
    def bottleneck(self) -> str:
        return f"{self.prefix}.bottleneck"

    def encoder_msab(self, level: int) -> str:
        return f"{self.prefix}.encoder_layers.{level}.0"

    def downsample(self, level: int) -> str:
        return f"{self.prefix}.encoder_layers.{level}.1"

    def upsample(self, level: int) -> str:
        return f"{self.prefix}.decoder_layers.{level}.0"

    def fusion(self, level: int) -> str:
        return f"{self.prefix}.decoder_layers.{level}.1"

    def decoder_msab(self, level: int) -> str:
        return f"{self.prefix}.decoder_layers.{level}.2"

    def msabs(self) -> Iterator[str]:
        """Every MSAB prefix of the stage in forward order: encoder levels, bottleneck, decoder levels."""
        yield from (self.encoder_msab(i) for i in range(LEVELS))
        yield self.bottleneck
        yield from (self.decoder_msab(i) for i in range(LEVELS))


def stages() -> list[StageParts]:
    """The MST stages of MST++ in forward order (``body.0`` ... ``body.{STAGES - 1}``)."""
    return [StageParts(f"body.{s}") for s in range(STAGES)]


def state_dict_keys() -> list[str]:
    """Every key of an MST++ state dict, derived from the names above (no model is built)."""
    keys = [f"{CONV_IN}.weight"]
    for stage in stages():
        keys.append(f"{stage.embedding}.weight")
        for level in range(LEVELS):
            keys += _msab_keys(stage.encoder_msab(level)) + [f"{stage.downsample(level)}.weight"]
        keys += _msab_keys(stage.bottleneck)
        for level in range(LEVELS):
            keys += [f"{stage.upsample(level)}.weight", f"{stage.upsample(level)}.bias",
                     f"{stage.fusion(level)}.weight"] + _msab_keys(stage.decoder_msab(level))
        keys.append(f"{stage.mapping}.weight")
    return keys + [f"{CONV_OUT}.weight"]


def _msab_keys(msab: str) -> list[str]:
    keys: list[str] = []
    for attn, ffn in msab_blocks(msab):
        keys += weight_keys(attn, ATTENTION_WEIGHTS).values()
        keys += weight_keys(ffn, FEED_FORWARD_WEIGHTS).values()
    return keys

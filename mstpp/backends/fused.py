"""Fused-kernel route: MST++ with every part replaced by our fused CUDA kernels.

- the feed-forward half of every MSAB (LayerNorm -> 1x1 -> GELU -> depthwise 3x3 -> GELU -> 1x1 -> + x) as one
  kernel (``mstpp.kernels.ffn_nchw``; the 4C hidden state never leaves the chip);
- the spectral attention half (``x + SpectralMSA(x)``) as one Gram pass, small per-image kernels and one
  halo-tile pass (``mstpp.kernels.msa_nchw``; q, k, v and the attention output never reach memory);
- the glue between the blocks, chosen by ``glue``: each decoder's 2x2 transposed convolution + concat + 1x1 fusion
  folded into one linear map per output pixel parity (``mstpp.kernels.upfuse_nchw``), conv_in as a direct NCHW
  convolution (``mstpp.kernels.conv_nchw``), and with ``glue="all"`` also the 3x3 31->31 convolutions (embedding,
  mapping, conv_out, with their residuals) and the 4x4 stride-2 down-sampling. The default ``"auto"`` leaves
  those last two to cuDNN, which measured faster than our kernels for them on the H100
  (docs/results/kernels_bench_glue.json); ``"none"`` runs all the glue in PyTorch. The reflect padding to a
  multiple of 8 and the final crop are PyTorch in every mode.
``describe()`` lists which parts are fused, so results say what was measured.

By default the runner replays its forward as a CUDA graph, one per input shape: the forward launches ~150
kernels, and at batch 1 the launch gaps between them are ~0.8 ms of a ~6.5 ms eager forward.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from architecture import build_model, parts
from architecture.mst_plus_plus import MSAB, MST, pad_amounts

from .. import cuda_graphs, kernels
from .base import RouteUnavailable, Runner, require_cuda, set_tf32

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: Which parts of the forward run on fused kernels (the rest is PyTorch eager).
FUSED_PARTS = ("feed-forward blocks", "spectral attention blocks")
#: The glue parts each ``glue`` mode runs as our kernels.
GLUE_MODES = {
    "none": (),
    "auto": ("2x2 up-sampling + concat + 1x1 fusion (folded)", "conv_in 3x3"),
    "all": ("2x2 up-sampling + concat + 1x1 fusion (folded)", "conv_in 3x3",
            "3x3 31->31 convolutions (embedding, mapping, conv_out, with their residuals)",
            "4x4 stride-2 down-sampling"),
}

#: Captured graphs kept per runner (each holds its own memory pool); the least recently used goes first.
MAX_CACHED_GRAPHS = 4


def _copy_weights(target: nn.Module, source: nn.Module, names: Mapping[str, str]) -> None:
    """Register float32 contiguous copies of ``source``'s parameters as buffers of ``target``, under the kernel's names."""
    for name, key in names.items():
        target.register_buffer(name, source.get_parameter(key).detach().float().contiguous())


class FusedFeedForward(nn.Module):
    """``x + PreNorm(C, FeedForward(C))(x)`` in one kernel. Parameters are kept as float32 on the device."""

    def __init__(self, prenorm: nn.Module) -> None:
        super().__init__()
        self.eps = float(prenorm.get_submodule(parts.FEED_FORWARD_NORM).eps)
        # The conv weights keep their module shapes ([4C, C, 1, 1], [4C, 1, 3, 3], [C, 4C, 1, 1]): the binding
        # accepts them as they are.
        _copy_weights(self, prenorm, parts.FEED_FORWARD_WEIGHTS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] contiguous -> x + FFN(LN(x)), same shape and dtype."""
        return kernels.ffn_nchw(x, self.ln_weight, self.ln_bias, self.w1, self.wdw, self.w2, eps=self.eps)


class FusedSpectralMSA(nn.Module):
    """``x + SpectralMSA(x)`` in one kernel sequence. Parameters are kept as float32 on the device."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        _copy_weights(self, attn, parts.ATTENTION_WEIGHTS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] contiguous -> x + SpectralMSA(x), same shape and dtype."""
        return kernels.msa_nchw(x, self.wq, self.wk, self.wv, self.rescale, self.wproj, self.bproj,
                                self.wpos1, self.wpos2)


class FusedMSAB(nn.Module):
    """An ``MSAB`` whose attention and feed-forward halves (each with its residual add) run as fused kernels."""

    def __init__(self, block: MSAB) -> None:
        super().__init__()
        self.attns = nn.ModuleList(FusedSpectralMSA(attn) for attn, _ in block.blocks)
        self.ffns = nn.ModuleList(FusedFeedForward(ff) for _, ff in block.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        x = x.contiguous()
        for attn, ffn in zip(self.attns, self.ffns):
            x = ffn(attn(x))
        return x


def fuse_blocks(model: nn.Module) -> int:
    """Replace every ``MSAB`` inside ``model`` (in place) by a ``FusedMSAB``; returns how many were replaced."""
    count = 0
    for name, child in list(model.named_children()):
        if isinstance(child, MSAB):
            setattr(model, name, FusedMSAB(child))
            count += 1
        else:
            count += fuse_blocks(child)
    return count


class FusedConv(nn.Module):
    """A bias-free ``Conv2d`` (3x3 stride 1 or 4x4 stride 2, padding 1), optionally plus a residual, as one kernel."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.bias is not None or conv.groups != 1 or conv.dilation != (1, 1):
            raise ValueError("FusedConv covers MST++'s bias-free, ungrouped, undilated convolutions only")
        self.stride, self.padding = conv.stride[0], conv.padding[0]
        self.register_buffer("weight", conv.weight.detach().float().contiguous())

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, Cin, H, W] -> [B, Cout, H', W'] (+ residual of that shape), x's dtype."""
        return kernels.conv_nchw(x, self.weight, self.stride, self.padding, residual=residual)


class TorchConv(nn.Module):
    """A PyTorch ``Conv2d`` with the ``FusedConv`` call signature (cuDNN does the work; the residual is an add)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv(x)
        return y if residual is None else y + residual


class FusedUpFuse(nn.Module):
    """``fusion(cat([up(low), skip]))`` of an MST++ decoder level as one kernel, with the two linear maps folded."""

    def __init__(self, up: nn.ConvTranspose2d, fusion: nn.Conv2d) -> None:
        super().__init__()
        folded = kernels.fold_upfuse(up.weight.detach(), up.bias.detach(), fusion.weight.detach())
        self.register_buffer("wa", folded.wa)
        self.register_buffer("wb", folded.wb)
        self.register_buffer("bias", folded.bias)

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """low: [B, 2C, H/2, W/2], skip: [B, C, H, W] -> [B, C, H, W]."""
        return kernels.upfuse_nchw(low, skip, folded=kernels.UpfuseWeights(self.wa, self.wb, self.bias))


class FusedMST(nn.Module):
    """One MST stage with its MSABs already fused (``fuse_blocks``) and its up-sampling + fusion as one kernel.

    ``conv_kernels``: the embedding, mapping and down-sampling convolutions as our kernels too (else cuDNN).
    """

    def __init__(self, mst: MST, conv_kernels: bool) -> None:
        super().__init__()
        conv = FusedConv if conv_kernels else TorchConv
        self.stage = mst.stage
        self.embedding = conv(mst.embedding)
        self.encoder = nn.ModuleList(nn.ModuleList([msab, conv(down)]) for msab, down in mst.encoder_layers)
        self.bottleneck = mst.bottleneck
        self.decoder = nn.ModuleList(nn.ModuleList([FusedUpFuse(up, fusion), msab])
                                     for up, fusion, msab in mst.decoder_layers)
        self.mapping = conv(mst.mapping)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 31, H, W], H and W multiples of 4 -> [B, 31, H, W] (``MST.forward``)."""
        fea = self.embedding(x)
        skips = []
        for msab, down in self.encoder:
            fea = msab(fea)
            skips.append(fea)
            fea = down(fea)
        fea = self.bottleneck(fea)
        for i, (upfuse, msab) in enumerate(self.decoder):
            fea = msab(upfuse(fea, skips[self.stage - 1 - i]))
        return self.mapping(fea, residual=x)


class FusedMSTPlusPlus(nn.Module):
    """``MST_Plus_Plus.forward`` from fused parts (``conv_kernels`` as in ``FusedMST``, conv_out included)."""

    def __init__(self, model: nn.Module, conv_kernels: bool = True) -> None:
        super().__init__()
        self.conv_in = FusedConv(model.conv_in)
        self.body = nn.Sequential(*(FusedMST(stage, conv_kernels) for stage in model.body))
        self.conv_out = (FusedConv if conv_kernels else TorchConv)(model.conv_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] -> [B, 31, H, W]."""
        h_inp, w_inp = x.shape[-2:]
        pad_h, pad_w = pad_amounts(h_inp, w_inp)
        x = F.pad(x, [0, pad_w, 0, pad_h], mode="reflect").contiguous()
        x = self.conv_in(x)
        return self.conv_out(self.body(x), residual=x)[:, :, :h_inp, :w_inp]


class _GraphedForward:
    """One CUDA graph of ``forward`` for one input shape and dtype: a static input buffer, replayed in place."""

    def __init__(self, forward: Any, example: torch.Tensor) -> None:
        self.static_in = torch.empty_like(example, memory_format=torch.contiguous_format)
        self.static_in.copy_(example)
        self.graph, self.static_out = cuda_graphs.capture(lambda: forward(self.static_in), example.device,
                                                          warmup_runs=2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.static_in.copy_(x)
        self.graph.replay()
        # The next replay overwrites it: Runner's output policy (base.py) lets the caller copy what it keeps.
        return self.static_out


class FusedRunner(Runner):
    """MST++ with fused attention and feed-forward kernels (see the module docstring for what is still PyTorch).

    Args:
        state_dict: MST++ weights (float32).
        precision: ``fp32`` (TF32 off everywhere; the kernels use float32 FMA), ``fp16`` or ``bf16``
            (activations stored in that dtype; the kernels' 1x1 products run on tensor cores with operands of
            that dtype and float32 accumulation, everything else in float32).
        device: a CUDA device.
        cuda_graph: replay the forward as a CUDA graph captured on the first call with each input shape (the
            output is the same as eager; ``False`` launches every kernel from Python on each call).
        glue: which convolutions between the blocks run as our kernels: ``"auto"`` (up-sampling + fusion and
            conv_in, where ours measured faster than cuDNN), ``"all"`` or ``"none"`` (see the module docstring).
        route: registry name (``make_runner`` passes it); default ``fused-<precision>``.
    """

    replays_cuda_graph: bool = True  # unless made with cuda_graph=False

    def __init__(self, state_dict: Mapping[str, torch.Tensor], precision: str = "fp32",
                 device: str = "cuda", cuda_graph: bool = True, glue: str = "auto", route: str | None = None) -> None:
        if precision not in _DTYPES:
            raise ValueError(f"precision must be one of {sorted(_DTYPES)}, got {precision!r}")
        if glue not in GLUE_MODES:
            raise ValueError(f"glue must be one of {sorted(GLUE_MODES)}, got {glue!r}")
        super().__init__(device, route or f"fused-{precision}")
        if self.device.type != "cuda":
            raise RouteUnavailable(f"{self.route}: the fused kernels run on a CUDA GPU only")
        require_cuda(self.route)
        try:
            kernels.load_library()
        except kernels.KernelLibraryError as exc:
            raise RouteUnavailable(f"{self.route}: {exc}") from None
        self.precision = precision
        self.input_dtype = _DTYPES[precision]
        self.replays_cuda_graph = bool(cuda_graph)
        self._graphs: OrderedDict[tuple, _GraphedForward] = OrderedDict()
        model = build_model("mst_plus_plus")
        model.load_state_dict(state_dict, strict=True)
        model = model.eval()
        self.fused_blocks = fuse_blocks(model)  # copies the float32 weights the kernels use
        self.glue = glue
        if glue != "none":
            model = FusedMSTPlusPlus(model, conv_kernels=glue == "all")
        # Only the PyTorch parts take the route's dtype (module.to(dtype) would cast the kernels' buffers too).
        for param in model.parameters():
            param.data = param.data.to(self.input_dtype)
        self.model = model.to(self.device)

    def prepare(self, shape: tuple[int, int, int, int]) -> None:
        super().prepare(shape)
        if self.replays_cuda_graph:  # capture now, so the first timed call is a replay
            self.run(torch.zeros(shape, dtype=self.input_dtype, device=self.device))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        set_tf32(False)
        with torch.inference_mode():
            return self.model(x)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] of ``input_dtype`` on the runner's device -> [B, 31, H, W], same dtype."""
        same_device = x.device.type == "cuda" and self.device.index in (None, x.device.index)
        if not same_device or x.dtype != self.input_dtype or x.dim() != 4:
            raise ValueError(f"{self.route}: expected a 4-D {self.input_dtype} tensor on {self.device}, got "
                             f"{tuple(x.shape)} {x.dtype} on {x.device} (use make_input)")
        if not self.replays_cuda_graph:
            return self._forward(x)
        key = (tuple(x.shape), x.device.index)
        graphed = self._graphs.get(key)
        if graphed is None:
            graphed = self._graphs[key] = _GraphedForward(self._forward, x)
            while len(self._graphs) > MAX_CACHED_GRAPHS:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        return graphed(x)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(framework=f"torch {torch.__version__} + mstpp kernels", tf32=False,
                    fused_parts=list(FUSED_PARTS + GLUE_MODES[self.glue]), glue=self.glue,
                    fused_msab=self.fused_blocks, cuda_graph=self.replays_cuda_graph,
                    unfused={"none": "down/up-sampling, embedding/mapping: PyTorch eager",
                             "auto": "3x3 31->31 and 4x4 down-sampling convolutions (cuDNN), reflect pad, crop",
                             "all": "reflect padding to a multiple of 8 and the crop"}[self.glue])
        return info

    def close(self) -> None:
        self._graphs.clear()
        del self.model

"""MST++ (Multi-stage Spectral-wise Transformer, CVPRW 2022) for RGB -> 31-band spectral recovery.

Written from the published architecture. Module and parameter names follow the official code so that
its checkpoints load unchanged (see ``mstpp.weights``); the forward pass avoids einops and keeps the
layout changes few so that the exported ONNX graph stays small.

Tensor layout conventions used in the docstrings:
    B batch, C channels, H/W spatial size, N = H*W tokens, h heads, d = 31 channels per head.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The sizes live with the part names (architecture/parts.py); re-exported here for existing imports.
from .parts import BLOCKS_PER_MSAB, FFN_MULT, HEAD_DIM, LEVELS, MIN_SIZE, N_FEAT, PAD_MULTIPLE, STAGES


class GELU(nn.Module):
    """Exact (erf) GELU, kept as its own module so the official ``nn.Sequential`` indices hold."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x)


def l2_normalize(x: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(x, p=2, dim=dim, eps=eps)`` without its ``expand`` (one ONNX node fewer)."""
    return x / torch.linalg.vector_norm(x, ord=2, dim=dim, keepdim=True).clamp_min(eps)


def _pointwise(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    # A Linear over channels is a 1x1 convolution in NCHW: no permute to channels-last is needed.
    return F.conv2d(x, linear.weight[:, :, None, None], linear.bias)


class SpectralMSA(nn.Module):
    """Spectral-wise multi-head self-attention (official name ``MS_MSA``).

    Attention runs across channels: per head, a d x d matrix from q and k, each channel normalised
    over the N tokens. The official code applies its Linear layers to channels-last tokens; here
    they are applied as 1x1 convolutions on NCHW, which is the same function with fewer layout
    changes.

    Args:
        dim: channels C of the input.
        dim_head: channels per head (31 in MST++).
        heads: number of heads (C / dim_head).
    """

    def __init__(self, dim: int, dim_head: int = HEAD_DIM, heads: int = 1) -> None:
        super().__init__()
        self.num_heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_k = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_v = nn.Linear(dim, dim_head * heads, bias=False)
        self.rescale = nn.Parameter(torch.ones(heads, 1, 1))
        self.proj = nn.Linear(dim_head * heads, dim, bias=True)
        self.pos_emb = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False, groups=dim),
            GELU(),
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False, groups=dim),
        )
        # No parameters: a named point where hooks (INT8 calibration) can see the input of ``proj``.
        self.attn_out = nn.Identity()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        b, c, h, w = x.shape
        v_img = _pointwise(x, self.to_v)

        def per_head(t: torch.Tensor) -> torch.Tensor:
            # [B, h*d, H, W] -> [B, h, d, N]: each row is one channel of one head over all tokens.
            return t.reshape(b, self.num_heads, self.dim_head, h * w)

        q = l2_normalize(per_head(_pointwise(x, self.to_q)))
        k = l2_normalize(per_head(_pointwise(x, self.to_k)))
        attn = (k @ q.transpose(-2, -1)) * self.rescale  # [B, h, d, d]
        attn = attn.softmax(dim=-1)
        out = self.attn_out((attn @ per_head(v_img)).reshape(b, c, h, w))
        return _pointwise(out, self.proj) + self.pos_emb(v_img)


class FeedForward(nn.Module):
    """1x1 expand -> GELU -> depthwise 3x3 -> GELU -> 1x1 project, on [B, C, H, W]."""

    def __init__(self, dim: int, mult: int = FFN_MULT) -> None:
        super().__init__()
        hidden = dim * mult
        self.net = nn.Sequential(
            nn.Conv2d(dim, hidden, 1, 1, bias=False),
            GELU(),
            nn.Conv2d(hidden, hidden, 3, 1, 1, bias=False, groups=hidden),
            GELU(),
            nn.Conv2d(hidden, dim, 1, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        return self.net(x)


class PreNorm(nn.Module):
    """LayerNorm over channels (eps 1e-5) of an NCHW tensor, followed by ``fn``."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        # LayerNorm normalises trailing dims, hence the round trip through channels-last.
        return self.fn(self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


class MSAB(nn.Module):
    """Multi-head spectral attention block: x += S-MSA(x); x += FFN(LN(x)), ``num_blocks`` times.

    Args:
        dim: channels C.
        dim_head: channels per head.
        heads: attention heads.
        num_blocks: repetitions of the (attention, feed-forward) pair.
    """

    def __init__(self, dim: int, dim_head: int, heads: int, num_blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleList([SpectralMSA(dim, dim_head, heads), PreNorm(dim, FeedForward(dim))])
            for _ in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        for attn, ff in self.blocks:
            x = attn(x) + x
            x = ff(x) + x
        return x


class MST(nn.Module):
    """One MST stage: a U-shaped encoder/bottleneck/decoder of MSABs with a global residual.

    Args:
        in_dim: input channels. out_dim: output channels. dim: channels at the first level.
        stage: number of down-sampling levels.
        num_blocks: MSAB repetitions per level (encoder levels..., bottleneck).
    """

    def __init__(
        self, in_dim: int = 31, out_dim: int = 31, dim: int = 31, stage: int = 2,
        num_blocks: tuple[int, ...] | list[int] = (1, 1, 1),
    ) -> None:
        super().__init__()
        self.dim = dim
        self.stage = stage
        self.embedding = nn.Conv2d(in_dim, dim, 3, 1, 1, bias=False)

        self.encoder_layers = nn.ModuleList()
        dim_stage = dim
        for i in range(stage):
            self.encoder_layers.append(nn.ModuleList([
                MSAB(dim_stage, HEAD_DIM, dim_stage // HEAD_DIM, num_blocks[i]),
                nn.Conv2d(dim_stage, dim_stage * 2, 4, 2, 1, bias=False),
            ]))
            dim_stage *= 2

        self.bottleneck = MSAB(dim_stage, HEAD_DIM, dim_stage // HEAD_DIM, num_blocks[-1])

        self.decoder_layers = nn.ModuleList()
        for i in range(stage):
            self.decoder_layers.append(nn.ModuleList([
                nn.ConvTranspose2d(dim_stage, dim_stage // 2, stride=2, kernel_size=2, padding=0),
                nn.Conv2d(dim_stage, dim_stage // 2, 1, 1, bias=False),
                MSAB(dim_stage // 2, HEAD_DIM, (dim_stage // 2) // HEAD_DIM, num_blocks[stage - 1 - i]),
            ]))
            dim_stage //= 2

        self.mapping = nn.Conv2d(dim, out_dim, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] with H, W multiples of 2**stage -> [B, out_dim, H, W]."""
        fea = self.embedding(x)
        skips = []
        for msab, down in self.encoder_layers:
            fea = msab(fea)
            skips.append(fea)
            fea = down(fea)
        fea = self.bottleneck(fea)
        for i, (up, fusion, msab) in enumerate(self.decoder_layers):
            fea = up(fea)
            fea = fusion(torch.cat([fea, skips[self.stage - 1 - i]], dim=1))
            fea = msab(fea)
        return self.mapping(fea) + x


def pad_amounts(height: int, width: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
    """Bottom and right padding that brings (height, width) up to a multiple of ``multiple``."""
    return (multiple - height % multiple) % multiple, (multiple - width % multiple) % multiple


class MST_Plus_Plus(nn.Module):  # noqa: N801  (official class name, kept for user code)
    """MST++: RGB [B, 3, H, W] in [0, 1] -> spectral cube [B, 31, H, W] (400-700 nm, 10 nm steps).

    Any H, W >= ``MIN_SIZE`` (5): the input is reflect-padded at the bottom/right to a multiple of 8
    and the output cropped back.

    Args:
        in_channels: input bands (3 for RGB).
        out_channels: output bands (31).
        n_feat: feature channels at the first level (31).
        stage: number of cascaded MST stages (3).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 31, n_feat: int = N_FEAT, stage: int = STAGES) -> None:
        super().__init__()
        self.stage = stage
        self.conv_in = nn.Conv2d(in_channels, n_feat, kernel_size=3, padding=1, bias=False)
        self.body = nn.Sequential(*[MST(dim=n_feat, stage=LEVELS, num_blocks=[BLOCKS_PER_MSAB] * (LEVELS + 1))
                                    for _ in range(stage)])
        self.conv_out = nn.Conv2d(n_feat, out_channels, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] -> [B, 31, H, W]."""
        h_inp, w_inp = x.shape[-2:]
        pad_h, pad_w = pad_amounts(h_inp, w_inp)
        x = F.pad(x, [0, pad_w, 0, pad_h], mode="reflect")
        x = self.conv_in(x)
        h = self.conv_out(self.body(x)) + x
        return h[:, :, :h_inp, :w_inp]

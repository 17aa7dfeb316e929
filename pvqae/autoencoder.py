"""VQ-GAN encoder and decoder (paper Sec. III-A and IV-A: "We built our PVQAE on VQ-GAN").

Building blocks follow taming-transformers (Esser et al. 2021): ResNet blocks of
GroupNorm -> SiLU -> conv3x3 (twice, 1x1 shortcut when the width changes), stride-2
downsampling, nearest x2 upsampling, single-head self-attention at the coarsest grid.

The encoder returns the outputs of its **last three levels** (Sec. IV-A: "Outputs from the
last three encoder convolutional blocks formed the hierarchy of feature embeddings"): with
``L = len(ch_mult)`` levels at an image of side S the grids are S/2^(L-1) (coarse),
S/2^(L-2) (median) and S/2^(L-3) (fine); at 256 px with six levels that is 8, 16, 32.
Each is projected to the code dimension by its own small head (as in DQ-VAE).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def norm(ch: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with at most ``groups`` groups that divide ``ch`` (eps 1e-6, as VQ-GAN)."""
    g = min(groups, ch)
    while ch % g:
        g -= 1
    return nn.GroupNorm(g, ch, eps=1e-6, affine=True)


class EvalInplaceSiLU(nn.SiLU):
    """SiLU, computed in place in eval mode (same values, no new activation tensor, so scoring
    allocates less); out of place in training, which keeps its input for backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x, inplace=not self.training)


class ResnetBlock(nn.Module):
    """norm -> SiLU -> conv3x3, twice, with a 1x1 shortcut when widths differ."""

    def __init__(self, cin: int, cout: int, groups: int = 32, dropout: float = 0.0):
        super().__init__()
        self.block = nn.Sequential(
            norm(cin, groups), EvalInplaceSiLU(), nn.Conv2d(cin, cout, 3, padding=1),
            norm(cout, groups), EvalInplaceSiLU(), nn.Dropout(dropout), nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in place on the block's fresh conv output (conv backward does not need it): one
        # activation-sized tensor less per block; a + b == b + a, so the values are unchanged
        return self.block(x).add_(self.shortcut(x))


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection."""

    def __init__(self, ch: int, groups: int = 32):
        super().__init__()
        self.norm = norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, hw, c)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Asymmetric pad (0,1,0,1) + stride-2 conv3x3, as VQ-GAN."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest x2 upsampling + conv3x3."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class CodeHead(nn.Module):
    """Projects one level's features to the code dimension: Res -> norm -> SiLU -> conv1x1."""

    def __init__(self, cin: int, dim: int, groups: int = 32, attention: bool = False):
        super().__init__()
        layers: list[nn.Module] = [ResnetBlock(cin, cin, groups)]
        if attention:
            layers.append(AttnBlock(cin, groups))
        layers += [norm(cin, groups), EvalInplaceSiLU(), nn.Conv2d(cin, dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Encoder(nn.Module):
    """Multi-resolution VQ-GAN encoder (Sec. III-B1: the hierarchy of embeddings Z^1..Z^3).

    Args:
        in_channels: image channels.
        ch: base width.
        ch_mult: width multiplier per level; ``len(ch_mult) >= 3`` levels, each but the last
            followed by a stride-2 downsample.
        num_res_blocks: ResNet blocks per level.
        embed_dim: code dimension of every head.
        groups: GroupNorm groups.
        levels: which of the last three levels get a code head: indices 0 (coarse),
            1 (median), 2 (fine). A static single-level VQ uses one.
    """

    def __init__(
        self,
        in_channels: int = 3,
        ch: int = 32,
        ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 1,
        embed_dim: int = 64,
        groups: int = 32,
        levels: tuple[int, ...] = (0, 1, 2),
    ):
        super().__init__()
        if len(ch_mult) < 3:
            raise ValueError(f"ch_mult needs at least 3 levels for the 3-resolution hierarchy, got {ch_mult}")
        self.num_levels = len(ch_mult)
        self.levels = tuple(sorted(levels))
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        widths = [ch * m for m in ch_mult]
        # build only down to the coarsest requested level (a static median-level VQ has no
        # coarse stage: no unused parameters); the mid block closes the deepest built stage
        depth = self.num_levels - min(self.levels)
        self.stages = nn.ModuleList()
        self.downs = nn.ModuleList()
        cin = ch
        for i, w in enumerate(widths[:depth]):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(cin, w, groups))
                cin = w
            self.stages.append(nn.Sequential(*blocks))
            self.downs.append(Downsample(w) if i < depth - 1 else nn.Identity())
        self.mid = nn.Sequential(ResnetBlock(cin, cin, groups), AttnBlock(cin, groups), ResnetBlock(cin, cin, groups))
        # level k (0 coarse, 1 median, 2 fine) reads encoder stage L-1-k
        self.heads = nn.ModuleDict({
            str(k): CodeHead(widths[-1 - k], embed_dim, groups, attention=(k == 0)) for k in self.levels
        })
        self._deepest = max(self.levels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Embeddings per requested level, ordered as ``self.levels`` (coarse first)."""
        h = self.conv_in(x)
        taps: dict[int, torch.Tensor] = {}
        for i, (stage, down) in enumerate(zip(self.stages, self.downs)):
            h = stage(h)
            k = self.num_levels - 1 - i
            if i == len(self.stages) - 1:
                h = self.mid(h)
            if str(k) in self.heads:
                taps[k] = h
            h = down(h)
        return [self.heads[str(k)](taps[k]) for k in self.levels]

    @staticmethod
    def grid_sizes(image_size: int, n_levels: int) -> tuple[int, int, int]:
        """(coarse, median, fine) grid sides for an image side and ``len(ch_mult)``."""
        return tuple(image_size // 2 ** (n_levels - 1 - k) for k in range(3))  # type: ignore[return-value]


class Decoder(nn.Module):
    """VQ-GAN decoder from a code map of side ``grid`` to an image of side ``image_size``.

    A learnable 2-D position embedding is added to the code map first (repeated coarse codes
    carry no position otherwise; DQ-VAE does the same), then conv_in -> Res -> Attn -> Res ->
    (ResNet blocks + nearest x2 upsample) per level -> norm -> SiLU -> conv_out.
    """

    def __init__(
        self,
        out_channels: int = 3,
        ch: int = 32,
        ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 1,
        embed_dim: int = 64,
        groups: int = 32,
        grid: int = 32,
        image_size: int = 128,
        position_embedding: bool = True,
        attention: bool = False,
    ):
        super().__init__()
        n_up = (image_size // grid).bit_length() - 1
        if grid * 2 ** n_up != image_size:
            raise ValueError(f"image size {image_size} is not grid {grid} times a power of two")
        widths = [ch * m for m in ch_mult][: n_up + 1][::-1]  # deepest used width first
        if len(widths) < n_up + 1:
            raise ValueError(f"ch_mult {ch_mult} too short for {n_up} upsamplings")
        self.pos = nn.Parameter(torch.zeros(1, embed_dim, grid, grid)) if position_embedding else None
        if self.pos is not None:
            nn.init.normal_(self.pos, std=0.02)
        cin = widths[0]
        self.conv_in = nn.Conv2d(embed_dim, cin, 3, padding=1)
        mid: list[nn.Module] = [ResnetBlock(cin, cin, groups)]
        if attention:
            mid.append(AttnBlock(cin, groups))
        mid.append(ResnetBlock(cin, cin, groups))
        self.mid = nn.Sequential(*mid)
        self.ups = nn.ModuleList()
        for i, w in enumerate(widths):
            blocks: list[nn.Module] = []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(cin, w, groups))
                cin = w
            if i < len(widths) - 1:
                blocks.append(Upsample(cin))
            self.ups.append(nn.Sequential(*blocks))
        self.norm_out = norm(cin, groups)
        self.act_out = EvalInplaceSiLU()
        self.conv_out = nn.Conv2d(cin, out_channels, 3, padding=1)

    @property
    def last_layer(self) -> torch.Tensor:
        """Weight of the last layer (for the adaptive GAN weight of VQ-GAN)."""
        return self.conv_out.weight

    def forward(self, z_q: torch.Tensor) -> torch.Tensor:
        h = z_q + self.pos if self.pos is not None else z_q
        h = self.mid(self.conv_in(h))
        for up in self.ups:
            h = up(h)
        return self.conv_out(self.act_out(self.norm_out(h)))

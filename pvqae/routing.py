"""Dynamic Routing Module and mixed-resolution code maps (paper Sec. III-B1, Fig. 3).

For every patch of the coarsest grid the router picks one of three resolutions
(index 0 = coarse, 1 = median, 2 = fine):

1. the finer embeddings are average-pooled to the coarsest grid ("applies average pooling to
   feature embeddings at different resolutions, except for the finest level, ensuring all
   embeddings are resized" -- i.e. everything is brought to the coarse patch grid, as in
   DQ-VAE, the reference code of [40]);
2. the pooled embeddings are concatenated and passed through an MLP with **one hidden
   layer** (Sec. IV-A) that outputs 3 logits per coarse patch;
3. Gumbel-softmax with temperature tau gives the score s_k = softmax((log pi_k + g_k)/tau);
   training uses the hard one-hot sample in the forward pass with the soft sample's
   gradient (straight-through), evaluation the noise-free argmax.

``assemble_codes`` fills each coarse patch region with the codes of its chosen level,
upsampled (repeated) to the finest grid. Multiplying by the straight-through gate lets the
reconstruction loss reach the router, not only the budget loss.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pvqae.autoencoder import norm


class RoutingOutput(NamedTuple):
    """Router result on the coarse grid (G x G).

    Attributes:
        logits: (B, K, G, G) routing logits.
        gate: (B, K, G, G) one-hot gate (straight-through soft gradient in training).
        levels: (B, G, G) int64 chosen level per coarse patch.
    """

    logits: torch.Tensor
    gate: torch.Tensor
    levels: torch.Tensor


class DynamicRouter(nn.Module):
    """Dynamic Routing Module: pool -> concat -> MLP(one hidden layer) -> Gumbel-softmax.

    Args:
        dim: channel count of each level's embedding.
        num_levels: number of candidate resolutions K (3 in the paper).
        hidden: width of the MLP's hidden layer.
        groups: GroupNorm groups applied to each level before pooling (DQ-VAE).
    """

    def __init__(self, dim: int, num_levels: int = 3, hidden: int = 128, groups: int = 32):
        super().__init__()
        self.num_levels = num_levels
        self.norms = nn.ModuleList([norm(dim, groups) for _ in range(num_levels)])
        self.mlp = nn.Sequential(nn.Linear(num_levels * dim, hidden), nn.SiLU(), nn.Linear(hidden, num_levels))

    def forward(
        self,
        feats: list[torch.Tensor],
        tau: float = 1.0,
        hard: bool = True,
        level_map: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> RoutingOutput:
        """Route.

        Args:
            feats: per-level embeddings, coarse first, each (B, D, G*2^k, G*2^k).
            tau: Gumbel-softmax temperature.
            hard: one-hot forward pass (straight-through) if True, else the soft sample.
            level_map: optional (B, G, G) int64 map that overrides the router's choice
                (used to reconstruct with the prior budget, or a forced level); the gate is
                then its one-hot (no gradient to the router).
            generator: optional RNG for the Gumbel noise (reproducible sampling).
        """
        if len(feats) != self.num_levels:
            raise ValueError(f"router expects {self.num_levels} levels, got {len(feats)}")
        g = feats[0].shape[-1]
        pooled = []
        for k, (f, nrm) in enumerate(zip(feats, self.norms)):
            f = nrm(f)
            if f.shape[-1] != g:
                f = F.adaptive_avg_pool2d(f, g)
            pooled.append(f)
        x = torch.cat(pooled, 1).permute(0, 2, 3, 1)  # (B, G, G, K*D)
        logits = self.mlp(x).permute(0, 3, 1, 2).contiguous()  # (B, K, G, G)
        if level_map is not None:
            if level_map.shape != logits.shape[:1] + logits.shape[2:]:
                raise ValueError(f"level_map must be (B, G, G) = {tuple(logits.shape[:1] + logits.shape[2:])}, "
                                 f"got {tuple(level_map.shape)}")
            gate = F.one_hot(level_map.long(), self.num_levels).permute(0, 3, 1, 2).to(logits.dtype)
            return RoutingOutput(logits, gate, level_map.long())
        if self.training:
            gate = gumbel_softmax(logits, tau=tau, hard=hard, dim=1, generator=generator)
        else:
            gate = F.one_hot(logits.argmax(1), self.num_levels).permute(0, 3, 1, 2).to(logits.dtype)
        return RoutingOutput(logits, gate, gate.argmax(1))


def noise_device(generator: torch.Generator | None, like: torch.Tensor) -> torch.device:
    """Where to draw seeded noise: on the generator's device (a CPU generator then gives the same
    noise whatever device the model runs on; move the draw to ``like.device`` after), else ``like``'s."""
    return generator.device if generator is not None else like.device


def gumbel_softmax(logits: torch.Tensor, tau: float = 1.0, hard: bool = True, dim: int = 1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Gumbel-softmax (Jang et al. 2016) with an optional generator for reproducibility."""
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype,
                   device=noise_device(generator, logits)).to(logits.device)
    gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
    soft = F.softmax((logits + gumbel) / tau, dim=dim)
    if not hard:
        return soft
    one_hot = F.one_hot(soft.argmax(dim), logits.shape[dim]).movedim(-1, dim).to(soft.dtype)
    return one_hot + (soft - soft.detach())  # exactly one-hot forward, soft gradient


def upsample_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest (repeat) upsampling of a (B, C, h, h) map to (B, C, size, size)."""
    f = size // x.shape[-1]
    return x if f == 1 else x.repeat_interleave(f, -1).repeat_interleave(f, -2)


def assemble_codes(codes: list[torch.Tensor], gate: torch.Tensor) -> torch.Tensor:
    """Mixed-resolution code map on the finest grid.

    Args:
        codes: quantized codes per level, coarse first, (B, D, G*2^k, G*2^k).
        gate: (B, K, G, G) one-hot (possibly straight-through) gate on the coarse grid.

    Returns:
        (B, D, Gf, Gf): each coarse patch region filled with its chosen level's codes.
    """
    fine = codes[-1].shape[-1]
    out = torch.zeros_like(codes[-1])
    for k, c in enumerate(codes):
        out = out + upsample_to(gate[:, k : k + 1], fine) * upsample_to(c, fine)
    return out


def level_masks(gate: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Per level, the bool mask (B, s_k, s_k) of positions whose code is used."""
    hard = gate.detach() > 0.5
    return [upsample_to(hard[:, k : k + 1].float(), s)[:, 0] > 0.5 for k, s in enumerate(sizes)]

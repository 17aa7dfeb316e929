"""Vector quantizer (paper Sec. III-A1; van den Oord et al. 2017; VQ-GAN, Esser et al. 2021).

A code is assigned to each embedding by the nearest-neighbour look-up
``q(z) = argmin_k ||z - e_k||``; gradients pass the look-up by the straight-through
estimator ``z + sg(z_q - z)``. The representation loss is

    L_vq = ||sg(z) - z_q||^2 + beta * ||z - sg(z_q)||^2,     beta = 0.25,

i.e. the codebook term pulls codes towards the (frozen) encoder output and the commitment
term, weighted by ``beta``, pulls the encoder towards its (frozen) code. (taming-
transformers' default ``legacy=True`` puts beta on the codebook term instead; we do not.)

Dead codes -- codes no embedding has chosen for ``dead_after`` training steps -- are
restarted on randomly chosen encoder outputs of the current batch, so the whole codebook
stays in use; the usage counts are exposed for logging.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class QuantizerOutput(NamedTuple):
    """Result of quantizing a (B, D, H, W) map.

    Attributes:
        z_q: quantized map with straight-through gradient to the encoder, (B, D, H, W).
        indices: chosen code per position, (B, H, W) int64.
        loss_map: per-position VQ loss (codebook + beta * commitment), (B, H, W); the
            caller reduces it (possibly weighted, see ``pvqae.pvqae_model``).
        perplexity: exp(entropy) of the code histogram of this batch (scalar).
    """

    z_q: torch.Tensor
    indices: torch.Tensor
    loss_map: torch.Tensor
    perplexity: torch.Tensor


class VectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantizer with straight-through gradients.

    Args:
        num_codes: codebook size K.
        dim: code dimension D.
        beta: commitment weight on the encoder term (paper: 0.25).
        dead_after: restart a code unused for this many training forward passes
            (0 disables restarts).
    """

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25, dead_after: int = 100):
        super().__init__()
        self.num_codes = num_codes
        self.dim = dim
        self.beta = beta
        self.dead_after = dead_after
        self.codebook = nn.Embedding(num_codes, dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / num_codes, 1.0 / num_codes)
        # steps since each code was last chosen, and total uses (for logging)
        self.register_buffer("idle_steps", torch.zeros(num_codes, dtype=torch.long))
        self.register_buffer("usage", torch.zeros(num_codes, dtype=torch.long))

    def lookup(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for every position of ``z`` (B, D, H, W) -> (B, H, W)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        e = self.codebook.weight
        dist = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1)[None] - 2.0 * flat @ e.t()
        return dist.argmin(1).view(b, h, w)

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for an index map (B, H, W) -> (B, D, H, W)."""
        return self.codebook(indices).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor, used: torch.Tensor | None = None) -> QuantizerOutput:
        """Quantize ``z``.

        Args:
            z: encoder output (B, D, H, W).
            used: optional bool mask (B, H, W) of the positions whose codes are actually
                used downstream (dynamic routing); only those count for usage statistics
                and dead-code restarts. Default: all positions.
        """
        if z.dim() != 4 or z.shape[1] != self.dim:
            raise ValueError(f"expected z of shape (B, {self.dim}, H, W), got {tuple(z.shape)}")
        with torch.autocast(device_type=z.device.type, enabled=False):  # nearest codes in float32, also under bf16
            return self._quantize(z.float(), used)

    def _quantize(self, z: torch.Tensor, used: torch.Tensor | None) -> QuantizerOutput:
        idx = self.lookup(z.detach())
        z_q = self.embed(idx)
        codebook_term = (z.detach() - z_q).pow(2).mean(1)
        commitment_term = (z - z_q.detach()).pow(2).mean(1)
        loss_map = codebook_term + self.beta * commitment_term
        z_st = z + (z_q - z).detach()

        sel = idx if used is None else idx[used]
        counts = torch.bincount(sel.reshape(-1), minlength=self.num_codes)
        probs = counts.float() / counts.sum().clamp_min(1)
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        if self.training:
            self._update_usage(counts, z.detach(), used)
        return QuantizerOutput(z_st, idx, loss_map, perplexity)

    @torch.no_grad()
    def _update_usage(self, counts: torch.Tensor, z: torch.Tensor, used: torch.Tensor | None) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
        self.usage += counts
        self.idle_steps += 1
        self.idle_steps[counts > 0] = 0
        if self.dead_after <= 0:
            return
        dead = (self.idle_steps >= self.dead_after).nonzero().flatten()
        if dead.numel() == 0:
            return
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim)
        if used is not None:
            flat = flat[used.reshape(-1)]
        synced = torch.distributed.is_available() and torch.distributed.is_initialized()
        if flat.shape[0] == 0 and not synced:
            return
        if flat.shape[0] > 0:
            new = flat[torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)]
        else:  # this process has no used position; rank 0's choice arrives by broadcast
            new = torch.zeros(dead.numel(), self.dim, device=z.device, dtype=z.dtype)
        if synced:  # every process restarts the same codes with rank 0's vectors
            torch.distributed.broadcast(new, src=0)
        self.codebook.weight.data[dead] = new
        self.idle_steps[dead] = 0

    def codes_in_use(self) -> int:
        """Number of codes chosen at least once since the last ``reset_usage``."""
        return int((self.usage > 0).sum())

    def reset_usage(self) -> None:
        self.usage.zero_()

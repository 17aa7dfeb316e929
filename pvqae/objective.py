"""The autoencoder's whole training objective in one place (paper Sec. III-B2, "overall
training objective"), in the manner of taming-transformers' ``VQLPIPSWithDiscriminator``:

    L = L_rec + w_vq L_vq + w_gan(t) L_gan + lambda(t) L_budget,

- L_rec = l1 |x - x^| + l2 (x - x^)^2 + ssim (1 - SSIM(x, x^)) + perceptual d(x, x^); SSIM
  stood in for VQ-GAN's LPIPS (its VGG cannot be downloaded); ``perceptual`` is an LPIPS-like
  distance on the frozen EfficientNet-Lite0 (:mod:`pvqae.perceptual`), off by default;
- L_vq: the quantizers' codebook + commitment loss (each used code once);
- w_gan(t): VQ-GAN's adaptive weight, times ``disc_weight``, 0 before ``disc_start``;
- lambda(t) L_budget: the budget loss (:mod:`pvqae.budget`) weighted by the lambda
  schedule; absent in pre-training and for a static VQ (no routing).

``forward(..., optimizer_idx=0)`` is the generator's loss, ``optimizer_idx=1`` the
discriminator's hinge loss; both return ``(loss, logs)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from pvqae import budget as budget_mod
from pvqae.losses import (
    PatchGANDiscriminator,
    adaptive_gan_weight,
    check_finite,
    disc_factor,
    generator_adv_loss,
    hinge_d_loss,
    ssim,
)

if TYPE_CHECKING:
    from pvqae.model import ModelOutput
    from pvqae.settings import BudgetConfig, PretrainConfig


def reconstruction_loss(x: torch.Tensor, recon: torch.Tensor, *, l1_weight: float = 1.0, l2_weight: float = 0.0,
                        ssim_weight: float = 0.0) -> torch.Tensor:
    """L_rec = l1 |x - x^| + l2 (x - x^)^2 + ssim (1 - SSIM); zero weights skip their term."""
    loss = x.new_zeros(())
    if l1_weight:
        loss = loss + l1_weight * (x - recon).abs().mean()
    if l2_weight:
        loss = loss + l2_weight * (x - recon).pow(2).mean()
    if ssim_weight:
        loss = loss + ssim_weight * (1 - ssim(recon, x, data_range=1.0))
    return loss


class PVQAELoss(nn.Module):
    """The objective of one training stage; owns the PatchGAN discriminator when
    ``disc_weight > 0``. ``budget`` (budget learning only) adds lambda(t) L_budget."""

    def __init__(self, *, in_channels: int, l1_weight: float = 1.0, l2_weight: float = 0.0, ssim_weight: float = 0.2,
                 vq_weight: float = 1.0, disc_weight: float = 0.0, disc_start: int = 0, disc_ch: int = 32,
                 disc_layers: int = 2, budget: BudgetConfig | None = None, perceptual_weight: float = 0.0,
                 perceptual: nn.Module | None = None):
        super().__init__()
        self.rec_weights = {"l1_weight": l1_weight, "l2_weight": l2_weight, "ssim_weight": ssim_weight}
        if perceptual_weight and perceptual is None:
            raise ValueError("perceptual_weight > 0 needs the perceptual module (PVQAELoss.from_config builds it)")
        self.perceptual_weight, self.perceptual = perceptual_weight, perceptual if perceptual_weight else None
        self.vq_weight, self.disc_weight, self.disc_start = vq_weight, disc_weight, disc_start
        self.budget = budget
        self.discriminator = (PatchGANDiscriminator(in_channels, disc_ch, disc_layers, norm="group")
                              if disc_weight > 0 else None)

    @classmethod
    def from_config(cls, train: PretrainConfig, *, in_channels: int, budget: BudgetConfig | None = None) -> "PVQAELoss":
        perceptual = None
        if train.perceptual_weight:
            if in_channels not in (1, 3):
                raise ValueError(f"pretrain.perceptual_weight > 0 compares images, but the autoencoder reads "
                                 f"{in_channels} channels (a feature map): set pretrain.perceptual_weight: 0")
            from pvqae.perceptual import PerceptualLoss

            perceptual = PerceptualLoss.from_config(strides=train.perceptual_strides)
        return cls(in_channels=in_channels, l1_weight=train.l1_weight, l2_weight=train.l2_weight,
                   ssim_weight=train.ssim_weight, vq_weight=train.vq_weight, disc_weight=train.disc_weight,
                   disc_start=train.disc_start, disc_ch=train.disc_ch, disc_layers=train.disc_layers, budget=budget,
                   perceptual_weight=train.perceptual_weight, perceptual=perceptual)

    def adversarial(self, step: int) -> bool:
        """Whether the adversarial terms are on at ``step``."""
        return self.discriminator is not None and step >= self.disc_start

    def forward(self, x: torch.Tensor, out: ModelOutput, *, step: int, optimizer_idx: int = 0,
                entropy: torch.Tensor | None = None, last_layer: torch.Tensor | None = None,
                discriminator: nn.Module | None = None) -> tuple[torch.Tensor, dict]:
        """Generator loss (``optimizer_idx=0``; needs ``entropy`` (B, G, G) for the budget term
        and the decoder's ``last_layer`` for the adaptive GAN weight) or discriminator loss
        (``1``; ``discriminator`` is the module to call, e.g. its DDP wrapper)."""
        if optimizer_idx == 1:
            d = discriminator or self.discriminator
            d_loss = hinge_d_loss(*d(torch.cat([x, out.recon.detach()])).chunk(2))
            check_finite("discriminator loss", d_loss, step)
            return d_loss, {"d": d_loss.item()}
        rec = reconstruction_loss(x, out.recon, **self.rec_weights)
        logs: dict = {"vq": out.vq_loss.item()}
        if self.perceptual is not None:  # part of L_rec: the adaptive GAN weight balances against it too
            p = self.perceptual(x, out.recon)
            rec = rec + self.perceptual_weight * p
            logs["perceptual"] = p.item()
        loss = rec + self.vq_weight * out.vq_loss
        logs["rec"] = rec.item()
        b = self.budget
        if b is not None and b.lambda_max > 0 and out.routing is not None:
            lam = budget_mod.lambda_schedule(step, b.steps, b.lambda_max, b.lambda_schedule, b.lambda_warmup)
            costs = b.budget_scale * budget_mod.level_costs(entropy, 3, b.budget_factor, b.budget_eps).permute(0, 3, 1, 2)
            bl = budget_mod.budget_loss(out.routing.gate, costs, b.budget_reduction)
            loss = loss + lam * bl
            logs.update(lam=lam, budget=bl.item())
        if self.adversarial(step):
            g_loss = generator_adv_loss(self.discriminator(out.recon))
            w = adaptive_gan_weight(rec, g_loss, last_layer) * self.disc_weight * disc_factor(step, self.disc_start)
            loss = loss + w * g_loss
            logs.update(g=g_loss.item(), gw=float(w))
        check_finite("total loss", loss, step)
        return loss, logs

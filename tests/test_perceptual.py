"""The LPIPS-like perceptual term (pvqae.perceptual) and its place in the objective."""

from __future__ import annotations

import pytest
import torch

from pvqae.objective import PVQAELoss
from pvqae.perceptual import PerceptualLoss
from pvqae.settings import PretrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(seed: int = 0, n: int = 2, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def test_distance_is_zero_on_itself_grows_with_the_change_and_trains_only_the_reconstruction(lite0):
    loss = PerceptualLoss(lite0)
    x = _images()
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    small = (x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    big = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert 0 < loss(x, small).item() < loss(x, big).item()
    recon = small.clone().requires_grad_(True)
    loss(x, recon).backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in lite0.parameters())  # the backbone stays frozen
    loss.train()
    assert not lite0.training  # BatchNorm keeps the ImageNet statistics
    one = _images(n=1)[:, :1]  # grey input is replicated, as the backbone reads it
    assert loss(one, one).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="no endpoint at stride \\[2\\]"):
        PerceptualLoss(lite0, strides=(2, 8))


class _Out:
    def __init__(self, recon):
        self.recon, self.vq_loss, self.routing = recon, torch.zeros(()), None


def test_the_objective_adds_it_to_l_rec_only_when_weighted(lite0):
    x = _images(size=32)
    recon = (x * 0.8).requires_grad_(True)
    plain = PVQAELoss.from_config(PretrainConfig(disc_weight=0.0), in_channels=3)
    assert plain.perceptual is None
    base, logs = plain(x, _Out(recon), step=0)
    assert "perceptual" not in logs
    weighted = PVQAELoss(in_channels=3, disc_weight=0.0, perceptual_weight=0.5, perceptual=PerceptualLoss(lite0))
    total, logs = weighted(x, _Out(recon), step=0)
    assert logs["perceptual"] > 0
    assert total.item() == pytest.approx(base.item() + 0.5 * logs["perceptual"], rel=1e-5)
    assert logs["rec"] == pytest.approx(total.item(), rel=1e-5)  # part of L_rec (no vq, no budget here)
    cfg = PretrainConfig(disc_weight=0.0, perceptual_weight=1.0)
    assert PVQAELoss.from_config(cfg, in_channels=1).perceptual is not None
    with pytest.raises(ValueError, match="reads 152 channels .* set pretrain.perceptual_weight: 0"):
        PVQAELoss.from_config(cfg, in_channels=152)  # PVQAE-F: a feature map, not an image

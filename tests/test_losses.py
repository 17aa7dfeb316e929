"""Tests of pvqae.losses: SSIM, PatchGAN discriminator, hinge losses, adaptive weight."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pvqae.errors import PVQAEError, TrainingError
from pvqae.losses import (
    PatchGANDiscriminator,
    adaptive_gan_weight,
    check_finite,
    disc_factor,
    gaussian_window,
    generator_adv_loss,
    hinge_d_loss,
    ssim,
    ssim_loss,
)


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 32, 32, generator=g)


# ---------------------------------------------------------------------------- SSIM


def test_gaussian_window_normalised_and_symmetric():
    w = gaussian_window(11, 1.5)
    assert w.shape == (11, 11)
    assert torch.isclose(w.sum(), torch.tensor(1.0))
    assert torch.allclose(w, w.T)
    assert torch.allclose(w, w.flip(0))
    assert w.argmax() == 5 * 11 + 5  # peak at the centre


@pytest.mark.parametrize("size,sigma", [(10, 1.5), (0, 1.5), (11, 0.0)])
def test_gaussian_window_rejects_bad_args(size, sigma):
    with pytest.raises(ValueError):
        gaussian_window(size, sigma)


def test_ssim_identity_is_one(images):
    assert torch.isclose(ssim(images, images), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(ssim(images, images, reduction="none"), torch.ones(2, 1, 32, 32), atol=1e-5)
    assert torch.isclose(ssim_loss(images, images), torch.tensor(0.0), atol=1e-5)


def test_ssim_decreases_with_noise(images):
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(images.shape, generator=g)
    values = [ssim(images, (images + s * noise).clamp(0, 1)).item() for s in (0.0, 0.05, 0.1, 0.2, 0.4)]
    assert all(a > b for a, b in zip(values, values[1:])), values


def test_ssim_symmetric_and_bounded(images):
    g = torch.Generator().manual_seed(2)
    other = torch.rand(images.shape, generator=g)
    assert torch.isclose(ssim(images, other), ssim(other, images), atol=1e-6)
    smap = ssim(images, other, reduction="none")
    assert torch.allclose(smap, ssim(other, images, reduction="none"), atol=1e-6)
    assert smap.min() >= -1.0 and smap.max() <= 1.0
    # anti-correlated images reach strongly negative SSIM, still bounded
    anti = ssim(images, 1.0 - images, reduction="none")
    assert anti.min() >= -1.0 and anti.mean() < 0


def test_ssim_map_shape_and_mean_consistency(images):
    other = images.flip(-1)
    smap = ssim(images, other, reduction="none")
    assert smap.shape == (2, 1, 32, 32)
    assert torch.isclose(smap.mean(), ssim(images, other), atol=1e-6)
    assert ssim_loss(images, other, reduction="none").shape == (2, 1, 32, 32)


def test_ssim_constant_images_known_value():
    # Constant images: all local variances/covariance are 0, so the contrast-structure
    # term is C2/C2 = 1 and SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 L)^2.
    a, b, L = 0.2, 0.6, 1.0
    c1 = (0.01 * L) ** 2
    expected = (2 * a * b + c1) / (a**2 + b**2 + c1)  # = 0.2401 / 0.4001 = 0.60010...
    x = torch.full((1, 3, 16, 16), a, dtype=torch.float64)
    y = torch.full((1, 3, 16, 16), b, dtype=torch.float64)
    assert math.isclose(ssim(x, y).item(), expected, rel_tol=1e-9)
    assert torch.allclose(ssim(x, y, reduction="none"), torch.full((1, 1, 16, 16), expected, dtype=torch.float64))
    # data_range scales the constants: same images in [0, 255]
    c1_255 = (0.01 * 255) ** 2
    expected_255 = (2 * (a * 255) * (b * 255) + c1_255) / ((a * 255) ** 2 + (b * 255) ** 2 + c1_255)
    assert math.isclose(ssim(x * 255, y * 255, data_range=255.0).item(), expected_255, rel_tol=1e-9)
    assert math.isclose(expected_255, expected, rel_tol=1e-12)  # SSIM is scale invariant


def _reference_ssim_map(x, y, window_size=11, sigma=1.5, data_range=1.0):
    """Textbook SSIM: full 2-D Gaussian window on each channel, reflect padding."""
    b, c, h, w = x.shape
    win = gaussian_window(window_size, sigma, dtype=x.dtype).view(1, 1, window_size, window_size)
    pad = window_size // 2

    def blur(t):  # each (image, channel) filtered on its own
        t = torch.nn.functional.pad(t.reshape(b * c, 1, h, w), (pad,) * 4, mode="reflect")
        return torch.nn.functional.conv2d(t, win).view(b, c, h, w)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def test_ssim_matches_textbook_formula():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 20, 24, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    ref = _reference_ssim_map(x, y)
    assert torch.allclose(ssim(x, y, reduction="none"), ref.mean(dim=1, keepdim=True), atol=1e-10)
    assert torch.allclose(ssim(x, y), ref.mean(), atol=1e-10)
    ref7 = _reference_ssim_map(x, y, window_size=7, sigma=1.0)
    assert torch.allclose(ssim(x, y, window_size=7, sigma=1.0), ref7.mean(), atol=1e-10)


def test_ssim_errors():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, torch.rand(1, 1, 8, 9))
    with pytest.raises(ValueError, match="too small"):
        ssim(x, x, window_size=17)
    with pytest.raises(ValueError, match="reduction"):
        ssim(x, x, window_size=3, reduction="sum")


def test_ssim_differentiable(images):
    y = images.clone().flip(-2).requires_grad_(True)
    ssim_loss(images, y).backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


# ------------------------------------------------------------------ discriminator


@pytest.mark.parametrize("size,expected", [(64, 6), (128, 14)])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_discriminator_output_shape(size, expected, norm):
    disc = PatchGANDiscriminator(in_channels=3, ch=8, n_layers=3, norm=norm)
    out = disc(torch.rand(2, 3, size, size))
    assert out.shape == (2, 1, expected, expected)


def test_discriminator_architecture_defaults():
    disc = PatchGANDiscriminator()
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (3, 64, 2), (64, 128, 2), (128, 256, 2), (256, 512, 1), (512, 1, 1)
    ]
    assert all(c.kernel_size == (4, 4) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in disc.modules()) == 3
    assert not isinstance(disc.main[1], (nn.BatchNorm2d, nn.GroupNorm))  # no norm after layer 1
    # channels are capped at 8 * ch
    deep = PatchGANDiscriminator(ch=4, n_layers=5)
    assert max(m.out_channels for m in deep.modules() if isinstance(m, nn.Conv2d)) == 32
    group = PatchGANDiscriminator(norm="group")
    assert all(m.num_groups == 32 for m in group.modules() if isinstance(m, nn.GroupNorm))
    with pytest.raises(ValueError, match="norm"):
        PatchGANDiscriminator(norm="instance")


def test_discriminator_init_stats():
    torch.manual_seed(0)
    disc = PatchGANDiscriminator()  # ~2.8M conv weights: tight statistics
    conv_w = torch.cat([m.weight.flatten() for m in disc.modules() if isinstance(m, nn.Conv2d)])
    assert abs(conv_w.mean().item()) < 1e-3
    assert abs(conv_w.std().item() - 0.02) < 1e-3
    norm_w = torch.cat([m.weight.flatten() for m in disc.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(norm_w.mean().item() - 1.0) < 5e-3
    assert 0.015 < norm_w.std().item() < 0.025
    biases = [m.bias for m in disc.modules() if getattr(m, "bias", None) is not None]
    assert biases and all(torch.all(b == 0) for b in biases)


# ----------------------------------------------------------------- adversarial losses


def test_hinge_losses_known_values():
    ones = torch.ones(2, 1, 6, 6)
    zeros = torch.zeros(2, 1, 6, 6)
    assert hinge_d_loss(ones, -ones).item() == 0.0
    assert hinge_d_loss(zeros, zeros).item() == 1.0
    # real at -1 -> relu(2) = 2; fake at 1 -> relu(2) = 2; 0.5 * (2 + 2) = 2
    assert hinge_d_loss(-ones, ones).item() == 2.0
    assert generator_adv_loss(torch.tensor([1.0, 3.0])).item() == -2.0


def test_disc_factor():
    assert disc_factor(0, 10) == 0.0
    assert disc_factor(9, 10) == 0.0
    assert disc_factor(10, 10) == 1.0
    assert disc_factor(11, 10, factor=0.5) == 0.5


def test_adaptive_gan_weight_matches_manual_ratio():
    torch.manual_seed(0)
    encoder = nn.Linear(4, 3)
    last = nn.Linear(3, 2)
    x, target = torch.randn(5, 4), torch.randn(5, 2)
    out = last(encoder(x))
    rec = (out - target).abs().mean()
    g = -(3.0 * out).mean()

    w = adaptive_gan_weight(rec, g, last.weight)

    grad_rec = torch.autograd.grad(rec, last.weight, retain_graph=True)[0]
    grad_g = torch.autograd.grad(g, last.weight, retain_graph=True)[0]
    manual = grad_rec.norm() / (grad_g.norm() + 1e-4)
    assert torch.isclose(w, manual)
    assert not w.requires_grad and w.grad_fn is None
    assert w.dim() == 0
    # graph retained: the total loss can still be back-propagated; no .grad was touched
    assert last.weight.grad is None
    (rec + w * g).backward()
    assert last.weight.grad is not None


def test_adaptive_gan_weight_clamped():
    w_param = nn.Parameter(torch.ones(3))
    rec = (1e6 * w_param).sum()
    g = (0.0 * w_param).sum()  # zero gradient: ratio 1e6*sqrt(3)/1e-4 -> clamp
    assert adaptive_gan_weight(rec, g, w_param).item() == 1e4
    assert adaptive_gan_weight(rec, g, w_param, max_weight=7.0).item() == 7.0


def test_adaptive_gan_weight_without_graph_raises():
    w_param = nn.Parameter(torch.ones(3))
    with torch.no_grad():
        rec = w_param.sum()
    with pytest.raises(TrainingError, match="last layer"):
        adaptive_gan_weight(rec, w_param.sum(), w_param)


# -------------------------------------------------------------------- check_finite


def test_check_finite_passes_finite_values():
    check_finite("rec_loss", torch.tensor(0.3))
    check_finite("rec_loss", 1.5, step=3)
    check_finite("map", torch.zeros(4, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_finite_raises_with_name_and_step(bad):
    with pytest.raises(TrainingError) as info:
        check_finite("g_loss", torch.tensor(bad), step=1234)
    msg = str(info.value)
    assert "g_loss" in msg and "1234" in msg and "learning rate" in msg and "checkpoint" in msg
    assert isinstance(info.value, PVQAEError) and isinstance(info.value, RuntimeError)
    with pytest.raises(TrainingError, match="d_loss"):
        check_finite("d_loss", bad)
    with pytest.raises(TrainingError, match="ssim"):
        check_finite("ssim", torch.tensor([0.1, bad]))

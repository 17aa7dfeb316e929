"""Reconstruction and adversarial losses of the autoencoder stage (paper Sec. III-A2).

The building blocks; :class:`pvqae.objective.PVQAELoss` combines them into the objective.
Past ~350 lines on purpose: SSIM and the PatchGAN terms are short, their docstrings (window,
constants, the taming-transformers conventions they follow) are most of the file.

The paper builds PVQAE on VQ-GAN (Esser et al. 2021, "Taming Transformers for
High-Resolution Image Synthesis", ref. [35]) and adds "a patch-wise discriminator network
and an additional classification loss to distinguish between reconstructed and real
patches" (Sec. III-A2). This module holds the pieces of that objective, written after the
public VQ-GAN code (``taming/modules/losses/vqperceptual.py`` and
``taming/modules/discriminator/model.py``):

- :func:`ssim` / :func:`ssim_loss`: structural similarity (Wang et al. 2004, "Image quality
  assessment: from error visibility to structural similarity"), used as a reconstruction
  term and, per pixel, as a defect score (as in AE-SSIM, ref. [22]);
- :class:`PatchGANDiscriminator`: the pix2pix / VQ-GAN ``NLayerDiscriminator``;
- :func:`hinge_d_loss`, :func:`generator_adv_loss`: VQ-GAN's hinge losses;
- :func:`adaptive_gan_weight`, :func:`disc_factor`: VQ-GAN's balancing of the adversarial
  term against the reconstruction term and its delayed start;
- :func:`check_finite`: stop training with an actionable message on a NaN/inf loss.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pvqae.errors import TrainingError

__all__ = [
    "gaussian_window",
    "ssim",
    "ssim_loss",
    "PatchGANDiscriminator",
    "hinge_d_loss",
    "generator_adv_loss",
    "adaptive_gan_weight",
    "disc_factor",
    "check_finite",
]


# --------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------


def _gaussian_1d(size: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"SSIM window size must be a positive odd integer, got {size}")
    if sigma <= 0:
        raise ValueError(f"SSIM window sigma must be positive, got {sigma}")
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 2-D Gaussian window of SSIM (Wang et al. 2004, Sec. III-B).

    The window is separable: it is the outer product of a 1-D Gaussian with itself, and
    :func:`ssim` filters with the two 1-D factors (same result, fewer operations).

    Args:
        size: side length of the square window in pixels (odd). Default 11 as in Wang et
            al. 2004.
        sigma: standard deviation of the Gaussian in pixels. Default 1.5 as in Wang et al.
            2004.
        dtype: dtype of the result. Default float32. The window is computed in float64
            and then cast, so that it sums to 1 up to the precision of ``dtype`` (a
            window summing to ``1 - d`` biases the local variances by ``~d * mu^2``, which
            is not negligible next to ``C2``).

    Returns:
        Tensor of shape ``(size, size)`` summing to 1.

    Raises:
        ValueError: if ``size`` is not a positive odd integer or ``sigma`` is not positive.
    """
    g = _gaussian_1d(size, sigma, torch.float64)
    return torch.outer(g, g).to(dtype)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    reduction: Literal["mean", "none"] = "mean",
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity with a Gaussian window (Wang et al. 2004).

    Local means, variances and covariance are computed per channel with a normalised
    Gaussian window; the SSIM map is

    ``((2 mu_x mu_y + C1) (2 sigma_xy + C2)) / ((mu_x^2 + mu_y^2 + C1) (sigma_x^2 + sigma_y^2 + C2))``

    with ``C1 = (k1 L)^2`` and ``C2 = (k2 L)^2``, ``L = data_range``.

    Borders: unlike the original "valid" implementation, the map has the input's size
    ("same" output): the images are padded by ``window_size // 2`` pixels with
    *reflect* padding before filtering, so border statistics mirror the interior instead
    of being dragged towards zero as with zero padding. This is what makes a per-pixel
    SSIM map usable as a defect score map up to the image border. Reflect padding needs
    ``H, W > window_size // 2``.

    Args:
        x: images ``(B, C, H, W)``, values in ``[0, data_range]``.
        y: images of the same shape as ``x``.
        window_size: side of the Gaussian window (odd). Default 11 (Wang et al. 2004).
        sigma: standard deviation of the window. Default 1.5 (Wang et al. 2004).
        data_range: dynamic range ``L`` of the pixel values (1.0 for images in [0, 1]).
        reduction: ``"mean"`` returns a scalar (mean over batch, channels and pixels);
            ``"none"`` returns the per-pixel SSIM map averaged over channels, shape
            ``(B, 1, H, W)``.
        k1: stabiliser constant of the luminance term. Default 0.01 (Wang et al. 2004).
        k2: stabiliser constant of the contrast-structure term. Default 0.03 (Wang et al.
            2004).

    Returns:
        A scalar tensor (``reduction="mean"``) or a ``(B, 1, H, W)`` map. Values lie in
        ``[-1, 1]``; identical images give 1.

    Raises:
        ValueError: on mismatched or non-4-D shapes, an image too small for the window,
            or an unknown reduction.
    """
    if x.shape != y.shape:
        raise ValueError(f"ssim: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() != 4:
        raise ValueError(f"ssim: expected (B, C, H, W) tensors, got shape {tuple(x.shape)}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"ssim: reduction must be 'mean' or 'none', got {reduction!r}")
    pad = window_size // 2
    h, w = x.shape[-2:]
    if pad >= h or pad >= w:
        raise ValueError(
            f"ssim: images of size {h}x{w} are too small for reflect padding of a "
            f"{window_size}x{window_size} window; use a smaller window_size"
        )

    dtype = x.dtype if x.is_floating_point() else torch.float32
    x = x.to(dtype)
    y = y.to(dtype)
    g = _gaussian_1d(window_size, sigma, dtype).to(x.device)

    # Local statistics of the five maps x, y, x^2, y^2, xy in one pass: the maps are
    # stacked along the channel axis and each channel is filtered on its own (grouped
    # conv) with the separable window, as a row then a column 1-D Gaussian filter.
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5C, H, W)
    n_maps = maps.shape[1]
    row = g.view(1, 1, 1, window_size).expand(n_maps, 1, 1, window_size)
    col = g.view(1, 1, window_size, 1).expand(n_maps, 1, window_size, 1)
    maps = F.pad(maps, (pad, pad, pad, pad), mode="reflect")
    maps = F.conv2d(F.conv2d(maps, row, groups=n_maps), col, groups=n_maps)
    mu_x, mu_y, e_xx, e_yy, e_xy = maps.chunk(5, dim=1)

    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    sigma_xx = e_xx - mu_xx
    sigma_yy = e_yy - mu_yy
    sigma_xy = e_xy - mu_xy

    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    numerator = (2.0 * mu_xy + c1) * (2.0 * sigma_xy + c2)
    denominator = (mu_xx + mu_yy + c1) * (sigma_xx + sigma_yy + c2)
    ssim_map = numerator / denominator  # (B, C, H, W)

    if reduction == "none":
        return ssim_map.mean(dim=1, keepdim=True)
    return ssim_map.mean()


def ssim_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """``1 - ssim(x, y)``: a reconstruction loss (0 for identical images).

    Args:
        x, y, window_size, sigma, data_range, reduction: as in :func:`ssim`.

    Returns:
        Scalar loss, or a ``(B, 1, H, W)`` per-pixel dissimilarity map with
        ``reduction="none"`` (usable as a defect score map).
    """
    return 1.0 - ssim(x, y, window_size=window_size, sigma=sigma, data_range=data_range, reduction=reduction)


# --------------------------------------------------------------------------------------
# PatchGAN discriminator
# --------------------------------------------------------------------------------------


def _norm_layer(kind: str, channels: int, num_groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        # gcd keeps any `ch` valid: with the default 32 groups and ch=64 every layer has
        # exactly 32 groups; a tiny test network (ch=8) gets fewer, never an error.
        return nn.GroupNorm(math.gcd(num_groups, channels), channels)
    raise ValueError(f"PatchGANDiscriminator: norm must be 'batch' or 'group', got {kind!r}")


class PatchGANDiscriminator(nn.Module):
    """Patch-wise discriminator of VQ-GAN (paper Sec. III-A2; Esser et al. 2021).

    The pix2pix ``NLayerDiscriminator`` (Isola et al. 2017) as used by VQ-GAN:

    1. ``Conv4x4(in_channels -> ch, stride 2)`` + LeakyReLU(0.2), no normalisation;
    2. ``n_layers - 1`` blocks ``Conv4x4(stride 2)`` doubling the channels (capped at
       ``8 * ch``) + norm + LeakyReLU(0.2);
    3. ``Conv4x4(stride 1)`` to ``min(2**n_layers, 8) * ch`` channels + norm + LeakyReLU;
    4. ``Conv4x4(stride 1)`` to 1 channel: one real/fake logit per receptive-field patch.

    All convolutions use padding 1; convolutions followed by a norm layer have no bias
    (the norm's shift replaces it). With the defaults (``n_layers=3``) a 256x256 image
    gives a 30x30 logit map, each logit seeing a 70x70 patch.

    Initialisation follows VQ-GAN's ``weights_init``: conv weights ~ N(0, 0.02), norm
    weights ~ N(1, 0.02), all biases 0.

    Args:
        in_channels: channels of the input images. Default 3 (RGB).
        ch: channels of the first layer. Default 64 (VQ-GAN ``disc_ndf``).
        n_layers: number of stride-2 convolutions. Default 3 (VQ-GAN ``disc_num_layers``).
        norm: ``"batch"`` (BatchNorm2d, as in VQ-GAN, the default) or ``"group"``
            (GroupNorm; independent of the batch size, so it behaves the same with batch
            size 1 and under DDP without SyncBatchNorm).
        num_groups: number of GroupNorm groups when ``norm="group"`` (reduced to
            ``gcd(num_groups, channels)`` for layers whose width it does not divide).
            Default 32. Ignored for ``norm="batch"``.
        leaky_slope: negative slope of the LeakyReLUs. Default 0.2 (pix2pix / VQ-GAN).
        init_std: standard deviation of the weight initialisation. Default 0.02.
    """

    def __init__(
        self,
        in_channels: int = 3,
        ch: int = 64,
        n_layers: int = 3,
        norm: Literal["batch", "group"] = "batch",
        num_groups: int = 32,
        leaky_slope: float = 0.2,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"PatchGANDiscriminator: n_layers must be >= 1, got {n_layers}")
        _norm_layer(norm, ch, num_groups)  # validate `norm` early, even for n_layers=1
        kernel, padding = 4, 1

        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ch, kernel_size=kernel, stride=2, padding=padding),
            nn.LeakyReLU(leaky_slope, inplace=True),
        ]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ch * prev, ch * mult, kernel_size=kernel, stride=2, padding=padding, bias=False),
                _norm_layer(norm, ch * mult, num_groups),
                nn.LeakyReLU(leaky_slope, inplace=True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ch * prev, ch * mult, kernel_size=kernel, stride=1, padding=padding, bias=False),
            _norm_layer(norm, ch * mult, num_groups),
            nn.LeakyReLU(leaky_slope, inplace=True),
            nn.Conv2d(ch * mult, 1, kernel_size=kernel, stride=1, padding=padding),
        ]
        self.main = nn.Sequential(*layers)
        self.reset_parameters(init_std)

    def reset_parameters(self, init_std: float = 0.02) -> None:
        """Re-initialise as VQ-GAN: conv ~ N(0, std), norm weight ~ N(1, std), biases 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.normal_(m.weight, 1.0, init_std)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the patch logit map ``(B, 1, H', W')`` (no sigmoid)."""
        return self.main(x)


# --------------------------------------------------------------------------------------
# Adversarial losses and their weighting
# --------------------------------------------------------------------------------------


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator (VQ-GAN ``hinge_d_loss``).

    ``0.5 * (mean(relu(1 - logits_real)) + mean(relu(1 + logits_fake)))``: zero once real
    patches score >= 1 and reconstructed ones <= -1.

    Args:
        logits_real: discriminator logits on real images (any shape).
        logits_fake: discriminator logits on reconstructions (any shape), computed on
            *detached* reconstructions when training the discriminator.

    Returns:
        Scalar tensor.
    """
    loss_real = F.relu(1.0 - logits_real).mean()
    loss_fake = F.relu(1.0 + logits_fake).mean()
    return 0.5 * (loss_real + loss_fake)


def generator_adv_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Adversarial loss of the autoencoder (generator): ``-mean(logits_fake)`` (VQ-GAN).

    Args:
        logits_fake: discriminator logits on (non-detached) reconstructions.

    Returns:
        Scalar tensor.
    """
    return -logits_fake.mean()


def adaptive_gan_weight(
    rec_loss: torch.Tensor,
    g_loss: torch.Tensor,
    last_layer_weight: torch.Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Adaptive weight of the adversarial term (Esser et al. 2021, Eq. 7).

    ``lambda = ||grad_L rec_loss|| / (||grad_L g_loss|| + eps)``, where ``L`` is the last
    layer of the decoder, clamped to ``[0, max_weight]`` and detached, so that the
    adversarial gradient reaching the decoder has the size of the reconstruction
    gradient.

    The caller multiplies the result by its ``disc_weight`` hyper-parameter and by
    :func:`disc_factor` (0 before ``disc_start``), i.e. the adversarial term of the
    autoencoder loss is ``lambda * disc_weight * disc_factor(step, disc_start) * g_loss``.
    Before ``disc_start`` the caller may skip this function entirely (saves two backward
    passes).

    Both gradients are taken with ``torch.autograd.grad(..., retain_graph=True)``, so the
    graph is kept for the later ``backward()`` of the total loss, and nothing is
    accumulated into ``.grad``.

    Args:
        rec_loss: reconstruction (NLL) loss, a scalar depending on ``last_layer_weight``.
        g_loss: generator adversarial loss (:func:`generator_adv_loss`), a scalar
            depending on ``last_layer_weight``.
        last_layer_weight: weight of the decoder's last layer (e.g.
            ``decoder.conv_out.weight``).
        max_weight: upper clamp of the ratio. Default 1e4 (VQ-GAN).
        eps: added to the denominator against division by zero. Default 1e-4 (VQ-GAN).

    Returns:
        Detached scalar tensor.

    Raises:
        TrainingError: if either loss does not depend on ``last_layer_weight`` (e.g. it
            was computed under ``torch.no_grad()``, or with a frozen decoder).
    """
    try:
        rec_grads = torch.autograd.grad(rec_loss, last_layer_weight, retain_graph=True)[0]
        g_grads = torch.autograd.grad(g_loss, last_layer_weight, retain_graph=True)[0]
    except RuntimeError as exc:
        raise TrainingError(
            "adaptive_gan_weight: could not differentiate the reconstruction and "
            "adversarial losses w.r.t. the decoder's last layer; compute both losses with "
            "gradients enabled (not under torch.no_grad()/eval-only code) and pass the "
            f"decoder's last-layer weight ({exc})"
        ) from exc
    weight = torch.linalg.vector_norm(rec_grads) / (torch.linalg.vector_norm(g_grads) + eps)
    return torch.clamp(weight, 0.0, max_weight).detach()


def disc_factor(step: int, disc_start: int, factor: float = 1.0) -> float:
    """Switch of the adversarial terms (VQ-GAN ``adopt_weight``).

    Args:
        step: current global training step.
        disc_start: first step at which the discriminator and the adversarial term of the
            autoencoder loss are active.
        factor: value returned once active. Default 1.0 (VQ-GAN ``disc_factor``).

    Returns:
        ``0.0`` if ``step < disc_start``, else ``factor``.
    """
    return 0.0 if step < disc_start else float(factor)


def check_finite(name: str, value: torch.Tensor | float, step: int | None = None) -> None:
    """Raise :class:`~pvqae.errors.TrainingError` if a loss is NaN or infinite.

    Call it on each loss term before ``backward()`` so a diverging run stops with the
    name of the culprit instead of silently writing NaN weights into the checkpoints.

    Args:
        name: name of the loss term, used in the message (e.g. ``"rec_loss"``).
        value: the loss (tensor of any shape, or Python number).
        step: current global step, for the message; optional.

    Raises:
        TrainingError: if any element of ``value`` is NaN or +-inf.
    """
    if isinstance(value, torch.Tensor):
        finite = bool(torch.isfinite(value.detach()).all())
        shown = value.detach().float().flatten()[:4].tolist() if value.numel() > 1 else value.item()
    else:
        finite = math.isfinite(float(value))
        shown = value
    if finite:
        return
    where = f" at step {step}" if step is not None else ""
    raise TrainingError(
        f"loss term '{name}' is not finite{where} (value: {shown}). Training diverged: "
        "lower the learning rate, check the data for NaN/inf pixels, and resume from the "
        "last checkpoint."
    )

"""AE-SSIM: a convolutional autoencoder trained with an SSIM loss, scored per pixel by 1 - SSIM.

Bergmann, Löwe, Fauser, Sattlegger and Steger, "Improving Unsupervised Defect Segmentation
by Applying Structural Similarity to Autoencoders", VISAPP 2019 (the PVQAE paper's ref.
[22]). The autoencoder is trained on normal images only, with the loss ``1 - SSIM(x, x^)``
(Gaussian window 11x11, sigma 1.5); at test time the anomaly map of an image is the
per-pixel structural dissimilarity ``1 - SSIM(x, x^)`` between the image and its
reconstruction (the paper thresholds this residual map to segment defects).

Architecture (paper Table 1, at 128x128 input): stride-2 4x4 convolutions interleaved with
3x3 stride-1 convolutions, LeakyReLU(0.2) after every layer except the two outputs, a
d = 100 dimensional dense latent produced by an 8x8 "valid" convolution over the last 8x8
feature grid, and a decoder that mirrors the encoder with transposed convolutions.
What :class:`AESSIM` adapts, and why:

- *image size*: any power of two >= 32. The encoder downsamples to a grid of
  ``min(8, image_size / 16)`` (8x8 at 128 px, the paper's grid; 4x4 at 64 px, 2x2 at 32 px)
  and the latent convolution's kernel covers that grid; images larger than 128 px get extra
  stride-2 convolutions (the paper trained on 128x128 patches);
- *channels*: 1 (the paper's grayscale images) or 3 input channels; the widths scale with
  ``ch`` (paper: 32), i.e. ``ch, ch, 2ch, 4ch`` for the stride-2 convolutions as in
  Table 1's 32, 32, 64, 128;
- *output*: a sigmoid keeps the reconstruction in [0, 1], the range of the inputs and of
  SSIM's ``data_range``;
- *patches*: the paper trains on random 128x128 crops and scores large images patch-wise;
  the study's images are small enough to be processed whole.

Training (:func:`train_ae_ssim`) follows the paper's optimiser: Adam, learning rate 2e-4,
weight decay 1e-5 (here PyTorch's L2 ``weight_decay`` of Adam), on the study's deterministic,
resumable batch stream (:class:`pvqae.batches.BatchStream`, flips + brightness/contrast jitter).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from pvqae import distributed
from pvqae.baselines.common import BaselineOutput
from pvqae.batches import BatchStream
from pvqae.checkpoint import load_checkpoint
from pvqae.losses import check_finite, ssim, ssim_loss
from pvqae.resumable import ResumableRun
from pvqae.strict_config import Config

__all__ = ["AESSIMConfig", "AESSIM", "train_ae_ssim", "load_ae_ssim"]


@dataclass(frozen=True)
class AESSIMConfig(Config):
    """Architecture and optimisation settings of AE-SSIM (params.yaml section ``baselines.ae_ssim``).

    Defaults are the paper's where it gives one: ``ch`` 32, ``latent_dim`` 100, Adam with
    ``lr`` 2e-4 and ``weight_decay`` 1e-5, SSIM window 11. ``augment_jitter`` is the
    brightness/contrast jitter of the training stream (as for PVQAE); the caller builds the
    stream with it and with ``batch_size``.
    """
    SECTION = "baselines.ae_ssim"

    ch: int = 32
    latent_dim: int = 100
    steps: int = 210
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 1e-5
    ssim_window: int = 11
    augment_jitter: float = 0.1
    ckpt_every: int = 200
    log_every: int = 20



def _encoder_layers(in_channels: int, ch: int, latent_dim: int, n_down: int, grid: int) -> list[tuple]:
    """(in, out, kernel, stride, padding) of the encoder's convolutions, input to latent.

    With ``n_down = 4`` this is the paper's Table 1: Conv1 4x4/2 -> ch; Conv2 4x4/2 -> ch;
    Conv3 3x3 -> ch; Conv4 4x4/2 -> 2ch; Conv5 3x3 -> 2ch; Conv6 4x4/2 -> 4ch; Conv7 3x3 -> 2ch;
    Conv8 3x3 -> ch; Conv9 grid x grid "valid" -> latent_dim (1x1).
    """
    widths = [ch * 2 ** min(max(i - 1, 0), 2) for i in range(n_down)]  # ch, ch, 2ch, 4ch, 4ch, ...
    layers, prev = [], in_channels
    for i, w in enumerate(widths):
        layers.append((prev, w, 4, 2, 1))
        if 0 < i < n_down - 1:
            layers.append((w, w, 3, 1, 1))
        prev = w
    layers += [(prev, 2 * ch, 3, 1, 1), (2 * ch, ch, 3, 1, 1), (ch, latent_dim, grid, 1, 0)]
    return layers


class AESSIM(nn.Module):
    """The convolutional autoencoder of Bergmann et al. (VISAPP 2019), any power-of-two size.

    See the module docstring for the layer table and what is adapted from the paper (image
    size via the number of stride-2 convolutions and the latent kernel, 1 or 3 channels,
    sigmoid output). At ``image_size=128, in_channels=1, ch=32, latent_dim=100`` the layers
    are exactly the paper's.

    Args:
        image_size: side of the (square) input images; a power of two >= 32.
        in_channels: 1 or 3.
        ch: base width (paper: 32).
        latent_dim: size of the dense bottleneck (paper: d = 100).
        ssim_window: side of the Gaussian SSIM window used by :meth:`score` (paper: 11).
        leaky_slope: negative slope of the LeakyReLUs (paper: 0.2).
        max_grid: largest spatial grid the encoder stops at before the latent convolution
            (paper: 8, at 128 px).
    """

    def __init__(self, image_size: int = 128, in_channels: int = 1, ch: int = 32, latent_dim: int = 100,
                 ssim_window: int = 11, leaky_slope: float = 0.2, max_grid: int = 8):
        super().__init__()
        if image_size < 32 or image_size & (image_size - 1):
            raise ValueError(f"AESSIM: image_size must be a power of two >= 32, got {image_size}")
        if in_channels not in (1, 3):
            raise ValueError(f"AESSIM: in_channels must be 1 or 3, got {in_channels}")
        self.image_size, self.in_channels, self.ch, self.latent_dim = image_size, in_channels, ch, latent_dim
        self.ssim_window, self.leaky_slope, self.max_grid = ssim_window, leaky_slope, max_grid
        self.grid = min(max_grid, image_size // 16)
        n_down = (image_size // self.grid).bit_length() - 1  # log2(image_size / grid)
        spec = _encoder_layers(in_channels, ch, latent_dim, n_down, self.grid)

        enc: list[nn.Module] = []
        for i, (cin, cout, k, s, p) in enumerate(spec):
            enc.append(nn.Conv2d(cin, cout, k, s, p))
            if i < len(spec) - 1:  # the latent is linear
                enc.append(nn.LeakyReLU(leaky_slope))
        dec: list[nn.Module] = []
        for i, (cin, cout, k, s, p) in enumerate(reversed(spec)):  # the mirror image of the encoder
            dec.append(nn.ConvTranspose2d(cout, cin, k, s, p))
            dec.append(nn.LeakyReLU(leaky_slope) if i < len(spec) - 1 else nn.Sigmoid())
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    @classmethod
    def from_config(cls, cfg: AESSIMConfig, image_size: int, in_channels: int) -> "AESSIM":
        return cls(image_size=image_size, in_channels=in_channels, ch=cfg.ch, latent_dim=cfg.latent_dim,
                   ssim_window=cfg.ssim_window)

    def config(self) -> dict:
        """Constructor arguments (stored in checkpoints, used by :func:`load_ae_ssim`)."""
        return {"image_size": self.image_size, "in_channels": self.in_channels, "ch": self.ch,
                "latent_dim": self.latent_dim, "ssim_window": self.ssim_window, "leaky_slope": self.leaky_slope,
                "max_grid": self.max_grid}

    def _check(self, x: torch.Tensor) -> None:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"AESSIM: expected images of shape (N, {', '.join(map(str, expected))}), "
                             f"got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, S, S) -> latent codes (N, latent_dim)."""
        self._check(x)
        return self.encoder(x).flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent codes (N, latent_dim) -> reconstructions (N, C, S, S) in [0, 1]."""
        return self.decoder(z[:, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x`` (N, C, S, S), values in [0, 1]."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def score(self, x: torch.Tensor, batch_size: int = 32) -> BaselineOutput:
        """Anomaly scores of images ``x`` (N, C, S, S) in [0, 1].

        ``score_map`` (N, S, S) is ``1 - SSIM(x, x^)`` per pixel (Gaussian window
        ``ssim_window``, reflect-padded borders, averaged over channels; 0 where the
        reconstruction matches, up to 2); ``image_score`` (N,) is the map's maximum.
        Processed in chunks of ``batch_size`` on the model's device; results are on ``x``'s.
        """
        device = next(self.parameters()).device
        maps = []
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device)
            recon = self(xb)
            sim = ssim(xb, recon, window_size=self.ssim_window, data_range=1.0, reduction="none")
            maps.append((1.0 - sim[:, 0]).to(x.device))
        score_map = torch.cat(maps)
        return BaselineOutput(score_map=score_map, image_score=score_map.flatten(1).amax(1))


def train_ae_ssim(model: AESSIM, stream: BatchStream, cfg: AESSIMConfig, out_dir: Path, name: str, seed: int,
                  progress: bool = True, fingerprint_extra: object = None) -> dict:
    """Train ``model`` for ``cfg.steps`` steps on the loss ``1 - SSIM(x, x^)`` (mean over pixels).

    Adam (``cfg.lr``, ``cfg.weight_decay``), batches ``stream.batch(step)["image"]``;
    deterministic for a given model initialisation, stream and seed on the CPU. Writes
    ``out_dir/<name>.pt`` (``{"model", "config", "train", "steps", "seed"}``, weights-only),
    ``<name>_log.csv`` (step, loss, ssim) and ``<name>_summary.json``; checkpoints every
    ``cfg.ckpt_every`` steps and resumes after an interruption exactly like
    :func:`pvqae.train.train_autoencoder` (:class:`pvqae.resumable.ResumableRun`, resume folder
    keyed by name, seed, ``cfg``, the architecture and ``fingerprint_extra``). A NaN/inf
    loss raises :class:`pvqae.errors.TrainingError`. Returns the summary dict (steps,
    seconds, images/s, last logged losses).
    """
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = ResumableRun(name, out_dir, key=(name, seed, asdict(cfg), model.config(), fingerprint_extra),
                       state={"model": model, "opt": opt}, steps=cfg.steps, ckpt_every=cfg.ckpt_every)
    net = distributed.wrap(model)  # DDP under torchrun, else the model
    model.train()
    bar = run.steps(progress)
    for step in bar:
        x = distributed.shard(stream.batch(step))["image"]
        loss = ssim_loss(net(x), x, window_size=cfg.ssim_window, data_range=1.0)
        check_finite("ssim loss", loss, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {"step": step, "loss": loss.item(), "ssim": 1.0 - loss.item()}
            run.log.add(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        run.step_done(step)
    model.eval()
    final = {"model": model.state_dict(), "config": model.config(), "train": asdict(cfg), "steps": cfg.steps,
             "seed": seed}
    return run.finish(final, images_per_step=stream.batch_size)


def load_ae_ssim(path: Path) -> AESSIM:
    """Load a model written by :func:`train_ae_ssim` (``weights_only=True``), in eval mode."""
    st = load_checkpoint(path)
    model = AESSIM(**st["config"])
    model.load_state_dict(st["model"])
    return model.eval()

"""Deterministic, resumable mini-batches of in-memory training images, with the paper's
augmentation (Sec. IV-A: random flipping and colour jitter)."""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from pvqae import seeds


class BatchStream:
    """Deterministic, resumable stream of mini-batches from in-memory tensors.

    Epoch e uses the permutation of the ``batch_order`` stream (:mod:`pvqae.seeds`); the batch
    at global step s is therefore a pure function of (seed, s), so a resumed run sees exactly
    the batches the uninterrupted run would have seen. The last incomplete batch of an
    epoch is dropped. ``augment`` is called as ``augment(batch, generator)``.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], batch_size: int, seed: int,
                 augment: Callable[[dict, torch.Generator], dict] | None = None):
        self.tensors = tensors
        self.n = next(iter(tensors.values())).shape[0]
        if self.n == 0:
            raise ValueError("no training images")
        self.batch_size = min(batch_size, self.n)
        self.per_epoch = self.n // self.batch_size
        self.seed = seed
        self.augment = augment

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        epoch, pos = divmod(step, self.per_epoch)
        perm = torch.randperm(self.n, generator=seeds.generator("batch_order", self.seed, epoch))
        idx = perm[pos * self.batch_size:(pos + 1) * self.batch_size]
        b = {k: v[idx] for k, v in self.tensors.items()}
        if self.augment is not None:
            b = self.augment(b, seeds.generator("augment", self.seed, step))
        return b


def flip_augment(b: dict, g: torch.Generator, jitter: float = 0.1) -> dict:
    """Random horizontal flip (image, and the entropy map with it) + brightness/contrast
    jitter of +-``jitter`` (paper Sec. IV-A: "augmented with random flipping and
    color-jittering")."""
    x = b["image"]
    n = x.shape[0]
    flip = torch.rand(n, generator=g) < 0.5
    out = dict(b)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if jitter > 0:
        bright = 1 + (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * jitter
        contrast = 1 + (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * jitter
        mean = x.mean((1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean * bright).clamp(0, 1)
    out["image"] = x
    if "entropy" in b:
        out["entropy"] = torch.where(flip[:, None, None], b["entropy"].flip(-1), b["entropy"])
    return out


def train_stream(split: dict, batch_size: int, seed: int, jitter: float = 0.1) -> BatchStream:
    """Deterministic augmented batch stream over a split's images and entropy maps."""
    return BatchStream({"image": split["image"], "entropy": split["entropy"]}, batch_size, seed,
                       augment=partial(flip_augment, jitter=jitter))


def feature_jitter(x: torch.Tensor, scale: float, g: torch.Generator) -> torch.Tensor:
    """UniAD's feature jitter (You et al., NeurIPS 2022, Sec. 3.4): ``x`` plus Gaussian noise
    whose std at each position is ``scale`` x that position's RMS over channels. Fed to the
    autoencoder while the loss compares with the clean ``x``, it turns reconstruction into
    denoising, so the network cannot learn the identity that also reconstructs defects.
    UniAD's setting (noise std ``20 ||f|| / C`` at C = 272) is ``scale`` = 20 / sqrt(272) = 1.2."""
    if scale <= 0:
        return x
    rms = x.detach().pow(2).mean(dim=1, keepdim=True).sqrt()
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
    return x + scale * rms * noise

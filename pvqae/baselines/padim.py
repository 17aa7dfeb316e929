"""PaDiM (Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly
Detection and Localization", ICPR 2021).

Training images -> frozen ImageNet backbone (``pvqae.backbones``; EfficientNet-Lite0 by
default, the paper's WideResNet-50-2 when its file is given) -> the stride-4, 8 and 16
endpoints (WRN50's ``layer1``-``layer3``), the deeper ones upsampled (nearest, like the
reference's embedding concatenation) to the stride-4 grid and concatenated (WRN50 1792
channels, Lite0 176) -> a fixed random subset of ``dims`` channels (550 of WRN50's; all of
Lite0's) -> per grid position a Gaussian: mean and covariance over the training images,
regularised with ``cov_eps`` (0.01) * I; the inverse covariances are stored.

Test image -> same embedding -> Mahalanobis distance to each position's Gaussian -> grid
upsampled bilinearly to the input size: the raw pixel map. Smoothing and the image score are
the study's shared post-processing (``pvqae.scoring.postprocess``).

Memory: the inverse covariances are P x dims x dims float32 for P = (S / 4)^2 positions,
about 5 GB at 256 px with 550 channels, 0.5 GB with Lite0's 176 (``PaDiM.memory_mb``). They are accumulated batch by
batch (shifted sums of outer products, one batched matmul per batch) and inverted a chunk
of positions at a time, so training features are never all held in memory.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pvqae.backbones import FeatureExtractor
from pvqae.baselines.common import (
    BaselineOutput,
    FrozenBackboneModel,
    patch_scores_to_output,
)

BYTES_PER_FLOAT = 4


def random_channels(total: int, dims: int | None, seed: int) -> torch.Tensor:
    """Sorted random subset of ``dims`` of ``total`` channels (all when ``dims`` is None or >= total)."""
    if dims is None or dims >= total:
        return torch.arange(total)
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:dims].sort().values


def invert_spd(cov: torch.Tensor) -> torch.Tensor:
    """Inverses of a batch of symmetric positive definite matrices (..., d, d) by Cholesky.

    Not ``torch.linalg.inv``: besides being the exact tool for a regularised covariance, the
    Cholesky path stays right where MKL's batched LU does not; with torch 2.13's MKL, after
    ``torch.set_num_threads`` lowers and raises the thread count in a process, batched
    ``inv`` / ``solve`` return garbage or raise "Pivots given to lu_solve must all be >= 1"
    (``tests/test_baselines_memory.py`` reproduces it in a fresh process)."""
    return torch.cholesky_inverse(torch.linalg.cholesky(cov))


class PaDiM(FrozenBackboneModel):
    """PaDiM on a frozen ImageNet backbone (defaults: the paper's / reference's).

    Args:
        backbone: a ``pvqae.backbones`` feature extractor (``load_backbone``); kept frozen in
            eval mode and NOT part of ``state_dict()`` (which holds the channel subset, means
            and inverse covariances); loading a state dict keeps the current backbone.
        strides: backbone endpoints, shallow first; deeper ones are upsampled to the first's grid.
        dims: size of the random channel subset (550 for WRN-50-2; None = all channels).
        cov_eps: covariance regularisation, ``cov + cov_eps * I``.
        seed: seeds the channel subset.
        chunk_size: grid positions per batched inversion / Mahalanobis product.
    """

    def __init__(self, backbone: FeatureExtractor, strides: tuple[int, ...] = (4, 8, 16),
                 dims: int | None = 550, cov_eps: float = 0.01, seed: int = 0, chunk_size: int = 256):
        super().__init__(backbone, resizable=("mean", "cov_inv"))
        self.strides = tuple(strides)
        self.cov_eps = cov_eps
        self.seed = seed
        self.chunk_size = chunk_size
        total = sum(backbone.endpoints[s] for s in self.strides)
        self.register_buffer("channel_index", random_channels(total, dims, seed))
        d = len(self.channel_index)
        self.register_buffer("mean", torch.zeros(0, d))  # (P, d) after fit
        self.register_buffer("cov_inv", torch.zeros(0, d, d))  # (P, d, d) after fit

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, h, w, d) of images (N, C, S, S) in [0, 1] on the first endpoint's grid (h = ceil(S / 4))."""
        feats = self.backbone.features(images.to(self.device), self.strides)
        grid = feats[self.strides[0]].shape[-2:]
        emb = torch.cat([f if f.shape[-2:] == grid else F.interpolate(f, size=grid, mode="nearest")
                         for f in (feats[s] for s in self.strides)], 1)
        emb = emb.index_select(1, self.channel_index)
        return emb.permute(0, 2, 3, 1)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, batch_size: int = 16, progress: bool = True) -> dict:
        """Fit the per-position Gaussians to training images (N, C, S, S) in [0, 1] (defect-free)."""
        t0 = time.perf_counter()
        n = 0
        shift = total = outer = None
        for i in tqdm(range(0, len(images), batch_size), desc="padim features", disable=not progress, leave=False):
            emb = self.embed(images[i:i + batch_size]).flatten(1, 2)  # (B, P, d)
            if shift is None:  # shifted sums: numerically stable one-pass covariance
                shift = emb.mean(0)
                total = torch.zeros_like(shift)
                outer = torch.zeros(*shift.shape, shift.shape[1], dtype=emb.dtype, device=emb.device)
            x = (emb - shift).permute(1, 2, 0)  # (P, d, B)
            total += x.sum(2)
            outer.baddbmm_(x, x.transpose(1, 2))  # += sum_b x x^T per position
            n += emb.shape[0]
        if n == 0:
            raise ValueError("PaDiM.fit needs at least one training image")
        centred_sum = total / n
        # covariance in place of the outer-product sums: (sum x x^T - n m m^T) / (n - 1) + eps I
        outer.baddbmm_(centred_sum.unsqueeze(2), total.unsqueeze(1), alpha=-1)
        outer /= max(n - 1, 1)
        outer.diagonal(dim1=1, dim2=2).add_(self.cov_eps)
        for p in range(0, len(outer), self.chunk_size):  # invert in place, a chunk of positions at a time
            outer[p:p + self.chunk_size] = invert_spd(outer[p:p + self.chunk_size])
        self.mean = shift + centred_sum
        self.cov_inv = outer
        positions, d = self.mean.shape
        return {"n_train_images": n, "positions": positions, "feature_dim": d,
                "mb": (self.mean.numel() + self.cov_inv.numel()) * BYTES_PER_FLOAT / 1e6,
                "seconds": time.perf_counter() - t0}

    def mahalanobis(self, emb: torch.Tensor) -> torch.Tensor:
        """(N, P) Mahalanobis distances of embeddings (N, P, d) to the fitted Gaussians."""
        if emb.shape[1] != len(self.mean):
            raise ValueError(f"PaDiM was fitted on {len(self.mean)} positions, got {emb.shape[1]} "
                             "(test images must have the training image size)")
        out = []
        for p in range(0, emb.shape[1], self.chunk_size):
            delta = (emb[:, p:p + self.chunk_size] - self.mean[p:p + self.chunk_size]).transpose(0, 1)  # (p, N, d)
            out.append((torch.bmm(delta, self.cov_inv[p:p + self.chunk_size]) * delta).sum(-1))  # (p, N)
        return torch.cat(out).t().clamp_min(0).sqrt()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> BaselineOutput:
        """Raw pixel score maps (N, S, S) and their max (N,) of images (N, C, S, S) in [0, 1]."""
        if len(self.mean) == 0:
            raise RuntimeError("PaDiM is not fitted: call fit() or load_state_dict() first")
        emb = self.embed(images)
        n, h, w, d = emb.shape
        dist = self.mahalanobis(emb.reshape(n, h * w, d)).view(n, h, w)
        return patch_scores_to_output(dist, tuple(images.shape[-2:]))

    @staticmethod
    def memory_mb(image_size: int, dims: int = 550, stride: int = 4) -> float:
        """MB of the fitted float32 state (means + inverse covariances) from the architecture:
        ceil(S / 4)^2 positions x (dims + dims^2) floats."""
        positions = math.ceil(image_size / stride) ** 2
        return positions * (dims + dims * dims) * BYTES_PER_FLOAT / 1e6

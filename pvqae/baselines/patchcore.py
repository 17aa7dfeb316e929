"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

Training images -> frozen ImageNet backbone (``pvqae.backbones``; EfficientNet-Lite0 by
default, the paper's WideResNet-50-2 when its file is given) -> the stride-8 and stride-16
endpoints (WRN50's ``layer2`` and ``layer3``), each averaged over its 3x3 neighbourhood
(locally aware patch features) -> the stride-16 map upsampled bilinearly to the stride-8
grid -> channel dimension reduced by adaptive average pooling to ``feature_dim`` (1024) ->
one vector per stride-8 position and image: the memory bank. Greedy k-center coreset subsampling keeps
``coreset_ratio`` (10 %) of the bank, chosen on a sparse random projection to
``projection_dim`` (128) dimensions.

Test image -> same patch features -> Euclidean distance of each to its nearest bank vector
-> patch score grid -> bilinear upsampling to the input size: the raw pixel map. Smoothing
and the image score are the study's shared post-processing (``pvqae.scoring.postprocess``,
applied by the harness to every method; the paper's neighbourhood re-weighting of the image
score is not used).

Channel reduction follows the reference code (amazon-science/patchcore-inspection): each
layer's features are adaptive-average-pooled to ``feature_dim`` channels, the two are
concatenated and pooled again to ``feature_dim``, so both layers get equal weight (WRN50 with
1024: layer2's 512 channels as they are, layer3's 1024 averaged in pairs; EfficientNet-Lite0's
40 and 112 channels are each spread over 1024 before the pairs are averaged). The 3x3
neighbourhood average uses zero padding at the border, like the reference's unfold.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pvqae.backbones import FeatureExtractor
from pvqae.baselines.common import (
    BaselineOutput,
    FrozenBackboneModel,
    patch_scores_to_output,
)

BYTES_PER_FLOAT = 4


def coreset_size(n: int, ratio: float) -> int:
    """Number of bank vectors kept: ceil(ratio * n), at least 1 (ratio >= 1 keeps all)."""
    if ratio >= 1:
        return n
    return max(1, min(n, math.ceil(ratio * n - 1e-9)))  # 1e-9: 0.1 * 30 is 3.0000000000000004


def sparse_random_projection(in_dim: int, out_dim: int, seed: int, density: float | None = None) -> torch.Tensor:
    """(in_dim, out_dim) sparse random projection (Achlioptas 2003; Li et al. 2006), as
    scikit-learn's ``SparseRandomProjection`` used by the PatchCore references: entries
    +-sqrt(1 / (density * out_dim)) with probability density / 2 each, else 0; density
    defaults to 1 / sqrt(in_dim). Distances are preserved in expectation."""
    density = 1 / math.sqrt(in_dim) if density is None else density
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(in_dim, out_dim, generator=g)
    sign = torch.where(torch.rand(in_dim, out_dim, generator=g) < 0.5, -1.0, 1.0)
    return torch.where(u < density, sign, torch.zeros(())) / math.sqrt(density * out_dim)


def greedy_coreset(x: torch.Tensor, n: int, seed: int = 0, start: int | None = None,
                   progress: bool = False) -> torch.Tensor:
    """Greedy k-center selection of ``n`` rows of ``x`` (N, D) (Sener & Savarese 2018; PatchCore Alg. 1).

    Starts from row ``start`` (default: a random row drawn with ``seed``) and repeatedly adds
    the row farthest from everything selected so far, keeping a running vector of each
    row's distance to its nearest selected row: O(N * n * D) time, O(N) extra memory
    (squared distances from precomputed norms, one matrix-vector product per step).

    Returns:
        (n,) long indices into ``x`` in selection order.
    """
    num = x.shape[0]
    if not 1 <= n <= num:
        raise ValueError(f"coreset size must be in [1, {num}], got {n}")
    if start is None:
        start = int(torch.randint(num, (1,), generator=torch.Generator().manual_seed(seed)))
    sq_norms = (x * x).sum(1)
    selected = torch.empty(n, dtype=torch.long, device=x.device)
    min_dist = torch.full((num,), float("inf"), dtype=x.dtype, device=x.device)
    idx = torch.tensor(start, device=x.device)
    for i in tqdm(range(n), desc="coreset", disable=not progress, leave=False):
        selected[i] = idx
        center = x[idx]
        dist = (sq_norms - 2 * (x @ center) + sq_norms[idx]).clamp_min_(0)
        torch.minimum(min_dist, dist, out=min_dist)
        min_dist[idx] = 0  # exact, whatever the rounding of the expansion above
        idx = torch.argmax(min_dist)
    return selected


def nearest_distance(queries: torch.Tensor, bank: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """(Q,) Euclidean distance of each query (Q, D) to its nearest row of ``bank`` (M, D),
    ``chunk_size`` queries at a time (peak memory chunk_size * M floats).

    The nearest row is found with ``torch.cdist`` (its matrix-multiply expansion
    ``|q|^2 - 2 q.b + |b|^2``, fast but with cancellation error of order eps * |q|^2), and its
    distance is then recomputed directly as ``|q - b|``, so a query equal to a bank row scores
    exactly 0 and small distances keep their relative precision."""
    out = []
    for q in queries.split(chunk_size):
        idx = torch.cdist(q, bank).argmin(1)
        out.append((q - bank[idx]).norm(dim=1))
    return torch.cat(out)


class PatchCore(FrozenBackboneModel):
    """PatchCore on a frozen ImageNet backbone (defaults: the paper's / reference's).

    Args:
        backbone: a ``pvqae.backbones`` feature extractor (``load_backbone``); kept frozen in
            eval mode. It is NOT part of ``state_dict()``: the state dict is the fitted
            memory bank only (the backbone's weights are a public file); loading a state
            dict keeps the current backbone.
        strides: backbone endpoints, shallow first; deeper ones are upsampled to the first's grid.
        coreset_ratio: fraction of the training patch features kept (1.0 = the full bank).
        projection_dim: dimension of the sparse random projection the coreset is chosen on.
        feature_dim: channel dimension after adaptive average pooling (None = concatenation
            of the endpoints' channels: 1536 for WRN50's layer2 + layer3, 152 for Lite0's).
        neighbourhood: side of the local average pooling window (3; 1 = off).
        seed: seeds the projection and the coreset's first pick.
        chunk_size: test patches per ``torch.cdist`` call (memory: chunk_size x bank size floats).
    """

    def __init__(self, backbone: FeatureExtractor, strides: tuple[int, ...] = (8, 16),
                 coreset_ratio: float = 0.1, projection_dim: int = 128, feature_dim: int | None = 1024,
                 neighbourhood: int = 3, seed: int = 0, chunk_size: int = 1024):
        super().__init__(backbone, resizable=("memory_bank",))
        if not 0 < coreset_ratio <= 1:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {coreset_ratio}")
        self.strides = tuple(strides)
        self.coreset_ratio = coreset_ratio
        self.projection_dim = projection_dim
        self.feature_dim = feature_dim
        self.neighbourhood = neighbourhood
        self.seed = seed
        self.chunk_size = chunk_size
        dim = feature_dim or sum(backbone.endpoints[s] for s in self.strides)
        self.register_buffer("memory_bank", torch.zeros(0, dim))

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Locally aware patch features (N, h, w, D) of images (N, C, S, S) in [0, 1]; h = ceil(S / 8)."""
        feats = self.backbone.features(images.to(self.device), self.strides)
        grid = feats[self.strides[0]].shape[-2:]
        pool = nn.AvgPool2d(self.neighbourhood, stride=1, padding=self.neighbourhood // 2)
        per_layer = []
        for stride in self.strides:
            f = pool(feats[stride]) if self.neighbourhood > 1 else feats[stride]
            if f.shape[-2:] != grid:
                f = F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
            f = f.permute(0, 2, 3, 1)  # (N, h, w, C)
            if self.feature_dim is not None:
                f = F.adaptive_avg_pool1d(f.reshape(-1, 1, f.shape[-1]), self.feature_dim).view(*f.shape[:3], -1)
            per_layer.append(f)
        out = torch.cat(per_layer, -1)
        if self.feature_dim is not None:
            out = F.adaptive_avg_pool1d(out.reshape(-1, 1, out.shape[-1]), self.feature_dim).view(*out.shape[:3], -1)
        return out

    @torch.no_grad()
    def fit(self, images: torch.Tensor, batch_size: int = 16, progress: bool = True) -> dict:
        """Build the memory bank from training images (N, C, S, S) in [0, 1] (defect-free)."""
        t0 = time.perf_counter()
        chunks = [self.embed(images[i:i + batch_size]) for i in
                  tqdm(range(0, len(images), batch_size), desc="patchcore features", disable=not progress,
                       leave=False)]
        grid = tuple(chunks[0].shape[1:3])
        full = torch.cat([c.reshape(-1, c.shape[-1]) for c in chunks])
        del chunks
        n_keep = coreset_size(len(full), self.coreset_ratio)
        if n_keep < len(full):
            proj = sparse_random_projection(full.shape[1], self.projection_dim, self.seed).to(full)
            idx = greedy_coreset(full @ proj, n_keep, seed=self.seed, progress=progress)
            bank = full[idx]
        else:
            bank = full
        self.memory_bank = bank.contiguous()
        return {"n_train_images": len(images), "grid": grid, "feature_dim": bank.shape[1],
                "bank_size_full": len(full), "bank_size": len(bank),
                "bank_mb_full": full.numel() * BYTES_PER_FLOAT / 1e6, "bank_mb": bank.numel() * BYTES_PER_FLOAT / 1e6,
                "seconds": time.perf_counter() - t0}

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> BaselineOutput:
        """Raw pixel score maps (N, S, S) and their max (N,) of images (N, C, S, S) in [0, 1]."""
        if len(self.memory_bank) == 0:
            raise RuntimeError("PatchCore has an empty memory bank: call fit() or load_state_dict() first")
        emb = self.embed(images)
        n, h, w, d = emb.shape
        dist = nearest_distance(emb.reshape(-1, d), self.memory_bank, self.chunk_size).view(n, h, w)
        return patch_scores_to_output(dist, tuple(images.shape[-2:]))

    @staticmethod
    def memory_bank_mb(n_train_images: int, image_size: int, coreset_ratio: float = 0.1,
                       feature_dim: int = 1024, stride: int = 8) -> dict:
        """Size of the float32 memory bank from the architecture, without running anything:
        one ``feature_dim`` vector per stride-8 position of every training image
        (ceil(S / 8) squared positions, the network's conv arithmetic), before and after the
        coreset. The speed/size benchmark (``pvqae.benchmark``) reports this figure."""
        positions = math.ceil(image_size / stride) ** 2
        n_full = n_train_images * positions
        n_core = coreset_size(n_full, coreset_ratio)
        return {"n_train": n_train_images, "image_size": image_size, "positions_per_image": positions,
                "dim": feature_dim, "bank_size_full": n_full, "bank_size": n_core, "coreset_ratio": coreset_ratio,
                "full_mb": n_full * feature_dim * BYTES_PER_FLOAT / 1e6,
                "coreset_mb": n_core * feature_dim * BYTES_PER_FLOAT / 1e6}

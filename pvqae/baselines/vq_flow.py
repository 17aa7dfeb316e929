"""VQ-Flow (the study's document 001; public code: ``cool-xuan/vqflow``): normalizing flows on
frozen ImageNet features, conditioned through hierarchical vector quantisation, one model for
all classes without class labels.

What is kept of the method, on this project's EfficientNet-Lite0 (``pvqae.backbones``):

- **Conceptual Prototype Codebook (CPC)**: the image's global feature (the stride-32 endpoint,
  average-pooled, through a 2-layer MLP) is quantised to one of ``num_concepts`` prototypes:
  the concept, found without class labels.
- **Concept-Specific Pattern Codebook (CSPC)**: per scale, each position's feature (1x1 MLP)
  is quantised *residually* around ``pos_proto`` = a linear map of [2-D positional encoding,
  prototype]: ``h = pos_proto + Q(h - pos_proto)``; one shared codebook becomes
  concept-specific through the residual, as in the reference code.
- **Flows**: per scale (strides 8 and 16), a FrEIA ``SequenceINN`` of ``AllInOneBlock``
  affine couplings (clamp 1.9, soft-plus global affine), conditioned at every block on
  ``[h, prototype]``. ``subnet`` picks the couplings' subnets: ``mlp``, per-position
  (1 x 1) MLPs, each position's density on its own; ``conv``, the reference's 3 x 3
  convolution, LayerNorm, ReLU, 3 x 3 convolution (``subnet_conv_ln`` of MSFlow, on which
  the reference builds), so a coupling sees the 3 x 3 context of the feature map.
  ``neighbourhood`` k > 1 first averages each endpoint over k x k positions (stride 1; the reference pools 3 x 3 with stride 2, halving the grid).
- **Mixture of Gaussians on the prototypes**: the latent of an image of concept ``k`` is
  scored under ``N(mu_k, diag(sigma_k^2))`` with ``mu_k`` and ``log sigma_k`` linear maps of
  prototype ``k``.
- **Loss**: negative log-likelihood per dimension (the flow's log-determinant and the
  Gaussian's ``-sum log sigma`` included) + the quantisers' VQ losses.
- **Map**: ``-log p`` per position (``0.5 mean_C z^2``, as the reference scores), upsampled and
  summed over the scales; the study's shared post-processing gives the image score.

What differs from the reference, for a 2-core CPU and this backbone (README, method
decisions): the subnets default to per-position MLPs (``subnet: mlp``; a training step takes
0.37 s against 0.65 s with the reference's 3x3 convolutions, ``subnet: conv``, at 128 px on
one thread), there is no
cross-scale fusion flow, the quantisers are the study's straight-through VQ with dead-code
restarts (:mod:`pvqae.quantizer`) instead of EMA k-means, and the Gaussian's log-scale term is
kept in the likelihood (the reference leaves it out).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pvqae.backbones import FeatureExtractor
from pvqae.baselines.common import BaselineOutput
from pvqae.batches import BatchStream
from pvqae.losses import check_finite
from pvqae.quantizer import VectorQuantizer
from pvqae.resumable import ResumableRun
from pvqae.strict_config import Config, ConfigError


@dataclass(frozen=True)
class VQFlowConfig(Config):
    """VQ-Flow settings (params.yaml section ``baselines.vq_flow``)."""
    SECTION = "baselines.vq_flow"

    strides: tuple[int, ...] = (8, 16)  # one flow per backbone endpoint
    num_concepts: int = 8  # CPC size (the reference: 32 for MVTec AD's 15 classes)
    num_patterns: int = 64  # CSPC size per scale (the reference: 512)
    dim: int = 64  # prototype / pattern dimension
    pos_dim: int = 16  # 2-D positional encoding channels
    blocks: int = 4  # coupling blocks per flow
    subnet: str = "mlp"  # coupling subnets: mlp (per position, 1x1) | conv (the reference's 3x3 conv-LN-ReLU-3x3 conv)
    subnet_hidden: int = 128
    clamp: float = 1.9
    neighbourhood: int = 1  # k x k average of each endpoint before its flow (the reference pools 3 x 3); 1 = off
    vq_weight: float = 1.0
    steps: int = 150
    batch_size: int = 16
    lr: float = 1e-4 * 10  # the reference's 1e-4 with 60 short epochs; 10x for a few hundred steps
    grad_clip: float = 2.0
    augment_jitter: float = 0.0  # the reference trains without augmentation
    ckpt_every: int = 200
    log_every: int = 20

    def __post_init__(self):
        if self.subnet not in SUBNETS:
            raise ConfigError(f"{self.SECTION}.subnet must be one of {', '.join(SUBNETS)}, got {self.subnet!r}")


SUBNETS = ("mlp", "conv")


class _ConvLN(nn.Module):
    """3x3 conv, LayerNorm over channels, ReLU, 3x3 conv: the reference's coupling subnet."""

    def __init__(self, c_in: int, hidden: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, hidden, 3, padding=1)
        self.norm = nn.LayerNorm(hidden)
        self.conv2 = nn.Conv2d(hidden, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable first steps
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.conv1(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.conv2(F.relu(h))


def positional_encoding(dim: int, h: int, w: int) -> torch.Tensor:
    """(dim, h, w) 2-D sine / cosine encoding: half the channels for rows, half for columns."""
    quarter = dim // 4
    freq = torch.exp(-math.log(1e4) * torch.arange(quarter) / max(quarter, 1))
    ys, xs = torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32)
    ey = torch.cat([torch.sin(ys[None] * freq[:, None]), torch.cos(ys[None] * freq[:, None])])  # (dim/2, h)
    ex = torch.cat([torch.sin(xs[None] * freq[:, None]), torch.cos(xs[None] * freq[:, None])])  # (dim/2, w)
    return torch.cat([ey[:, :, None].expand(-1, h, w), ex[:, None, :].expand(-1, h, w)])


def _flow(channels: int, cond: int, cfg: VQFlowConfig, seed: int):
    """FrEIA SequenceINN of AllInOneBlocks; its random permutations are drawn from ``seed``
    (FrEIA uses NumPy's global generator). ``subnet: mlp`` flows (P, channels) rows with a
    (P, cond) condition; ``conv`` flows (N, channels, h, w) maps with an (N, cond, h, w)
    condition (built for 1 x 1 maps: the couplings are convolutions, any grid size runs)."""
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    def mlp(c_in: int, c_out: int) -> nn.Module:
        net = nn.Sequential(nn.Linear(c_in, cfg.subnet_hidden), nn.ReLU(), nn.Linear(cfg.subnet_hidden, c_out))
        nn.init.zeros_(net[-1].weight)  # each block starts as the identity: stable first steps
        nn.init.zeros_(net[-1].bias)
        return net

    def conv(c_in: int, c_out: int) -> nn.Module:
        return _ConvLN(c_in, cfg.subnet_hidden, c_out)

    spatial = (1, 1) if cfg.subnet == "conv" else ()
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        inn = Ff.SequenceINN(channels, *spatial)
        for _ in range(cfg.blocks):
            inn.append(Fm.AllInOneBlock, cond=0, cond_shape=(cond, *spatial),
                       subnet_constructor=conv if cfg.subnet == "conv" else mlp,
                       affine_clamping=cfg.clamp, global_affine_type="SOFTPLUS", permute_soft=False)
    finally:
        np.random.set_state(state)
    return inn


class VQFlow(nn.Module):
    """CPC + per-scale CSPC + conditional flows + prototype-reparametrised Gaussians."""

    def __init__(self, backbone: FeatureExtractor, cfg: VQFlowConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone.eval().requires_grad_(False)
        d = cfg.dim
        top = max(backbone.endpoints)
        self.top = top
        self.semantic = nn.Sequential(nn.Linear(backbone.endpoints[top], 2 * d), nn.ReLU(), nn.Linear(2 * d, d))
        self.cpc = VectorQuantizer(cfg.num_concepts, d, dead_after=50)
        self.feature_mlps = nn.ModuleList(nn.Sequential(nn.Conv2d(backbone.endpoints[s], d, 1), nn.ReLU(),
                                                        nn.Conv2d(d, d, 1)) for s in cfg.strides)
        self.pos_proto = nn.ModuleList(nn.Conv2d(cfg.pos_dim + d, d, 1) for _ in cfg.strides)
        self.cspc = nn.ModuleList(VectorQuantizer(cfg.num_patterns, d, dead_after=50) for _ in cfg.strides)
        self.flows = nn.ModuleList(_flow(backbone.endpoints[s], 2 * d, cfg, seed + i) for i, s in enumerate(cfg.strides))
        self.mu = nn.ModuleList(nn.Linear(d, backbone.endpoints[s]) for s in cfg.strides)
        self.log_sigma = nn.ModuleList(nn.Linear(d, backbone.endpoints[s]) for s in cfg.strides)
        for lin in self.log_sigma:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()
        return self

    def latents(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Per scale the standardised latent z (N, C, h, w) and the image's log|det| +
        sum log(1/sigma) (N,); the concept index (N,) and the VQ loss (scalar)."""
        feats = self.backbone.features(images, tuple(sorted(set(self.cfg.strides) | {self.top})))
        g = self.semantic(feats[self.top].mean((2, 3)))
        cpc = self.cpc(g[:, :, None, None])
        proto = cpc.z_q[:, :, 0, 0]  # (N, d)
        vq = cpc.loss_map.mean()
        zs, logdets = [], []
        k = self.cfg.neighbourhood
        for i, s in enumerate(self.cfg.strides):
            x = feats[s] if k == 1 else F.avg_pool2d(feats[s], k, stride=1, padding=k // 2, count_include_pad=False)
            n, c, h, w = x.shape
            pp = self.pos_proto[i](torch.cat([positional_encoding(self.cfg.pos_dim, h, w).to(x).expand(n, -1, -1, -1),
                                              proto[:, :, None, None].expand(-1, -1, h, w)], 1))
            q = self.cspc[i](self.feature_mlps[i](x) - pp)
            vq = vq + q.loss_map.mean()
            cond = torch.cat([pp + q.z_q, proto[:, :, None, None].expand(-1, -1, h, w)], 1)
            z, logdet = self.flow_map(i, x, cond)
            mu, log_sigma = self.mu[i](proto), self.log_sigma[i](proto)  # (N, C): concept k's Gaussian
            zs.append((z - mu[:, :, None, None]) * torch.exp(-log_sigma)[:, :, None, None])
            logdets.append(logdet - h * w * log_sigma.sum(1))
        return zs, logdets, cpc.indices[:, 0, 0], vq

    def flow_map(self, i: int, x: torch.Tensor, cond: torch.Tensor,
                 rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale ``i``'s flow on an (N, C, h, w) map with an (N, cond, h, w) condition: the
        output map and log|det| per image (N,). ``mlp`` subnets flow each position as a row;
        ``conv`` subnets flow the map itself."""
        if self.cfg.subnet == "conv":
            return self.flows[i](x, c=[cond], rev=rev)
        n, c, h, w = x.shape
        rows = lambda t: t.permute(0, 2, 3, 1).reshape(n * h * w, -1)  # noqa: E731
        z, logdet = self.flows[i](rows(x), c=[rows(cond)], rev=rev)  # log|det| per position
        return z.view(n, h, w, c).permute(0, 3, 1, 2), logdet.view(n, h * w).sum(1)

    def loss(self, images: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Negative log-likelihood per feature dimension + ``vq_weight`` x the VQ losses."""
        zs, logdets, _, vq = self.latents(images)
        dims = sum(z.shape[1] * z.shape[2] * z.shape[3] for z in zs)
        nll = sum(0.5 * z.pow(2).sum((1, 2, 3)) - ld for z, ld in zip(zs, logdets)).mean() / dims
        return nll + self.cfg.vq_weight * vq, {"nll": nll.item(), "vq": vq.item()}

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> BaselineOutput:
        """Raw maps (N, S, S): ``0.5 mean_C z^2`` per position and scale, upsampled, summed."""
        zs, _, _, _ = self.latents(images)
        size = tuple(images.shape[-2:])
        m = sum(F.interpolate(0.5 * z.pow(2).mean(1, keepdim=True), size=size, mode="bilinear",
                              align_corners=False)[:, 0] for z in zs)
        return BaselineOutput(score_map=m, image_score=m.flatten(1).amax(1))

    @torch.no_grad()
    def log_likelihood(self, images: torch.Tensor) -> torch.Tensor:
        """(N,) mean log-likelihood per feature dimension (for tests and diagnostics)."""
        zs, logdets, _, _ = self.latents(images)
        dims = sum(z.shape[1] * z.shape[2] * z.shape[3] for z in zs)
        const = 0.5 * math.log(2 * math.pi)
        return -sum(0.5 * z.pow(2).sum((1, 2, 3)) - ld for z, ld in zip(zs, logdets)) / dims - const


def train_vq_flow(model: VQFlow, stream: BatchStream, out_dir: Path, name: str, seed: int,
                  progress: bool = True) -> dict:
    """Maximum likelihood on the normal training images (Adam, gradient-norm clip); resumable
    and deterministic like the study's other loops; writes ``out_dir/<name>.pt``."""
    cfg = model.cfg
    params = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    run = ResumableRun(name, out_dir, key=(name, seed, asdict(cfg), model.backbone.display_name),
                       state={"model": model, "opt": opt}, steps=cfg.steps, ckpt_every=cfg.ckpt_every)
    model.train()
    bar = run.steps(progress)
    for step in bar:
        loss, logs = model.loss(stream.batch(step)["image"])
        check_finite("VQ-Flow loss", loss, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            run.log.add({"step": step, "loss": loss.item(), **logs})
            bar.set_postfix(loss=f"{loss.item():.4f}")
        run.step_done(step)
    model.eval()
    final = {"model": model.state_dict(), "train": asdict(cfg), "seed": seed, "steps": cfg.steps}
    return run.finish(final, images_per_step=stream.batch_size,
                      extra={"concepts_in_use": model.cpc.codes_in_use()})

"""Patch AE (Cui, Liu and Lian, "Patch-wise Auto-Encoder for Visual Anomaly Detection";
the study's document 002): one model for all classes of a dataset.

Read from the abstract and Fig. 2, and what is chosen here where they are silent:

- **Encoder** (Fig. 2, red): backbone layers initialised from ImageNet weights (here
  EfficientNet-Lite0's blocks up to stride 16, ``pvqae.backbones``) give multi-scale
  features; the stride-16 map is upsampled to the stride-8 grid ("unifying dimension") and
  concatenated with the stride-8 map, then two 1x1 convolution + ReLU layers give the learned
  feature vector of each stride-8 patch. *Chosen*: the backbone is fine-tuned with a 10x
  smaller learning rate, its BatchNorm statistics stay the ImageNet ones (eval mode), as is
  usual when fine-tuning on small batches. ``neighbourhood`` optionally averages each
  endpoint map over a k x k window first (PatchCore's local aggregation); the decoder's
  one-vector-one-patch mapping is unchanged.
- **Decoder** (Fig. 2, pink): 1x1 convolution, activation, 1x1 convolution to the
  ``C x 8 x 8`` pixels of the image patch that feature vector covers; the patches are laid
  back side by side (pixel shuffle). Each patch is reconstructed from its own vector only
  (a test checks it).
- **Training**: the input is augmented with artificial defects (with probability
  ``defect_prob`` per image: the study's scratch / crack / stain painters and CutPaste,
  :mod:`pvqae.data.validation`) and reconstructed as it is, defects included: the paper
  *enhances* the reconstruction of anomalies, so the learned features must describe them.
  *Chosen*: L2 loss, Adam.
- **Anomaly map**: the distance of each patch's learned feature to its nearest neighbour
  among the features of the normal training images (a memory bank, greedy coreset as in
  PatchCore), upsampled to pixels; the image score is the map's max (the study's shared
  post-processing). *Open in the abstract*: which "learned feature representation" the
  distance is taken in: the encoder's 1x1 output (``bank_features: encoder``) or the
  multi-scale features of the backbone trained by the patch reconstruction
  (``bank_features: backbone``, with ``finetune_backbone``); chosen per dataset on the
  label-free validation split (:mod:`pvqae.benchmark.selection`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pvqae.backbones import FeatureExtractor, concat_aligned
from pvqae.baselines.common import BaselineOutput, patch_scores_to_output
from pvqae.baselines.patchcore import coreset_size, greedy_coreset, nearest_distance, sparse_random_projection
from pvqae.batches import BatchStream
from pvqae.data.validation import paste_defects
from pvqae.losses import check_finite
from pvqae.resumable import ResumableRun
from pvqae.strict_config import Config, ConfigError

BYTES_PER_FLOAT = 4
BANK_FEATURES = ("encoder", "backbone")


@dataclass(frozen=True)
class PatchAEConfig(Config):
    """Patch AE settings (params.yaml section ``baselines.patch_ae``)."""
    SECTION = "baselines.patch_ae"

    strides: tuple[int, ...] = (8, 16)  # backbone endpoints; the first sets the patch size
    hidden: int = 256  # the encoder's first 1x1 conv
    feature_dim: int = 128  # the learned feature vector of a patch
    decoder_hidden: int = 256  # the decoder's hidden 1x1 conv
    finetune_backbone: bool = True  # Fig. 2: the backbone layers are initialised, then trained
    neighbourhood: int = 1  # local average of each endpoint map before the encoder (PatchCore's 3); 1 = off
    bank_features: str = "encoder"  # the NN space: encoder (the learned 1x1 features) | backbone (its trained endpoints)
    steps: int = 150
    batch_size: int = 16
    lr: float = 1e-3
    backbone_lr: float = 1e-4
    defect_prob: float = 0.5  # artificial defect augmentation of the training input
    augment_jitter: float = 0.1  # flips + brightness/contrast jitter of the batch stream
    coreset_ratio: float = 0.1  # memory bank of the learned features
    projection_dim: int = 128
    ckpt_every: int = 200
    log_every: int = 20

    def __post_init__(self):
        if self.bank_features not in BANK_FEATURES:
            raise ConfigError(f"{self.SECTION}.bank_features must be one of {', '.join(BANK_FEATURES)}, "
                              f"got {self.bank_features!r}")
        if self.bank_features == "backbone" and not self.finetune_backbone:
            raise ConfigError(f"{self.SECTION}.bank_features: backbone needs finetune_backbone: true (a frozen "
                              "backbone's features do not depend on the patch reconstruction: that would be "
                              "PatchCore, not Patch AE)")


class PatchAE(nn.Module):
    """Backbone + 1x1 encoder (learned patch features) + 1x1 decoder (patch pixels) + memory bank."""

    def __init__(self, backbone: FeatureExtractor, cfg: PatchAEConfig, in_channels: int = 3):
        super().__init__()
        self.cfg = cfg
        self.in_channels = in_channels
        # a private copy when it is trained: other methods share the frozen one
        self.backbone = copy.deepcopy(backbone) if cfg.finetune_backbone else backbone
        self.backbone.requires_grad_(cfg.finetune_backbone)
        self.patch = cfg.strides[0]
        width = sum(backbone.endpoints[s] for s in cfg.strides)
        self.encoder = nn.Sequential(nn.Conv2d(width, cfg.hidden, 1), nn.ReLU(),
                                     nn.Conv2d(cfg.hidden, cfg.feature_dim, 1), nn.ReLU())
        self.decoder = nn.Sequential(nn.Conv2d(cfg.feature_dim, cfg.decoder_hidden, 1), nn.ReLU(),
                                     nn.Conv2d(cfg.decoder_hidden, in_channels * self.patch ** 2, 1))
        self.bank_dim = cfg.feature_dim if cfg.bank_features == "encoder" else width
        self.register_buffer("memory_bank", torch.zeros(0, self.bank_dim))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As ``nn.Module.load_state_dict``; the memory bank takes the saved size."""
        bank = state_dict.get("memory_bank")
        if bank is not None and bank.shape != self.memory_bank.shape:
            self.memory_bank = torch.empty_like(bank)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def train(self, mode: bool = True):
        """Mode switch that keeps the backbone's BatchNorm statistics frozen (eval mode)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def unified(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's multi-scale features unified on the first stride's grid (the
        encoder's input): (N, width, ceil(S / 8), ceil(S / 8))."""
        maps = self.backbone.endpoint_maps(x, self.cfg.strides)
        k = self.cfg.neighbourhood
        if k > 1:  # each position sees its k x k neighbourhood (PatchCore's local aggregation)
            maps = {s: F.avg_pool2d(m, k, stride=1, padding=k // 2, count_include_pad=False) for s, m in maps.items()}
        return concat_aligned(maps, self.cfg.strides)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Learned patch features (N, feature_dim, ceil(S / 8), ceil(S / 8)) of images in [0, 1]."""
        return self.encoder(self.unified(x))

    def bank_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """The vectors the nearest-neighbour map compares: (N, h, w, bank_dim)."""
        f = self.features(x) if self.cfg.bank_features == "encoder" else self.unified(x)
        return f.permute(0, 2, 3, 1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Patch-wise reconstruction (N, C, S, S): each 8x8 patch decoded from its own feature vector."""
        out = F.pixel_shuffle(self.decoder(self.features(x)), self.patch)
        return out[..., :x.shape[-2], :x.shape[-1]]

    @torch.no_grad()
    def fit_bank(self, images: torch.Tensor, seed: int, batch_size: int = 16, progress: bool = True) -> dict:
        """Memory bank: the learned features of the normal training images, greedy coreset."""
        self.eval()
        t0 = time.perf_counter()
        feats = torch.cat([self.bank_vectors(images[i:i + batch_size]).reshape(-1, self.bank_dim)
                           for i in tqdm(range(0, len(images), batch_size), desc="patch_ae bank",
                                         disable=not progress, leave=False)])
        n_keep = coreset_size(len(feats), self.cfg.coreset_ratio)
        if n_keep < len(feats):
            proj = sparse_random_projection(feats.shape[1], self.cfg.projection_dim, seed)
            feats_kept = feats[greedy_coreset(feats @ proj, n_keep, seed=seed, progress=progress)]
        else:
            feats_kept = feats
        self.memory_bank = feats_kept.contiguous()
        return {"bank_size_full": len(feats), "bank_size": len(feats_kept),
                "bank_mb": feats_kept.numel() * BYTES_PER_FLOAT / 1e6, "bank_seconds": time.perf_counter() - t0}

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> BaselineOutput:
        """Raw maps (N, S, S) and their max (N,): nearest-neighbour distance of each patch's
        learned feature to the memory bank, upsampled bilinearly."""
        if len(self.memory_bank) == 0:
            raise RuntimeError("Patch AE has an empty memory bank: train it (train_patch_ae) or load a checkpoint")
        f = self.bank_vectors(images)
        n, h, w, d = f.shape
        dist = nearest_distance(f.reshape(-1, d), self.memory_bank, 1024).view(n, h, w)
        return patch_scores_to_output(dist, tuple(images.shape[-2:]))


def defect_augment(x: torch.Tensor, prob: float, seed: int, step: int) -> torch.Tensor:
    """Artificial defects on a training batch (N, C, S, S) in [0, 1]: each image gets one with
    probability ``prob`` (scratch, crack, stain or a CutPaste from another image of the batch),
    deterministically from ``seed`` and ``step``."""
    rng = np.random.default_rng([seed, step, 7])
    pick = np.flatnonzero(rng.random(len(x)) < prob)
    if len(pick) == 0 or len(x) < 2:
        return x
    u8 = np.round(x.detach().cpu().numpy() * 255).astype(np.uint8)
    order = np.concatenate([pick, np.setdiff1d(np.arange(len(x)), pick)])  # donors: the whole batch
    kinds = tuple(rng.permutation(["scratch", "crack", "stain", "cutpaste"]))
    out, _, _ = paste_defects(u8[order], int(rng.integers(2 ** 31)), kinds)
    u8[pick] = out[:len(pick)]
    return torch.from_numpy(u8.astype(np.float32) / 255.0).to(x.device)


def train_patch_ae(model: PatchAE, train_images: torch.Tensor, stream: BatchStream, out_dir: Path, name: str,
                   seed: int, progress: bool = True) -> dict:
    """Train the encoder / decoder (and the backbone, ``finetune_backbone``) to reconstruct
    defect-augmented training batches patch by patch (L2), then fit the memory bank on the
    un-augmented training images. Resumable and deterministic like the study's other loops
    (:class:`pvqae.resumable.ResumableRun`); writes ``out_dir/<name>.pt`` (weights and bank)."""
    cfg = model.cfg
    groups = [{"params": list(model.encoder.parameters()) + list(model.decoder.parameters()), "lr": cfg.lr}]
    if cfg.finetune_backbone:
        groups.append({"params": list(model.backbone.parameters()), "lr": cfg.backbone_lr})
    opt = torch.optim.Adam(groups)
    run = ResumableRun(name, out_dir, key=(name, seed, asdict(cfg), model.in_channels, model.backbone.display_name),
                       state={"model": model, "opt": opt}, steps=cfg.steps, ckpt_every=cfg.ckpt_every)
    model.train()
    bar = run.steps(progress)
    for step in bar:
        x = defect_augment(stream.batch(step)["image"], cfg.defect_prob, seed, step)
        loss = F.mse_loss(model.reconstruct(x), x)
        check_finite("patch reconstruction loss", loss, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            run.log.add({"step": step, "loss": loss.item()})
            bar.set_postfix(loss=f"{loss.item():.4f}")
        run.step_done(step)
    bank = model.fit_bank(train_images, seed, cfg.batch_size, progress)
    final = {"model": model.state_dict(), "train": asdict(cfg), "in_channels": model.in_channels, "seed": seed,
             "steps": cfg.steps}
    summary = run.finish(final, images_per_step=stream.batch_size, extra=bank)
    # the run's clock stops in finish(), after the bank: train_seconds already holds it
    summary["seconds"] = summary.get("train_seconds", 0.0)
    summary["reconstruction_seconds"] = summary["seconds"] - bank["bank_seconds"]
    return summary

"""One harness for the Table I baselines: same data, splits, resolution and metrics as PVQAE.

Every method is trained (AE-SSIM) or fitted (PatchCore, PaDiM) on the normal training
images of all classes at once (the paper trains one model per dataset for every method),
scored on the test split at the model's image size, and evaluated with
:func:`pvqae.evaluation.evaluate_scores` (image/pixel AUROC, AUPRO, F1-max). The static
VQ-VAE baseline (VQ-E style) is PVQAE's own autoencoder with one fixed level, trained by
the pretrain stage. The median-filter residual (no training) is the floor of every table.

Every method's raw map gets the same post-processing (:func:`pvqae.scoring.postprocess`,
the ``evaluate.score`` params): the smoothing and image-score rule PVQAE is scored with.

PatchCore and PaDiM stand on a frozen ImageNet backbone (``baselines.backbone``,
EfficientNet-Lite0 from its installed weights package by default). Without weights they do
not run: :func:`run_method` is never called for them and the table says
"not run: no pretrained weights" (random weights are for tests only).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from pvqae.backbones import FeatureExtractor
from pvqae.baselines import METHODS, NEEDS_BACKBONE
from pvqae.baselines.ae_ssim import AESSIM, train_ae_ssim
from pvqae.baselines.common import BaselineOutput
from pvqae.baselines.median_filter import MedianFilterResidual
from pvqae.baselines.padim import PaDiM
from pvqae.baselines.patch_ae import PatchAE, train_patch_ae
from pvqae.baselines.patchcore import PatchCore
from pvqae.baselines.vq_flow import VQFlow, train_vq_flow
from pvqae.batches import train_stream
from pvqae.checkpoint import save_checkpoint
from pvqae.evaluation import aggregate_seeds, auroc_by_kind, evaluate_scores
from pvqae.scoring import ScoreConfig, postprocess
from pvqae.settings import BaselinesConfig, DataConfig, EvaluateConfig
from pvqae.stages import seed_dir


@torch.no_grad()
def score_split(score: Callable[[torch.Tensor], BaselineOutput], split: dict, post: ScoreConfig,
                batch_size: int = 16, progress: bool = True, desc: str = "score") -> dict:
    """Score a split in batches with ``score(images) -> BaselineOutput`` (raw maps), apply the
    shared post-processing ``post``; the same keys as :func:`pvqae.evaluation.score_split` (no
    routed/prior levels)."""
    n = len(split["image"])
    maps, img = [], []
    t0 = time.perf_counter()
    for i in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, mininterval=5):
        smap, image_score = postprocess(score(split["image"][i:i + batch_size]).score_map.float(), post)
        maps.append(smap.numpy())
        img.append(image_score.numpy())
    secs = time.perf_counter() - t0
    return {"maps": np.concatenate(maps), "image": np.concatenate(img), "rec": None, "routed": None, "prior": None,
            "seconds": secs, "images_per_second": n / secs if secs > 0 else None}


def build(method: str, bp: BaselinesConfig, data: DataConfig, seed: int, backbone: FeatureExtractor | None = None):
    """The untrained/unfitted model of a method from the ``baselines`` params section (a
    :class:`BaselinesConfig`, or its params mapping, read strictly)."""
    bp, data = BaselinesConfig.from_dict(bp), DataConfig.from_dict(data)
    if method == "median_filter":
        return MedianFilterResidual(bp.median_filter.kernel)
    if method == "ae_ssim":
        torch.manual_seed(seed)
        return AESSIM.from_config(bp.ae_ssim, data.image_size, data.channels)
    if method in NEEDS_BACKBONE and backbone is None:
        raise ValueError(f"{method} needs an ImageNet-pretrained backbone (baselines.backbone, "
                         f"baselines.backbone_weights)")
    if method == "patchcore":
        p = bp.patchcore
        return PatchCore(backbone, strides=p.strides, coreset_ratio=p.coreset_ratio, projection_dim=p.projection_dim,
                         feature_dim=p.feature_dim, seed=seed)
    if method == "padim":
        return PaDiM(backbone, strides=bp.padim.strides, dims=bp.padim.dims, seed=seed)
    if method == "patch_ae":
        torch.manual_seed(seed)
        return PatchAE(backbone, bp.patch_ae, data.channels)
    if method == "vq_flow":
        torch.manual_seed(seed)
        return VQFlow(backbone, bp.vq_flow, seed=seed)
    raise ValueError(f"unknown baseline {method!r}; baselines are {', '.join(METHODS)}")


def run_method(method: str, bp: BaselinesConfig, data: DataConfig, train: dict, test: dict, ev: EvaluateConfig, seed: int,
               out_dir: Path, backbone: FeatureExtractor | None = None, progress: bool = True) -> tuple[dict, dict, dict]:
    """Train/fit one baseline for one seed, score the test split, compute the metrics.

    Returns (scores, results, summary); writes ``out_dir/<method>.pt``.
    """
    bp, data, ev = BaselinesConfig.from_dict(bp), DataConfig.from_dict(data), EvaluateConfig.from_dict(ev)
    out_dir = Path(out_dir)
    model = build(method, bp, data, seed, backbone)
    if method == "median_filter":
        summary = {"seconds": 0.0, "kernel": model.kernel}
    elif method == "ae_ssim":
        cfg = bp.ae_ssim
        stream = train_stream(train, cfg.batch_size, seed, cfg.augment_jitter)
        summary = train_ae_ssim(model, stream, cfg, out_dir, method, seed, progress=progress)
    elif method in ("patch_ae", "vq_flow"):
        stream = train_stream(train, model.cfg.batch_size, seed, model.cfg.augment_jitter)
        summary = (train_patch_ae(model, train["image"], stream, out_dir, method, seed, progress=progress)
                   if method == "patch_ae" else train_vq_flow(model, stream, out_dir, method, seed, progress=progress))
    else:
        summary = model.fit(train["image"], batch_size=ev.batch_size, progress=progress)
        save_checkpoint(out_dir / f"{method}.pt", {"model": model.state_dict(), "seed": seed, "method": method})
    model.eval()
    scores = score_split(model.score if method == "ae_ssim" else model, test, ev.score, ev.batch_size, progress,
                         desc=f"{method} seed {seed}")
    results = evaluate_scores(test, scores, ev.fpr_limit)
    results["image_auroc_by_kind"] = auroc_by_kind(test["label"].numpy(), test["class_index"].numpy(),
                                                   [m.get("defect") or "" for m in test["meta"]], test["classes"],
                                                   scores["image"])
    results["inference_images_per_second"] = scores["images_per_second"]
    results["scoring_seconds"] = scores["seconds"]
    return scores, results, summary


def run_all(methods: list[str], bp: BaselinesConfig, data: DataConfig, train: dict, test: dict, ev: EvaluateConfig,
            seeds: list[int],
            out_dir: Path, backbone: FeatureExtractor | None, backbone_status: str, progress: bool = True) -> dict:
    """Every method for every seed: ``{"status", "results" (mean ± std over seeds),
    "per_seed", "training"}``. A method needing the backbone when there is none is not run
    and its status is the backbone's (e.g. "not run: no pretrained weights")."""
    status, per_seed, training = {}, {}, {}
    for m in methods:
        if m in NEEDS_BACKBONE and backbone is None:
            status[m] = backbone_status
            continue
        per_seed[m], training[m] = {}, {}
        for s in seeds:
            _, per_seed[m][f"seed{s}"], training[m][f"seed{s}"] = run_method(m, bp, data, train, test, ev, s,
                                                                             seed_dir(out_dir, s), backbone, progress)
        status[m] = "ran" + (f" ({backbone_status})" if m in NEEDS_BACKBONE else "")
    results = {m: aggregate_seeds(list(r.values())) for m, r in per_seed.items()}
    return {"status": status, "results": results, "per_seed": per_seed, "training": training}

"""The study's steps, run once per training seed, and the aggregation of their metrics.

Every trained model of the study (PVQAE pre-training and budget learning, the prior, the
static-VQ and AE-SSIM baselines, every ablation variant) is trained once per seed of the
``seeds`` param (tiny/default: one seed, cpu/paper: three) and written under a
``seed<k>/`` folder of its stage's output. Metrics are computed per seed and reported as
mean ± std over seeds (:func:`aggregate_seeds`). The data seed (``seed``: the synthetic
set and the held-out split) is the same for every training seed.

The stage notebooks (and the ablation-variant notebook, which repeats budget learning,
prior learning and evaluation with one budget setting changed) call these functions, so
the main run and every variant go through the same code.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from pvqae import pipeline
from pvqae.checkpoint import load_checkpoint
from pvqae.config import get_dotted, set_dotted
from pvqae.metrics import METRIC_NAMES
from pvqae.model import PVQAE
from pvqae.prior import BudgetPriorTransformer
from pvqae.scoring import ScoreConfig
from pvqae.train import (
    PriorConfig,
    TrainConfig,
    file_hash,
    load_model,
    routed_levels,
    train_autoencoder,
    train_prior,
)


def seed_dir(base: str | Path, seed: int) -> Path:
    """``base/seed<seed>``: where a stage keeps the models of one training seed."""
    return Path(base) / f"seed{int(seed)}"


def training_seeds(params: dict) -> list[int]:
    """The ``seeds`` param as a non-empty list of distinct ints."""
    seeds = params.get("seeds")
    if seeds is None:
        raise KeyError("params.yaml lacks `seeds` (training seeds, e.g. seeds: [0])")
    seeds = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"`seeds` must be a non-empty list of distinct integers, got {params.get('seeds')!r}")
    return seeds


# ----------------------------------------------------------------------------- training steps

def pretrain(params: dict, train: dict, val: dict, out_dir: Path, seed: int, progress: bool = True) -> dict:
    """VQ-GAN pre-training of PVQAE (random routing, Sec. III-A) and training of the static
    single-level VQ baseline for the same total number of steps as pre-training + budget
    learning; both written to ``out_dir`` (``pvqae_pretrain.pt``, ``static_vq.pt``)."""
    data = params["data"]
    cfg = TrainConfig.from_dict(params["pretrain"])
    torch.manual_seed(seed)
    model = PVQAE(pipeline.model_config(params["model"], data))
    stream = pipeline.train_stream(train, cfg.batch_size, seed, cfg.augment_jitter)
    summary = train_autoencoder(model, stream, cfg, out_dir, "pvqae_pretrain", seed, progress=progress)
    summary["heldout_l1"] = pipeline.heldout_error(model, val["image"], mode="random",
                                                   generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    static_cfg = TrainConfig.from_dict({**params["pretrain"], "steps": params["static_vq"]["steps"]})
    static = PVQAE(pipeline.model_config(params["model"], data, levels=(int(params["static_vq"]["level"]),)))
    static_summary = train_autoencoder(static, pipeline.train_stream(train, cfg.batch_size, seed, cfg.augment_jitter),
                                       static_cfg, out_dir, "static_vq", seed, progress=progress)
    static_summary["heldout_l1"] = pipeline.heldout_error(static, val["image"])
    out = {"pvqae_pretrain": summary, "static_vq": static_summary}
    pipeline.write_json(out, Path(out_dir) / "summary.json")
    return out


def learn_budget(params: dict, train: dict, val: dict, pretrained: Path, out_dir: Path, seed: int,
                 progress: bool = True) -> tuple[PVQAE, dict]:
    """Progressive budget learning (Sec. III-B) from the pre-trained checkpoint: dynamic
    routing, budget loss weighted by lambda(t); writes ``out_dir/pvqae.pt``."""
    torch.manual_seed(seed)
    model = load_model(pretrained).train()
    cfg = TrainConfig.from_dict({**params["pretrain"], **params["budget"]})
    stream = pipeline.train_stream(train, cfg.batch_size, seed + 1, cfg.augment_jitter)
    summary = train_autoencoder(model, stream, cfg, out_dir, "pvqae", seed, fingerprint_extra=file_hash(pretrained),
                                disc_state=load_checkpoint(pretrained).get("disc"), progress=progress)
    summary["heldout_l1"] = pipeline.heldout_error(model, val["image"], mode="dynamic")
    pipeline.write_json(summary, Path(out_dir) / "summary.json")
    return model, summary


def learn_prior(model: PVQAE, train: dict, val: dict, prior_params: dict, out_path: Path, seed: int,
                progress: bool = True) -> tuple[BudgetPriorTransformer | None, dict]:
    """Budget Prior Transformer on the routed budgets of the normal training images
    (Sec. III-C1); adds the held-out normal images' prediction accuracy to the summary."""
    levels = routed_levels(model, train["image"])
    prior, summary = train_prior(levels, train["class_index"], len(train["classes"]),
                                 PriorConfig.from_dict(prior_params), out_path, seed, progress=progress)
    if prior is not None and len(val["image"]):
        val_levels = routed_levels(model, val["image"])
        with torch.no_grad():
            probs = prior.predict_all(val_levels, val["class_index"])
        summary["heldout_accuracy"] = float((probs.argmax(1) == val_levels).float().mean())
    return prior, summary


def evaluate_model(model: PVQAE, prior: BudgetPriorTransformer | None, test: dict, ev: dict,
                   progress: bool = True, desc: str = "score") -> tuple[dict, dict]:
    """Score the test split (Sec. III-C2) and compute its metrics: (scores, results)."""
    sc = pipeline.score_split(model, test, prior, ScoreConfig.from_dict(ev["score"]), ev["batch_size"],
                              progress=progress, desc=desc)
    res = pipeline.evaluate_scores(test, sc, ev["fpr_limit"])
    res["inference_images_per_second"] = sc["images_per_second"]
    return sc, res


# ----------------------------------------------------------------------------- variants

def apply_overrides(params: dict, overrides: dict) -> dict:
    """A copy of ``params`` with dotted ``overrides`` (e.g. ``{"budget.lambda_max": 0.5}``) set."""
    out = copy.deepcopy(params)
    for k, v in overrides.items():
        set_dotted(out, k, v)
    return out


def is_main_setting(params: dict, overrides: dict) -> bool:
    """True when the overrides change nothing: that variant *is* the main run, whose models
    and metrics the ablation tables reuse instead of training them again."""
    def same(a, b) -> bool:
        try:
            return bool(np.isclose(float(a), float(b)))
        except (TypeError, ValueError):
            return a == b

    return all(same(get_dotted(params, k), v) for k, v in overrides.items())


# ----------------------------------------------------------------------------- aggregation

def aggregate_seeds(per_seed: list[dict], metrics: tuple[str, ...] = METRIC_NAMES) -> dict:
    """Mean ± std over seeds of :func:`pvqae.metrics.evaluate` results.

    Returns the same shape as one result (``mean``: class-mean metrics, ``per_class``),
    averaged over seeds, plus ``std`` / ``per_class_std`` (population std over seeds,
    0 for one seed; NaN-aware) and ``n_seeds``.
    """
    if not per_seed:
        raise ValueError("no per-seed results to aggregate")

    def stats(values: list[float]) -> tuple[float, float]:
        v = np.array([np.nan if x is None else float(x) for x in values], float)
        if np.all(np.isnan(v)):
            return float("nan"), float("nan")
        return float(np.nanmean(v)), float(np.nanstd(v))

    out: dict = {"mean": {}, "std": {}, "per_class": {}, "per_class_std": {}, "n_seeds": len(per_seed)}
    for k in metrics:
        out["mean"][k], out["std"][k] = stats([r["mean"].get(k) for r in per_seed])
    classes = list(dict.fromkeys(c for r in per_seed for c in r.get("per_class", {})))
    for c in classes:
        out["per_class"][c], out["per_class_std"][c] = {}, {}
        for k in metrics:
            out["per_class"][c][k], out["per_class_std"][c][k] = stats(
                [r["per_class"].get(c, {}).get(k) for r in per_seed])
    extra = [r["inference_images_per_second"] for r in per_seed if r.get("inference_images_per_second") is not None]
    if extra:
        out["inference_images_per_second"] = float(np.mean(extra))
    return out


def pm(mean: float, std: float | None = None, n: int = 1) -> str:
    """Percent cell ``mean ± std`` (std shown only for more than one seed)."""
    if mean is None or not np.isfinite(mean):
        return "n/a"
    if n > 1 and std is not None and np.isfinite(std):
        return f"{100 * mean:.1f} ± {100 * std:.1f}"
    return f"{100 * mean:.1f}"


def variant_name(kind: str, value) -> str:
    """Folder name of an ablation setting, as dvc.yaml's foreach writes it: ``lambda_max-0.5``."""
    return f"{kind}-{value}"


def variant_result(variants_dir: str | Path, kind: str, value, main_metrics: dict) -> dict:
    """Aggregated metrics of one ablation setting; the main run's PVQAE metrics (from
    ``evaluate.json``) when the setting is the main run's."""
    import json

    path = Path(variants_dir) / variant_name(kind, value) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro {kind}@{value}` (the ablation lists are "
                                f"params `ablations.lambda_schedules` / `ablations.lambda_max`)")
    with open(path) as f:
        rec = json.load(f)
    if rec["same_as_main"]:
        return {**main_metrics["pvqae"], "same_as_main": True}
    return rec

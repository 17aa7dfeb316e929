"""Stage ``prior``: the Budget Prior Transformer on the routed budgets of the normal training
images, autoencoder frozen (Sec. III-C1)."""

from __future__ import annotations

from pathlib import Path

import torch

from pvqae.model import PVQAE, routed_levels
from pvqae.prior import BudgetPriorTransformer, PriorConfig
from pvqae.settings import Params
from pvqae.stages import AUTOENCODER_DEPS, PATHS, Stage, every_seed, out_path, seed_dir
from pvqae.train import train_prior

STAGE = Stage("prior", "04_prior_learning.py", params=("seed", "seeds", "prior"),
              deps=(*AUTOENCODER_DEPS, "pvqae/prior.py", "pvqae/plots.py", PATHS["prepared"], PATHS["budget_models"]),
              outs=(PATHS["prior_models"], f"{PATHS['figures']}/prior"))


def learn_prior(model: PVQAE, train: dict, val: dict, cfg: PriorConfig, out_path: Path, seed: int,
                progress: bool = True) -> tuple[BudgetPriorTransformer | None, dict]:
    """The prior of one seed; the summary adds the held-out normal images' accuracy."""
    levels = routed_levels(model, train["image"])
    prior, summary = train_prior(levels, train["class_index"], len(train["classes"]), cfg, out_path, seed,
                                 progress=progress)
    if prior is not None and len(val["image"]):
        val_levels = routed_levels(model, val["image"])
        with torch.no_grad():
            probs = prior.predict_all(val_levels, val["class_index"])
        summary["heldout_accuracy"] = float((probs.argmax(1) == val_levels).float().mean())
    return prior, summary


def run(cfg: Params, paths: dict = PATHS, progress: bool = True) -> tuple[dict, dict]:
    """Every seed: ``({seed: prior or None}, {seed: summary})``."""
    budget = out_path(paths, "budget_models")
    return every_seed(cfg, paths, "prior_models", lambda train, val, folder, s: learn_prior(
        PVQAE.from_checkpoint(seed_dir(budget, s) / "pvqae.pt"), train, val, cfg.prior, folder / "prior.pt", s,
        progress))

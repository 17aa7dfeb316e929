"""Stage ``budget``: progressive budget learning (Sec. III-B) from the pre-trained
autoencoder: dynamic routing (Gumbel-softmax), budget loss weighted by lambda(t). The
variant stage reuses :func:`learn_budget` for the ablations, the same-network static VQ
(routing fixed to one level) included."""

from __future__ import annotations

from pathlib import Path

import torch

from pvqae.batches import train_stream
from pvqae.checkpoint import load_checkpoint
from pvqae.evaluation import heldout_error
from pvqae.model import PVQAE
from pvqae.records import write_json
from pvqae.resumable import file_hash
from pvqae.settings import Params
from pvqae.stages import AUTOENCODER_DEPS, PATHS, Stage, every_seed, out_path, seed_dir
from pvqae.train import train_autoencoder

STAGE = Stage("budget", "03_budget_learning.py", params=("seed", "seeds", "pretrain", "budget"),
              deps=(*AUTOENCODER_DEPS, "pvqae/evaluation.py", "pvqae/plots.py", PATHS["prepared"],
                    PATHS["pretrain_models"]),
              outs=(PATHS["budget_models"], f"{PATHS['figures']}/budget"))


def learn_budget(cfg: Params, train: dict, val: dict, pretrained: Path, out_dir: Path, seed: int,
                 progress: bool = True) -> tuple[PVQAE, dict]:
    """Budget learning of one seed from ``pretrained``; writes ``out_dir/pvqae.pt``. With a
    fixed ``budget.routing`` (coarse | median | fine) the same network learns with its routing
    fixed to that level instead: the same-network static VQ of the core claim's ablation."""
    torch.manual_seed(seed)
    model = PVQAE.from_checkpoint(pretrained, fixed_level=cfg.budget.fixed_level).train()
    train_cfg = cfg.pretrain.for_budget(cfg.budget)
    stream = train_stream(train, train_cfg.batch_size, seed + 1, train_cfg.augment_jitter)
    summary = train_autoencoder(model, stream, train_cfg, out_dir, "pvqae", seed, budget=cfg.budget,
                                fingerprint_extra=file_hash(pretrained),
                                disc_state=load_checkpoint(pretrained).get("disc"), progress=progress)
    summary["heldout_l1"] = heldout_error(model, val["image"], mode="dynamic")
    write_json(summary, Path(out_dir) / "summary.json")
    return model, summary


def run(cfg: Params, paths: dict = PATHS, progress: bool = True) -> tuple[dict, dict]:
    """Every seed: ``({seed: model}, {seed: summary})``."""
    pre = out_path(paths, "pretrain_models")
    return every_seed(cfg, paths, "budget_models", lambda train, val, folder, s: learn_budget(
        cfg, train, val, seed_dir(pre, s) / "pvqae_pretrain.pt", folder, s, progress))

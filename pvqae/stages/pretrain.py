"""Stage ``pretrain``: VQ-GAN pre-training of PVQAE with random routing (Sec. III-A), and the
VQ-E-style static single-level VQ baseline for the same total number of steps as
pre-training + budget learning; once per training seed."""

from __future__ import annotations

from pathlib import Path

import torch

from pvqae.batches import train_stream
from pvqae.evaluation import heldout_error
from pvqae.model import PVQAE
from pvqae.records import write_json
from pvqae.settings import Params
from pvqae.stages import AUTOENCODER_DEPS, PATHS, Stage, every_seed
from pvqae.train import train_autoencoder

STAGE = Stage("pretrain", "02_pretrain_vqgan.py", params=("seed", "seeds", "data", "input", "model", "pretrain", "static_vq"),
              deps=(*AUTOENCODER_DEPS, "pvqae/evaluation.py", "pvqae/plots.py", PATHS["prepared"]),
              outs=(PATHS["pretrain_models"], f"{PATHS['figures']}/pretrain"))


def pretrain_pvqae(cfg: Params, train: dict, val: dict, out_dir: Path, seed: int, progress: bool = True) -> dict:
    """PVQAE's pre-training with random routing: ``out_dir/pvqae_pretrain.pt``; its summary,
    with the held-out reconstruction error."""
    pre = cfg.pretrain
    torch.manual_seed(seed)
    shape = (train["image"].shape[1], train["image"].shape[-1])  # the input: image or feature map
    model = PVQAE(cfg.model_config(input_shape=shape))
    summary = train_autoencoder(model, train_stream(train, pre.batch_size, seed, pre.augment_jitter), pre, out_dir,
                                "pvqae_pretrain", seed, progress=progress)
    summary["heldout_l1"] = heldout_error(model, val["image"], mode="random",
                                          generator=torch.Generator().manual_seed(seed))
    return summary


def train_seed(cfg: Params, train: dict, val: dict, out_dir: Path, seed: int, progress: bool = True) -> dict:
    """PVQAE (``pvqae_pretrain.pt``) and the static VQ (``static_vq.pt``) of one seed."""
    pre = cfg.pretrain
    summary = pretrain_pvqae(cfg, train, val, out_dir, seed, progress)
    shape = (train["image"].shape[1], train["image"].shape[-1])
    torch.manual_seed(seed)
    static = PVQAE(cfg.model_config(levels=(cfg.static_vq.level,), input_shape=shape))
    static_summary = train_autoencoder(static, train_stream(train, pre.batch_size, seed, pre.augment_jitter),
                                       pre.replace(steps=cfg.static_vq.steps), out_dir, "static_vq", seed,
                                       progress=progress)
    static_summary["heldout_l1"] = heldout_error(static, val["image"])
    out = {"pvqae_pretrain": summary, "static_vq": static_summary}
    write_json(out, Path(out_dir) / "summary.json")
    return out


def run(cfg: Params, paths: dict = PATHS, progress: bool = True) -> dict:
    """Train every seed; ``{seed: {"pvqae_pretrain": summary, "static_vq": summary}}``."""
    _, summaries = every_seed(cfg, paths, "pretrain_models",
                              lambda train, val, folder, s: (None, train_seed(cfg, train, val, folder, s, progress)))
    return summaries

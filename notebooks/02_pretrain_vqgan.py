# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. VQ-GAN pre-training
# Trains the multi-resolution VQ-GAN autoencoder (paper Sec. III-A, IV-A) on the normal
# training images of **all classes at once**. Routing is a uniformly random level per coarse
# patch here, so all three codebooks and the decoder learn before budget learning starts
# (README, "method decisions"). The static single-resolution VQ baseline (one fixed level,
# same encoder/decoder code, same total number of steps as pre-training + budget learning)
# is trained here too.
# Outputs: `reports/models/pretrain/`, `reports/figures/pretrain/`.

# %% tags=["parameters"]
params = None  # injected: params.yaml sections of this stage
paths = None  # injected: output paths

# %%
import torch

from pvqae import pipeline, plots
from pvqae.config import PATHS, stage_params
from pvqae.model import PVQAE
from pvqae.paths import repo_path
from pvqae.train import TrainConfig, train_autoencoder

params = params or stage_params("pretrain")
paths = paths or dict(PATHS)
seed, data = params["seed"], params["data"]
out_dir = repo_path(paths["pretrain_models"])
figdir = repo_path(paths["figures"]) / "pretrain"
train = pipeline.load_prepared(paths["prepared"], "train")
val = pipeline.load_prepared(paths["prepared"], "val")
print(f"{len(train['image'])} training / {len(val['image'])} held-out normal images, classes {train['classes']}")

# %%
torch.manual_seed(seed)
cfg = TrainConfig.from_dict(params["pretrain"])
model_cfg = pipeline.model_config(params["model"], data)
pvqae_model = PVQAE(model_cfg)
print(f"PVQAE autoencoder: {sum(p.numel() for p in pvqae_model.parameters()) / 1e6:.2f} M parameters, "
      f"grids (coarse, median, fine) = {model_cfg.grids}")
stream = pipeline.train_stream(train, cfg.batch_size, seed, cfg.augment_jitter)
summary = train_autoencoder(pvqae_model, stream, cfg, out_dir, "pvqae_pretrain", seed)
summary["heldout_l1"] = pipeline.heldout_error(pvqae_model, val["image"], mode="random",
                                               generator=torch.Generator().manual_seed(seed))
summary

# %%
torch.manual_seed(seed)
static_cfg = TrainConfig.from_dict({**params["pretrain"], "steps": params["static_vq"]["steps"]})
static = PVQAE(pipeline.model_config(params["model"], data, levels=(int(params["static_vq"]["level"]),)))
static_summary = train_autoencoder(static, pipeline.train_stream(train, cfg.batch_size, seed, cfg.augment_jitter),
                                   static_cfg, out_dir, "static_vq", seed)
static_summary["heldout_l1"] = pipeline.heldout_error(static, val["image"])
pipeline.write_json({"pvqae_pretrain": summary, "static_vq": static_summary}, out_dir / "summary.json")
static_summary

# %%
fig = plots.training_curves({"PVQAE (random routing)": out_dir / "pvqae_pretrain_log.csv",
                             "static VQ": out_dir / "static_vq_log.csv"}, keys=("rec", "vq", "g", "d"))
plots.save_fig(fig, figdir / "training_curves")
fig

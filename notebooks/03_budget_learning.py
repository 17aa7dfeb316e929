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
# # 3. Progressive budget learning
# Starts from the pre-trained autoencoder and lets the Dynamic Routing Module choose a level
# per coarse patch (Gumbel-softmax, Sec. III-B1) while the budget loss (per-patch cost
# 1/(H+eps) x factor^level from the cached DWT entropies, Sec. III-B2) is weighted by
# lambda ramped from 0 to `budget.lambda_max` (`budget.lambda_schedule`).
# Outputs: `reports/models/budget/`, `reports/figures/budget/`.

# %% tags=["parameters"]
params = None  # injected: params.yaml sections of this stage
paths = None  # injected: output paths

# %%
import torch

from pvqae import pipeline, plots
from pvqae.checkpoint import load_checkpoint
from pvqae.config import PATHS, stage_params
from pvqae.paths import repo_path
from pvqae.train import (
                            TrainConfig,
                            file_hash,
                            load_model,
                            routed_levels,
                            train_autoencoder,
)

params = params or stage_params("budget")
paths = paths or dict(PATHS)
seed = params["seed"]
pre_path = repo_path(paths["pretrain_models"]) / "pvqae_pretrain.pt"
out_dir = repo_path(paths["budget_models"])
figdir = repo_path(paths["figures"]) / "budget"
train = pipeline.load_prepared(paths["prepared"], "train")
val = pipeline.load_prepared(paths["prepared"], "val")

# %%
torch.manual_seed(seed)
model = load_model(pre_path).train()
cfg = TrainConfig.from_dict({**params["pretrain"], **params["budget"]})
stream = pipeline.train_stream(train, cfg.batch_size, seed + 1, cfg.augment_jitter)
summary = train_autoencoder(model, stream, cfg, out_dir, "pvqae", seed, fingerprint_extra=file_hash(pre_path),
                            disc_state=load_checkpoint(pre_path).get("disc"))
summary["heldout_l1"] = pipeline.heldout_error(model, val["image"], mode="dynamic")
pipeline.write_json(summary, out_dir / "summary.json")
summary

# %% [markdown]
# Fraction of coarse patches routed to each level during training, with the lambda ramp,
# and the routed budget of held-out normal images (finer codes should go to detail).

# %%
fig = plots.level_fraction_curve(out_dir / "pvqae_log.csv")
plots.save_fig(fig, figdir / "level_fractions")
fig

# %%
show = val if len(val["image"]) else train
pick = [next(i for i, c in enumerate(show["class_index"].tolist()) if c == k)
        for k in range(len(show["classes"])) if k in show["class_index"].tolist()]
lv = routed_levels(model, show["image"][pick]).numpy()
fig = plots.level_maps(show["image"][pick].numpy(), lv, [show["classes"][show["class_index"][i]] for i in pick])
plots.save_fig(fig, figdir / "routed_levels")
fig

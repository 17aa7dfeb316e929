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
from pvqae import pipeline, plots, study
from pvqae.config import PATHS, stage_params
from pvqae.paths import repo_path
from pvqae.train import routed_levels

params = params or stage_params("budget")
paths = paths or dict(PATHS)
seeds = study.training_seeds(params)
pre_dir = repo_path(paths["pretrain_models"])
out_dir = repo_path(paths["budget_models"])
figdir = repo_path(paths["figures"]) / "budget"
train = pipeline.load_prepared(paths["prepared"], "train")
val = pipeline.load_prepared(paths["prepared"], "val")

# %%
models, summaries = {}, {}
for s in seeds:
    models[s], summaries[s] = study.learn_budget(params, train, val, study.seed_dir(pre_dir, s) / "pvqae_pretrain.pt",
                                                 study.seed_dir(out_dir, s), s)
pipeline.write_json({f"seed{s}": v for s, v in summaries.items()}, out_dir / "summary.json")
{s: {k: v[k] for k in ("train_seconds", "heldout_l1")} for s, v in summaries.items()}

# %% [markdown]
# Fraction of coarse patches routed to each level during training, with the lambda ramp,
# and the routed budget of held-out normal images (finer codes should go to detail);
# first training seed.

# %%
fig = plots.level_fraction_curve(study.seed_dir(out_dir, seeds[0]) / "pvqae_log.csv")
plots.save_fig(fig, figdir / "level_fractions")
fig

# %%
show = val if len(val["image"]) else train
pick = [next(i for i, c in enumerate(show["class_index"].tolist()) if c == k)
        for k in range(len(show["classes"])) if k in show["class_index"].tolist()]
lv = routed_levels(models[seeds[0]], show["image"][pick]).numpy()
fig = plots.level_maps(show["image"][pick].numpy(), lv, [show["classes"][show["class_index"][i]] for i in pick])
plots.save_fig(fig, figdir / "routed_levels")
fig

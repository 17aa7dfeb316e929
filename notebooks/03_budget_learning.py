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
params = None  # injected by `python -m pvqae run`: the params.yaml sections of this stage
paths = None  # injected: output paths (pvqae.stages.PATHS)

# %%
from pvqae import plots, stages
from pvqae.model import routed_levels
from pvqae.stages import budget

cfg, paths = stages.configure("budget", params, paths)
figdir = stages.out_path(paths, "figures") / "budget"
models, summaries = budget.run(cfg, paths)
{s: {k: v[k] for k in ("train_seconds", "heldout_l1")} for s, v in summaries.items()}

# %% [markdown]
# Fraction of coarse patches routed to each level during training, with the lambda ramp,
# and the routed budget of held-out normal images (finer codes should go to detail);
# first training seed.

# %%
fig = plots.level_fraction_curve(stages.seed_dir(stages.out_path(paths, "budget_models"), cfg.seeds[0]) / "pvqae_log.csv")
plots.save_fig(fig, figdir / "level_fractions")
fig

# %%
val = stages.load_split(paths, "val")
show = val if len(val["image"]) else stages.load_split(paths, "train")
pick = [next(i for i, c in enumerate(show["class_index"].tolist()) if c == k)
        for k in range(len(show["classes"])) if k in show["class_index"].tolist()]
lv = routed_levels(models[cfg.seeds[0]], show["image"][pick]).numpy()
fig = plots.level_maps(show.get("pixels", show["image"])[pick].numpy(), lv, [show["classes"][show["class_index"][i]] for i in pick])
plots.save_fig(fig, figdir / "routed_levels")
fig

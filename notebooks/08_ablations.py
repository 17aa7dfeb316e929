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
# # 8. Ablations (Sec. IV-D)
# **Table II** (lambda schedule: constant / cosine / linear) and **Fig. 5** (lambda_max
# sweep, linear schedule) collect the budget-learning variants, each trained by its own
# `foreach` DVC stage (notebook 7); the setting equal to the main run is the main run.
# **Table III** (normal budget priors): the same trained autoencoder scored with no prior
# (routed budget reconstructs, S = L2 error), a universal prior (shared token) and a
# per-class prior (class token) — only the prior differs (Sec. IV-D2).
# **Static VQ vs PVQAE**: the core claim, from the evaluation stage's metrics; and its fair
# form: PVQAE's own network with the routing fixed to one level (`static_level@<level>`
# variants) beside the lambda_max sweep, detection vs codes per image.
# Every number is a mean ± std over the training seeds.
# Outputs: `reports/metrics/ablations.json`, `reports/tables/ablations/`,
# `reports/models/ablations/`, `reports/figures/ablations/`.

# %% tags=["parameters"]
params = None  # injected by `python -m pvqae run`: the params.yaml sections of this stage
paths = None  # injected: output paths (pvqae.stages.PATHS)

# %%
from IPython.display import display

from pvqae import plots, stages
from pvqae.stages import ablations

cfg, paths = stages.configure("ablations", params, paths)
figdir = stages.out_path(paths, "figures") / "ablations"
res = ablations.run(cfg, paths)
for md in res["tables"].values():
    print(md)

# %%
fig = plots.lambda_sweep(res["sweep"], main=cfg.budget.lambda_max)
plots.save_fig(fig, figdir / "fig5_lambda_max")
display(fig)
fig = plots.codes_tradeoff(res["statics"], res["sweep"])
plots.save_fig(fig, figdir / "same_network_tradeoff")
display(fig)
fig = plots.metric_bars({f"prior: {m}": res["priors"][m]["mean"] for m in cfg.ablations.priors})
plots.save_fig(fig, figdir / "table3_priors")
fig = plots.metric_bars({f"schedule: {m}": res["schedules"][m]["mean"] for m in cfg.ablations.lambda_schedules})
plots.save_fig(fig, figdir / "table2_lambda_schedule")
fig

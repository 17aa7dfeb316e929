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
# # 5. Evaluation
# Scores every test image with PVQAE (S = CE(routed budget, prior budget) x L2 error of the
# reconstruction made with the prior's budget, Sec. III-C2) and with the static-VQ baseline
# (L2 error), and reports image AUROC, pixel AUROC, AUPRO (FPR <= 0.3) and F1-max per class
# and their mean, plus how many coarse/median/fine codes each class gets.
# Every training seed is scored; tables show mean ± std over seeds.
# Outputs: `reports/metrics/evaluate.json`, `reports/tables/evaluate/`, `reports/scores/`,
# `reports/figures/evaluate/`.

# %% tags=["parameters"]
params = None  # injected by `python -m pvqae run`: the params.yaml sections of this stage
paths = None  # injected: output paths (pvqae.stages.PATHS)

# %%
from IPython.display import display

from pvqae import plots, stages
from pvqae.stages import evaluate

cfg, paths = stages.configure("evaluate", params, paths)
print(f"prior mode {cfg.prior.mode}, training seeds {list(cfg.seeds)}")
res = evaluate.run(cfg, paths)
print(res["table"])

# %% [markdown]
# Code allocation: the fraction of coarse patches routed to each level, per class, for
# normal and defective test images, with the router's budget and the prior's (first seed).

# %%
print(res["allocation_table"])
figdir = stages.out_path(paths, "figures") / "evaluate"
fig = plots.allocation_bars(res["allocation"])
plots.save_fig(fig, figdir / "code_allocation")
display(fig)
fig = plots.metric_bars({n: r["mean"] for n, r in res["results"].items()}, ("image_auroc", "pixel_auroc", "aupro"))
plots.save_fig(fig, figdir / "mean_metrics")
fig

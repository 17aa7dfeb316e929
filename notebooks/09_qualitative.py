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
# # 9. Qualitative figures
# **Fig. 4**: for defective test samples of each class — image, ground truth, static-VQ
# score map, PVQAE score map, routed level map, prior level map (hot = high score).
# **Level maps per class**: where the router spends coarse/median/fine codes on normal
# test images, against the prior's budget.
# Score maps of the first training seed.
# Outputs: `reports/figures/qualitative/`.

# %% tags=["parameters"]
params = None  # injected by `python -m pvqae run`: the params.yaml sections of this stage
paths = None  # injected: output paths (pvqae.stages.PATHS)

# %%
from pvqae import plots, stages
from pvqae.stages import figures

cfg, paths = stages.configure("figures", params, paths)
figdir = stages.out_path(paths, "figures") / "qualitative"
res = figures.run(cfg, paths)
fig = plots.defect_panels(res["defect_rows"])
plots.save_fig(fig, figdir / "fig4_defect_maps")
fig

# %%
n = res["normal"]
fig = plots.level_maps(n["images"], n["routed"], n["titles"], prior=n["prior"])
plots.save_fig(fig, figdir / "level_maps_per_class")
fig

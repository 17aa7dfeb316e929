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
params = None  # injected: params.yaml sections of this stage
paths = None  # injected: output paths

# %%
import numpy as np

from pvqae import pipeline, plots, study
from pvqae.config import PATHS, stage_params
from pvqae.paths import repo_path

params = params or stage_params("figures")
paths = paths or dict(PATHS)
n_per_class = int(params["figures"]["samples_per_class"])
test = pipeline.load_prepared(paths["prepared"], "test")
first = study.seed_dir(repo_path(paths["scores"]), study.training_seeds(params)[0])
pv = np.load(first / "pvqae.npz")
st = np.load(first / "static_vq.npz")
figdir = repo_path(paths["figures"]) / "qualitative"
ci, lab = test["class_index"].numpy(), test["label"].numpy()

# %%
rows = []
for k, cls in enumerate(test["classes"]):
    for i in pipeline.defect_samples(test, k, n_per_class):
        rows.append({"image": test["image"][i].numpy(), "mask": test["mask"][i].numpy(),
                     "static": st["maps"][i].astype(np.float32), "pvqae": pv["maps"][i].astype(np.float32),
                     "routed": pv["routed"][i], "prior": pv["prior"][i] if "prior" in pv else None,
                     "title": f"{cls}/{test['meta'][i]['defect']}"})
fig = plots.defect_panels(rows)
plots.save_fig(fig, figdir / "fig4_defect_maps")
fig

# %%
pick = np.concatenate([np.nonzero((ci == k) & (lab == 0))[0][:n_per_class] for k in range(len(test["classes"]))])
fig = plots.level_maps(test["image"][pick].numpy(), pv["routed"][pick],
                       [test["classes"][ci[i]] for i in pick], prior=pv["prior"][pick] if "prior" in pv else None)
plots.save_fig(fig, figdir / "level_maps_per_class")
fig

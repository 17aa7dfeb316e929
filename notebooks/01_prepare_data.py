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
# # 1. Data preparation
# Reads the dataset named in `params.yaml` (`data.dataset`, `data.source`) in its original
# layout — or generates the synthetic default — validates every image and mask, resizes
# everything once, holds out `data.val_fraction` of the normal training images, and caches
# the DWT entropy of every coarse patch (paper Sec. III-B2: it depends only on the image).
# Outputs: `reports/prepared/{arrays.npz,manifest.json}`, `reports/figures/prepare/`.

# %% tags=["parameters"]
params = None  # injected by `python -m pvqae run`: the params.yaml sections of this stage
paths = None  # injected: output paths (pvqae.stages.PATHS)

# %%
import numpy as np

from pvqae import plots, stages
from pvqae.stages import prepare

cfg, paths = stages.configure("prepare", params, paths)
manifest = prepare.run(cfg, paths)
print(f"dataset {manifest['dataset']} from {manifest['root']}: classes {manifest['classes']}")
print("images per split:", manifest["counts"], f"- coarse grid {manifest['coarse_grid']}")
manifest["summary"]

# %% [markdown]
# Samples per class: normal and defective test images with their ground truth, and the
# cached per-patch DWT entropy (bright = rich context = cheaper fine codes).

# %%
arr = np.load(stages.out_path(paths, "prepared") / "arrays.npz")
picks, titles = [], []
for k, cls in enumerate(manifest["classes"]):
    for label in (0, 1):
        idx = np.nonzero((arr["class_index"] == k) & (arr["labels"] == label) & (arr["split"] == 2))[0]
        if len(idx):
            picks.append(idx[0])
            titles.append(f"{cls} / {manifest['samples'][idx[0]]['defect']}")
picks = np.array(picks)
fig = plots.sample_grid(arr["images"][picks] / 255.0, arr["masks"][picks], arr["entropy"][picks], titles)
plots.save_fig(fig, stages.out_path(paths, "figures") / "prepare" / "samples")
fig

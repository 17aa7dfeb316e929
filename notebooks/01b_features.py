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
# # 1b. PVQAE-F's input: frozen ImageNet features
# With `input.kind: features` (an extension of the paper, not its reproduction) the
# autoencoder reconstructs the feature map of a frozen ImageNet backbone (`input.backbone`,
# endpoints `input.strides` aligned to the finest grid, standardised per channel on the
# training split) instead of pixels; this stage computes it once for every prepared image,
# with the DWT entropy of the image patch under each coarse code. With `input.kind: pixels`
# (the paper) it writes only its manifest.
# Outputs: `reports/features/{features.npy,features.npz,manifest.json}`.

# %% tags=["parameters"]
params = None  # injected by `python -m pvqae run`: the params.yaml sections of this stage
paths = None  # injected: output paths (pvqae.stages.PATHS)

# %%
from pvqae import stages
from pvqae.stages import features

cfg, paths = stages.configure("features", params, paths)
manifest = features.run(cfg, paths)
manifest

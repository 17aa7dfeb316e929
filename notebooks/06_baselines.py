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
# # 6. Baselines of Table I
# Same data, splits, resolution, post-processing and metrics as PVQAE (Sec. IV): the
# **median-filter residual** (no training: the floor), **AE-SSIM** (Bergmann et al.:
# convolutional autoencoder, SSIM loss, 1 - SSIM residual map), trained from scratch for every
# training seed; **PatchCore** (stride-8 + stride-16 features, coreset, 1-NN) and **PaDiM**
# (stride 4-16, per-position Gaussian) on a frozen ImageNet backbone (`baselines.backbone`:
# EfficientNet-Lite0 from its installed weights package by default; WideResNet-50-2 with
# `baselines.backbone_weights`); **Patch AE** (document 002: the backbone fine-tuned, a 1x1
# encoder of learned patch features, a decoder of each 8x8 patch from its own vector, trained
# on defect-augmented inputs; nearest-neighbour distance of the learned features); **VQ-Flow**
# (document 001: concept prototypes and pattern codebooks by vector quantisation, conditional
# normalizing flows, -log-likelihood map). Without
# weights they are reported as "not run: no pretrained weights", never with random weights.
# The static VQ-VAE (VQ-E style) baseline is trained by the pretrain stage.
# Outputs: `reports/metrics/baselines.json`, `reports/models/baselines/`.

# %% tags=["parameters"]
params = None  # injected by `python -m pvqae run`: the params.yaml sections of this stage
paths = None  # injected: output paths (pvqae.stages.PATHS)

# %%
from pvqae import stages
from pvqae.stages import baselines

cfg, paths = stages.configure("baselines", params, paths)
record = baselines.run(cfg, paths)
print(f"methods {list(cfg.baselines.methods)}; seeds {list(cfg.seeds)}; backbone {cfg.baselines.backbone}: "
      f"{record['backbone_status']}")
{m: (record["status"][m], {k: round(100 * record["results"][m]["mean"][k], 1) for k in ("image_auroc", "pixel_auroc")}
     if m in record["results"] else None) for m in cfg.baselines.methods}

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
params = None  # injected: params.yaml sections of this stage
paths = None  # injected: output paths

# %%
from pvqae import pipeline, study
from pvqae.baselines import harness
from pvqae.backbones import load_backbone
from pvqae.config import PATHS, stage_params
from pvqae.paths import repo_path

params = params or stage_params("baselines")
paths = paths or dict(PATHS)
bp, ev = params["baselines"], params["evaluate"]
seeds = study.training_seeds(params)
methods = list(bp["methods"])
out_dir = repo_path(paths["baseline_models"])
train = pipeline.load_prepared(paths["prepared"], "train")
test = pipeline.load_prepared(paths["prepared"], "test")
backbone, backbone_status = (load_backbone(bp["backbone"], bp["backbone_weights"], bool(bp["download_weights"]))
                             if set(methods) & set(harness.NEEDS_BACKBONE) else (None, "not needed"))
print(f"methods {methods}; seeds {seeds}; backbone {bp['backbone']}: {backbone_status}")

# %%
run = harness.run_all(methods, bp, params["data"], train, test, ev, seeds, out_dir, backbone, backbone_status)
pipeline.write_json({"seeds": seeds, "backbone": bp["backbone"], "backbone_status": backbone_status, **run}, repo_path(paths["metrics"]) / "baselines.json")
out_dir.mkdir(parents=True, exist_ok=True)
{m: (run["status"][m], {k: round(100 * run["results"][m]["mean"][k], 1) for k in ("image_auroc", "pixel_auroc")}
     if m in run["results"] else None) for m in methods}

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
# Same data, splits, resolution and metrics as PVQAE (Sec. IV): **AE-SSIM** (Bergmann et
# al.: convolutional autoencoder, SSIM loss, 1 - SSIM residual map), trained from scratch for
# every training seed; **PatchCore** (WideResNet-50-2 layer2+3, coreset, 1-NN) and **PaDiM**
# (layer1-3, per-position Gaussian), which need an ImageNet-pretrained WideResNet-50-2
# (`baselines.backbone_weights`, or the torch hub cache, or `baselines.download_weights`).
# Without weights they are reported as "not run: no pretrained weights" — never with random
# weights. The static VQ-VAE (VQ-E style) baseline is trained by the pretrain stage.
# Outputs: `reports/metrics/baselines.json`, `reports/models/baselines/`.

# %% tags=["parameters"]
params = None  # injected: params.yaml sections of this stage
paths = None  # injected: output paths

# %%
from pvqae import pipeline, study
from pvqae.baselines import harness
from pvqae.baselines.backbones import load_backbone
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
backbone, backbone_status = (load_backbone(bp["backbone_weights"], bool(bp["download_weights"]))
                             if set(methods) & set(harness.NEEDS_BACKBONE) else (None, "not needed"))
print(f"methods {methods}; seeds {seeds}; WideResNet-50-2: {backbone_status}")

# %%
run = harness.run_all(methods, bp, params["data"], train, test, ev, seeds, out_dir, backbone, backbone_status)
pipeline.write_json({"seeds": seeds, "backbone": backbone_status, **run}, repo_path(paths["metrics"]) / "baselines.json")
out_dir.mkdir(parents=True, exist_ok=True)
{m: (run["status"][m], {k: round(100 * run["results"][m]["mean"][k], 1) for k in ("image_auroc", "pixel_auroc")}
     if m in run["results"] else None) for m in methods}

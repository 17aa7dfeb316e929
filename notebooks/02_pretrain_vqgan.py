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
# # 2. VQ-GAN pre-training
# Trains the multi-resolution VQ-GAN autoencoder (paper Sec. III-A, IV-A) on the normal
# training images of **all classes at once**. Routing is a uniformly random level per coarse
# patch here, so all three codebooks and the decoder learn before budget learning starts
# (README, "method decisions"). The static single-resolution VQ baseline (one fixed level,
# same encoder/decoder code, same total number of steps as pre-training + budget learning)
# is trained here too. Both are trained once per training seed (`seeds`).
# Outputs: `reports/models/pretrain/`, `reports/figures/pretrain/`.

# %% tags=["parameters"]
params = None  # injected: params.yaml sections of this stage
paths = None  # injected: output paths

# %%
from pvqae import pipeline, plots, study
from pvqae.config import PATHS, stage_params
from pvqae.model import PVQAE
from pvqae.paths import repo_path

params = params or stage_params("pretrain")
paths = paths or dict(PATHS)
seeds = study.training_seeds(params)
out_dir = repo_path(paths["pretrain_models"])
figdir = repo_path(paths["figures"]) / "pretrain"
train = pipeline.load_prepared(paths["prepared"], "train")
val = pipeline.load_prepared(paths["prepared"], "val")
model_cfg = pipeline.model_config(params["model"], params["data"])
print(f"{len(train['image'])} training / {len(val['image'])} held-out normal images, classes {train['classes']}; "
      f"PVQAE autoencoder {sum(p.numel() for p in PVQAE(model_cfg).parameters()) / 1e6:.2f} M parameters, "
      f"grids (coarse, median, fine) = {model_cfg.grids}; training seeds {seeds}")

# %%
summaries = {s: study.pretrain(params, train, val, study.seed_dir(out_dir, s), s) for s in seeds}
pipeline.write_json({f"seed{s}": v for s, v in summaries.items()}, out_dir / "summary.json")
{s: {m: {k: v[k] for k in ("train_seconds", "heldout_l1")} for m, v in d.items()} for s, d in summaries.items()}

# %%
first = study.seed_dir(out_dir, seeds[0])
fig = plots.training_curves({"PVQAE (random routing)": first / "pvqae_pretrain_log.csv",
                             "static VQ": first / "static_vq_log.csv"}, keys=("rec", "vq", "g", "d"))
plots.save_fig(fig, figdir / "training_curves")
fig

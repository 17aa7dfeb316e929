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
params = None  # injected by `python -m pvqae run`: the params.yaml sections of this stage
paths = None  # injected: output paths (pvqae.stages.PATHS)

# %%
from pvqae import plots, stages
from pvqae.model import PVQAE
from pvqae.stages import pretrain

cfg, paths = stages.configure("pretrain", params, paths)
summaries = pretrain.run(cfg, paths)
first = stages.seed_dir(stages.out_path(paths, "pretrain_models"), cfg.seeds[0])
model = PVQAE.from_checkpoint(first / "pvqae_pretrain.pt")
print(f"input {cfg.input.kind}: PVQAE autoencoder {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
      f"grids (coarse, median, fine) = {model.cfg.grids}; training seeds {list(cfg.seeds)}")
{s: {m: {k: v[k] for k in ("train_seconds", "heldout_l1")} for m, v in d.items()} for s, d in summaries.items()}

# %%
fig = plots.training_curves({"PVQAE (random routing)": first / "pvqae_pretrain_log.csv",
                             "static VQ": first / "static_vq_log.csv"}, keys=("rec", "vq", "g", "d"))
plots.save_fig(fig, stages.out_path(paths, "figures") / "pretrain" / "training_curves")
fig

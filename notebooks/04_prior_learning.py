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
# # 4. Learning normal budget priors
# With the autoencoder frozen, the routed level maps of the normal training images are
# flattened in clockwise spiral order and a one-block Budget Prior Transformer learns them by
# masked-token prediction (Sec. III-C1), with a class token (`per-class`), a shared token
# (`universal`), or not at all (`none`). Accuracy on held-out normal images is reported.
# Outputs: `reports/models/prior/`, `reports/figures/prior/`.

# %% tags=["parameters"]
params = None  # injected: params.yaml sections of this stage
paths = None  # injected: output paths

# %%
import torch
from IPython.display import display

from pvqae import pipeline, plots, study
from pvqae.config import PATHS, stage_params
from pvqae.paths import repo_path
from pvqae.train import load_model, routed_levels

params = params or stage_params("prior")
paths = paths or dict(PATHS)
seeds = study.training_seeds(params)
out_dir = repo_path(paths["prior_models"])
figdir = repo_path(paths["figures"]) / "prior"
train = pipeline.load_prepared(paths["prepared"], "train")
val = pipeline.load_prepared(paths["prepared"], "val")

# %%
priors, summaries = {}, {}
for s in seeds:
    model = load_model(study.seed_dir(paths["budget_models"], s) / "pvqae.pt")
    priors[s], summaries[s] = study.learn_prior(model, train, val, params["prior"],
                                                study.seed_dir(out_dir, s) / "prior.pt", s)
pipeline.write_json({f"seed{s}": v for s, v in summaries.items()}, out_dir / "summary.json")
{s: {k: v for k, v in d.items() if k != "history"} for s, d in summaries.items()}

# %%
prior = priors[seeds[0]]
if prior is not None and len(val["image"]):
    pick = list(range(min(6, len(val["image"]))))
    val_levels = routed_levels(load_model(study.seed_dir(paths["budget_models"], seeds[0]) / "pvqae.pt"),
                               val["image"][pick])
    with torch.no_grad():
        pl = prior.predict_all(val_levels, val["class_index"][pick]).argmax(1).numpy()
    fig = plots.level_maps(val["image"][pick].numpy(), val_levels.numpy(),
                           [val["classes"][c] for c in val["class_index"][pick].tolist()], prior=pl)
    plots.save_fig(fig, figdir / "routed_vs_prior")
    display(fig)
else:
    figdir.mkdir(parents=True, exist_ok=True)
    print("no prior (mode none) or no held-out images: nothing to show")

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

from pvqae import pipeline, plots
from pvqae.config import PATHS, stage_params
from pvqae.paths import repo_path
from pvqae.train import PriorConfig, load_model, routed_levels, train_prior

params = params or stage_params("prior")
paths = paths or dict(PATHS)
seed = params["seed"]
model = load_model(repo_path(paths["budget_models"]) / "pvqae.pt")
out_dir = repo_path(paths["prior_models"])
figdir = repo_path(paths["figures"]) / "prior"
train = pipeline.load_prepared(paths["prepared"], "train")
val = pipeline.load_prepared(paths["prepared"], "val")
train_levels = routed_levels(model, train["image"])
val_levels = routed_levels(model, val["image"]) if len(val["image"]) else None
cfg = PriorConfig.from_dict(params["prior"])
prior, summary = train_prior(train_levels, train["class_index"], len(train["classes"]), cfg,
                             out_dir / "prior.pt", seed)
if prior is not None and val_levels is not None:
    with torch.no_grad():
        probs = prior.predict_all(val_levels, val["class_index"])
    summary["heldout_accuracy"] = float((probs.argmax(1) == val_levels).float().mean())
pipeline.write_json(summary, out_dir / "summary.json")
{k: v for k, v in summary.items() if k != "history"}

# %%
if prior is not None and val_levels is not None and len(val_levels):
    pick = list(range(min(6, len(val_levels))))
    with torch.no_grad():
        pl = prior.predict_all(val_levels[pick], val["class_index"][pick]).argmax(1).numpy()
    fig = plots.level_maps(val["image"][pick].numpy(), val_levels[pick].numpy(),
                           [val["classes"][c] for c in val["class_index"][pick].tolist()], prior=pl)
    plots.save_fig(fig, figdir / "routed_vs_prior")
    display(fig)
else:
    (figdir).mkdir(parents=True, exist_ok=True)
    print("no prior (mode none) or no held-out images: nothing to show")

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
params = None  # injected by `python -m pvqae run`: the params.yaml sections of this stage
paths = None  # injected: output paths (pvqae.stages.PATHS)

# %%
import torch
from IPython.display import display

from pvqae import plots, stages
from pvqae.model import PVQAE, routed_levels
from pvqae.stages import prior as prior_stage

cfg, paths = stages.configure("prior", params, paths)
figdir = stages.out_path(paths, "figures") / "prior"
priors, summaries = prior_stage.run(cfg, paths)
{s: {k: v for k, v in d.items() if k != "history"} for s, d in summaries.items()}

# %%
prior = priors[cfg.seeds[0]]
val = stages.load_split(paths, "val")
if prior is not None and len(val["image"]):
    pick = list(range(min(6, len(val["image"]))))
    model = PVQAE.from_checkpoint(stages.seed_dir(stages.out_path(paths, "budget_models"), cfg.seeds[0]) / "pvqae.pt")
    val_levels = routed_levels(model, val["image"][pick])
    with torch.no_grad():
        pl = prior.predict_all(val_levels, val["class_index"][pick]).argmax(1).numpy()
    fig = plots.level_maps(val.get("pixels", val["image"])[pick].numpy(), val_levels.numpy(),
                           [val["classes"][c] for c in val["class_index"][pick].tolist()], prior=pl)
    plots.save_fig(fig, figdir / "routed_vs_prior")
    display(fig)
else:
    figdir.mkdir(parents=True, exist_ok=True)
    print("no prior (mode none) or no held-out images: nothing to show")

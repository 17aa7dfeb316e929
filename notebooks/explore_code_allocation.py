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
# # Exploring code allocation (not a pipeline stage)
# How PVQAE spends its codes on one test image and where its defect score comes from:
# the routed budget (the Dynamic Routing Module's level per coarse patch, Sec. III-B1), the
# Budget Prior Transformer's normal budget and the budget cross-entropy between them
# (Sec. III-C1), the reconstructions with either budget, and the score map
# `S = CE(routed, prior) x ||x - x^||^2` (Sec. III-C2).
#
# Knobs: the class and image (normal or defective); a routing **temperature** tau (0 = the
# argmax routing of evaluation; tau > 0 samples each patch's level from softmax(logits / tau)
# with Gumbel noise: 1 = the router's own distribution, as in training, > 1 towards uniform);
# and **forcing** every patch to one level for the scored reconstruction (fine codes rebuild
# defects too, so the score drops; that is why the prior's budget reconstructs).
#
# Reads the pipeline's cached outputs (`reports/models`, `reports/prepared`): run `dvc repro`
# first. Open it in JupyterLab (README, "Exploring code allocation"). With `headless=True`
# (papermill) it draws the same figures for the parameters below without widgets and saves
# them as PNG in `out_dir`.

# %% tags=["parameters"]
models_dir = "reports/models"  # the pipeline's models (budget/pvqae.pt, prior/prior.pt)
prepared_dir = "reports/prepared"  # arrays.npz + manifest.json of the prepare stage
class_name = None  # None: the first class
image_kind = "all"  # all | normal | defective
image_index = 0  # index among the test images of that class and kind
tau = 0.0  # routing temperature; 0: argmax (evaluation)
force_level = "none"  # none | coarse | median | fine
seed = 0  # Gumbel noise seed
headless = False  # True: no widgets, save the figures to out_dir
out_dir = None  # where headless mode saves PNGs (None: display only)

# %%
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import display

from pvqae import explore, plots
from pvqae.data.prepared import load_prepared
from pvqae.model import LEVEL_NAMES
from pvqae.paths import repo_path
from pvqae.score_cli import load_bundle

prepared = repo_path(prepared_dir)
bundle = load_bundle(repo_path(models_dir), manifest=prepared / "manifest.json")
model, prior = bundle.model, bundle.prior
test = load_prepared(prepared, "test")
classes = test["classes"]
class_name = class_name or classes[0]
save_dir = repo_path(out_dir) if out_dir else None
if save_dir is not None:
    save_dir.mkdir(parents=True, exist_ok=True)
print(f"{len(test['image'])} test images, classes {classes}, prior mode {bundle.prior_mode}, "
      f"model {bundle.files.model}")


def show_image(cls: str, kind: str, index: int, tau: float, force: str, seed: int, save: bool = False) -> None:
    """Explain one test image: the eight-panel figure and the forced-level comparison."""
    idx = explore.select_images(test, cls, kind)
    if not idx:
        print(f"no {kind} test images of class {cls!r}")
        return
    if not 0 <= index < len(idx):
        raise IndexError(f"image_index {index} out of range: class {cls!r} has {len(idx)} {kind} test images")
    i = idx[index]
    ci = classes.index(cls)
    x, mask = test["image"][i], test["mask"][i].numpy()
    name = Path(test["meta"][i]["path"]).name
    title = f"{cls} / {test['meta'][i].get('defect') or 'good'} / {name}"
    res = explore.explain_image(model, prior, x, ci, tau=tau or None, force_level=force, seed=seed)
    fig = explore.explain_figure(res, mask, title)
    display(fig)
    levels = explore.explain_all_levels(model, prior, x, ci, tau=tau or None, seed=seed)
    fig2 = explore.forced_levels_figure(levels, f"{title}: reconstruction budget vs error and score")
    display(fig2)
    if save and save_dir is not None:
        stem = f"{cls}_{kind}_{index}"
        fig.savefig(save_dir / f"explain_{stem}.png", dpi=110, bbox_inches="tight")
        fig2.savefig(save_dir / f"forced_levels_{stem}.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    plt.close(fig2)


# %% [markdown]
# ## One image

# %%
if headless:
    show_image(class_name, image_kind, image_index, tau, force_level, seed, save=True)
else:
    import ipywidgets as W

    w_cls = W.Dropdown(options=classes, value=class_name, description="class")
    w_kind = W.Dropdown(options=list(explore.IMAGE_KINDS), value=image_kind, description="images")
    w_idx = W.IntSlider(value=image_index, min=0, max=0, description="image")
    w_tau = W.FloatSlider(value=tau or 0.0, min=0.0, max=3.0, step=0.05, description="tau (0=argmax)")
    w_seed = W.IntText(value=seed, description="seed")
    w_force = W.Dropdown(options=list(explore.FORCE_CHOICES), value=force_level or "none",
                          description="force level")
    w_out = W.Output()

    def update(_=None):
        n = len(explore.select_images(test, w_cls.value, w_kind.value))
        w_idx.max = max(0, n - 1)
        with w_out:
            w_out.clear_output(wait=True)
            show_image(w_cls.value, w_kind.value, min(w_idx.value, w_idx.max), w_tau.value, w_force.value,
                       w_seed.value)

    for w in (w_cls, w_kind, w_idx, w_tau, w_seed, w_force):
        w.observe(update, names="value")
    display(W.VBox([W.HBox([w_cls, w_kind, w_idx]), W.HBox([w_tau, w_seed, w_force]), w_out]))
    update()

# %% [markdown]
# ## Code allocation per class
# Fraction of coarse patches per level on the test split, per class, for normal and defective
# images, with the routed budget and the prior's budget (as the `evaluate` stage's
# `code_allocation` table).

# %%
alloc = explore.allocation_stats(model, prior, test)
for r in alloc:
    print(f"{r['class']:>12} {r['images']:>9} {r['budget']:>6} (n={r['n']:3d}): " +
          "  ".join(f"{lv} {100 * r[lv]:5.1f}%" for lv in LEVEL_NAMES))
fig = plots.allocation_bars(alloc)
if save_dir is not None:
    fig.savefig(save_dir / "code_allocation.png", dpi=110, bbox_inches="tight")
display(fig)
plt.close(fig)

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
# # 5. Evaluation
# Scores every test image with PVQAE (S = CE(routed budget, prior budget) x L2 error of the
# reconstruction made with the prior's budget, Sec. III-C2) and with the static-VQ baseline
# (L2 error), and reports image AUROC, pixel AUROC, AUPRO (FPR <= 0.3) and F1-max per class
# and their mean, plus how many coarse/median/fine codes each class gets.
# Every training seed is scored; tables show mean ± std over seeds.
# Outputs: `reports/metrics/evaluate.json`, `reports/tables/evaluate/`, `reports/scores/`,
# `reports/figures/evaluate/`.

# %% tags=["parameters"]
params = None  # injected: params.yaml sections of this stage
paths = None  # injected: output paths

# %%
from IPython.display import display

from pvqae import pipeline, plots, study
from pvqae.config import PATHS, stage_params
from pvqae.paths import repo_path
from pvqae.train import load_model, load_prior

params = params or stage_params("evaluate")
paths = paths or dict(PATHS)
ev = params["evaluate"]
seeds = study.training_seeds(params)
test = pipeline.load_prepared(paths["prepared"], "test")
print(f"{len(test['image'])} test images, classes {test['classes']}, prior mode {params['prior']['mode']}, "
      f"training seeds {seeds}")

# %%
per_seed, scores = {}, {}
for s in seeds:
    model = load_model(study.seed_dir(paths["budget_models"], s) / "pvqae.pt")
    prior = load_prior(study.seed_dir(paths["prior_models"], s) / "prior.pt")
    static = load_model(study.seed_dir(paths["pretrain_models"], s) / "static_vq.pt")
    scores[s] = {}
    scores[s]["pvqae"], pv = study.evaluate_model(model, prior, test, ev, desc=f"PVQAE seed {s}")
    scores[s]["static_vq"], st = study.evaluate_model(static, None, test, ev, desc=f"static VQ seed {s}")
    per_seed[s] = {"pvqae": pv, "static_vq": st}
    for name, sc in scores[s].items():
        pipeline.save_scores(sc, test, study.seed_dir(paths["scores"], s) / f"{name}.npz")
methods = ("pvqae", "static_vq")
results = {m: study.aggregate_seeds([per_seed[s][m] for s in seeds]) for m in methods}
pipeline.write_json({**results, "seeds": seeds, "per_seed": {f"seed{s}": r for s, r in per_seed.items()}},
                    repo_path(paths["metrics"]) / "evaluate.json")

# %%
rows = []
for cls in test["classes"] + ["mean"]:
    row = {"class": cls}
    for name in methods:
        r = results[name]
        mean, std = (r["mean"], r["std"]) if cls == "mean" else (r["per_class"].get(cls, {}),
                                                                 r["per_class_std"].get(cls, {}))
        for k in ("image_auroc", "pixel_auroc", "aupro", "pixel_f1_max"):
            row[f"{name}:{k}"] = study.pm(mean.get(k), std.get(k), len(seeds))
    rows.append(row)
tables = repo_path(paths["tables"]) / "evaluate"
md = pipeline.write_table(rows, tables / "main", "PVQAE vs static VQ on the test set (%)",
                          note=f"Mean ± std over training seeds {seeds}" if len(seeds) > 1 else
                          f"One training seed ({seeds[0]}).")
print(md)

# %% [markdown]
# Code allocation: the fraction of coarse patches routed to each level, per class, for
# normal and defective test images, with the router's budget and the prior's (first seed).

# %%
first = scores[seeds[0]]["pvqae"]
alloc = pipeline.code_allocation(test, first["routed"], "routed")
if first["prior"] is not None:
    alloc += pipeline.code_allocation(test, first["prior"], "prior")
print(pipeline.write_table(alloc, tables / "code_allocation", "Fraction of coarse patches per level",
                           pct_cols=("coarse", "median", "fine")))
figdir = repo_path(paths["figures"]) / "evaluate"
fig = plots.allocation_bars(alloc)
plots.save_fig(fig, figdir / "code_allocation")
display(fig)
fig = plots.metric_bars({n: r["mean"] for n, r in results.items()}, ("image_auroc", "pixel_auroc", "aupro"))
plots.save_fig(fig, figdir / "mean_metrics")
fig

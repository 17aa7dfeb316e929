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
# Outputs: `reports/metrics/evaluate.json`, `reports/tables/evaluate/`, `reports/scores/`,
# `reports/figures/evaluate/`.

# %% tags=["parameters"]
params = None  # injected: params.yaml sections of this stage
paths = None  # injected: output paths

# %%
from IPython.display import display

from pvqae import pipeline, plots
from pvqae.config import PATHS, stage_params
from pvqae.metrics import METRIC_NAMES
from pvqae.paths import repo_path
from pvqae.scoring import ScoreConfig
from pvqae.train import load_model, load_prior

params = params or stage_params("evaluate")
paths = paths or dict(PATHS)
ev = params["evaluate"]
score_cfg = ScoreConfig.from_dict(ev["score"])
test = pipeline.load_prepared(paths["prepared"], "test")
model = load_model(repo_path(paths["budget_models"]) / "pvqae.pt")
prior = load_prior(repo_path(paths["prior_models"]) / "prior.pt")
static = load_model(repo_path(paths["pretrain_models"]) / "static_vq.pt")
print(f"{len(test['image'])} test images, classes {test['classes']}, prior mode {params['prior']['mode']}")

# %%
scores = {
    "pvqae": pipeline.score_split(model, test, prior, score_cfg, ev["batch_size"], desc="PVQAE"),
    "static_vq": pipeline.score_split(static, test, None, score_cfg, ev["batch_size"], desc="static VQ"),
}
results = {}
for name, sc in scores.items():
    results[name] = pipeline.evaluate_scores(test, sc, ev["fpr_limit"])
    results[name]["inference_images_per_second"] = sc["images_per_second"]
    pipeline.save_scores(sc, test, repo_path(paths["scores"]) / f"{name}.npz")
pipeline.write_json(results, repo_path(paths["metrics"]) / "evaluate.json")

# %%
rows = []
for cls in test["classes"] + ["mean"]:
    row = {"class": cls}
    for name in scores:
        m = results[name]["mean"] if cls == "mean" else results[name]["per_class"].get(cls, {})
        for k in METRIC_NAMES:
            row[f"{name}:{k}"] = m.get(k, float("nan"))
    rows.append(row)
tables = repo_path(paths["tables"]) / "evaluate"
md = pipeline.write_table(rows, tables / "main", "PVQAE vs static VQ on the test set (%)",
                          pct_cols=tuple(k for k in rows[0] if ":" in k))
print(md)

# %% [markdown]
# Code allocation: the fraction of coarse patches routed to each level, per class, for
# normal and defective test images, with the router's budget and the prior's.

# %%
alloc = pipeline.code_allocation(test, scores["pvqae"]["routed"], "routed")
if scores["pvqae"]["prior"] is not None:
    alloc += pipeline.code_allocation(test, scores["pvqae"]["prior"], "prior")
print(pipeline.write_table(alloc, tables / "code_allocation", "Fraction of coarse patches per level",
                           pct_cols=("coarse", "median", "fine")))
figdir = repo_path(paths["figures"]) / "evaluate"
fig = plots.allocation_bars(alloc)
plots.save_fig(fig, figdir / "code_allocation")
display(fig)
fig = plots.metric_bars({n: r["mean"] for n, r in results.items()}, ("image_auroc", "pixel_auroc", "aupro"))
plots.save_fig(fig, figdir / "mean_metrics")
fig

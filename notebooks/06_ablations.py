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
# # 6. Ablations
# **Table III** (normal budget priors): the same trained autoencoder scored with no prior
# (routed budget reconstructs, S = L2 error), a universal prior (shared token) and a
# per-class prior (class token) — only the prior differs (Sec. IV-D2).
# **Static VQ vs PVQAE**: the core claim, from the evaluation stage's metrics.
# Outputs: `reports/metrics/ablations.json`, `reports/tables/ablations/`,
# `reports/models/ablations/`, `reports/figures/ablations/`.

# %% tags=["parameters"]
params = None  # injected: params.yaml sections of this stage
paths = None  # injected: output paths

# %%
import json

from pvqae import pipeline, plots
from pvqae.config import PATHS, stage_params
from pvqae.paths import repo_path
from pvqae.scoring import ScoreConfig
from pvqae.train import PriorConfig, load_model, routed_levels, train_prior

params = params or stage_params("ablations")
paths = paths or dict(PATHS)
seed, ev = params["seed"], params["evaluate"]
score_cfg = ScoreConfig.from_dict(ev["score"])
model = load_model(repo_path(paths["budget_models"]) / "pvqae.pt")
train = pipeline.load_prepared(paths["prepared"], "train")
test = pipeline.load_prepared(paths["prepared"], "test")
levels = routed_levels(model, train["image"])
out_models = repo_path(paths["ablation_models"])
tables = repo_path(paths["tables"]) / "ablations"
figdir = repo_path(paths["figures"]) / "ablations"

# %%
prior_results = {}
for mode in params["ablations"]["priors"]:
    cfg = PriorConfig.from_dict({**params["prior"], "mode": mode})
    prior, _ = train_prior(levels, train["class_index"], len(train["classes"]), cfg, out_models / f"prior_{mode}.pt",
                           seed, progress=False)
    sc = pipeline.score_split(model, test, prior, score_cfg, ev["batch_size"], desc=f"prior {mode}")
    prior_results[mode] = pipeline.evaluate_scores(test, sc, ev["fpr_limit"])
rows = [{"prior": m, "image_auroc": r["mean"]["image_auroc"], "pixel_auroc": r["mean"]["pixel_auroc"],
         "aupro": r["mean"]["aupro"]} for m, r in prior_results.items()]
print(pipeline.write_table(rows, tables / "table3_priors", "Table III: normal budget priors (mean over classes, %)",
                           pct_cols=("image_auroc", "pixel_auroc", "aupro")))

# %%
with open(repo_path(paths["metrics"]) / "evaluate.json") as f:
    ev_metrics = json.load(f)
core = [{"method": m, **{k: ev_metrics[m]["mean"][k] for k in ("image_auroc", "pixel_auroc", "aupro")}}
        for m in ("static_vq", "pvqae")]
print(pipeline.write_table(core, tables / "static_vs_pvqae", "Static VQ vs PVQAE (mean over classes, %)",
                           pct_cols=("image_auroc", "pixel_auroc", "aupro")))
pipeline.write_json({"priors": {m: r["mean"] for m, r in prior_results.items()},
                     "priors_per_class": {m: r["per_class"] for m, r in prior_results.items()},
                     "static_vs_pvqae": {r["method"]: r for r in core}},
                    repo_path(paths["metrics"]) / "ablations.json")
fig = plots.metric_bars({f"prior: {m}": r["mean"] for m, r in prior_results.items()})
plots.save_fig(fig, figdir / "table3_priors")
fig

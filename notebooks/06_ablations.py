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
with open(repo_path(paths["metrics"]) / "evaluate.json") as f:
    ev_metrics = json.load(f)
# the prior mode of the main model was trained (prior stage) and scored (evaluate stage) already
prior_results = {params["prior"]["mode"]: ev_metrics["pvqae"]}
for mode in params["ablations"]["priors"]:
    if mode in prior_results:
        continue
    cfg = PriorConfig.from_dict({**params["prior"], "mode": mode})
    prior, _ = train_prior(levels, train["class_index"], len(train["classes"]), cfg, out_models / f"prior_{mode}.pt",
                           seed, progress=False)
    sc = pipeline.score_split(model, test, prior, score_cfg, ev["batch_size"], desc=f"prior {mode}")
    prior_results[mode] = pipeline.evaluate_scores(test, sc, ev["fpr_limit"])
rows = [{"prior": m, "image_auroc": prior_results[m]["mean"]["image_auroc"],
         "pixel_auroc": prior_results[m]["mean"]["pixel_auroc"], "aupro": prior_results[m]["mean"]["aupro"]}
        for m in params["ablations"]["priors"]]
print(pipeline.write_table(rows, tables / "table3_priors", "Table III: normal budget priors (mean over classes, %)",
                           pct_cols=("image_auroc", "pixel_auroc", "aupro")))

# %%
core = [{"method": m, **{k: ev_metrics[m]["mean"][k] for k in ("image_auroc", "pixel_auroc", "aupro")}}
        for m in ("static_vq", "pvqae")]
print(pipeline.write_table(core, tables / "static_vs_pvqae", "Static VQ vs PVQAE (mean over classes, %)",
                           pct_cols=("image_auroc", "pixel_auroc", "aupro")))
pipeline.write_json({"priors": {m: prior_results[m]["mean"] for m in params["ablations"]["priors"]},
                     "priors_per_class": {m: prior_results[m]["per_class"] for m in params["ablations"]["priors"]},
                     "static_vs_pvqae": {r["method"]: r for r in core}},
                    repo_path(paths["metrics"]) / "ablations.json")
fig = plots.metric_bars({f"prior: {m}": prior_results[m]["mean"] for m in params["ablations"]["priors"]})
plots.save_fig(fig, figdir / "table3_priors")
fig

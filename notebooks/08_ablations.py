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
# # 8. Ablations (Sec. IV-D)
# **Table II** (lambda schedule: constant / cosine / linear) and **Fig. 5** (lambda_max
# sweep, linear schedule) collect the budget-learning variants, each trained by its own
# `foreach` DVC stage (notebook 7); the setting equal to the main run is the main run.
# **Table III** (normal budget priors): the same trained autoencoder scored with no prior
# (routed budget reconstructs, S = L2 error), a universal prior (shared token) and a
# per-class prior (class token) — only the prior differs (Sec. IV-D2).
# **Static VQ vs PVQAE**: the core claim, from the evaluation stage's metrics.
# Every number is a mean ± std over the training seeds.
# Outputs: `reports/metrics/ablations.json`, `reports/tables/ablations/`,
# `reports/models/ablations/`, `reports/figures/ablations/`.

# %% tags=["parameters"]
params = None  # injected: params.yaml sections of this stage
paths = None  # injected: output paths

# %%
import json

from IPython.display import display

from pvqae import pipeline, plots, report, study
from pvqae.config import PATHS, stage_params
from pvqae.paths import repo_path
from pvqae.train import load_model

params = params or stage_params("ablations")
paths = paths or dict(PATHS)
ab, ev = params["ablations"], params["evaluate"]
seeds = study.training_seeds(params)
tables = repo_path(paths["tables"]) / "ablations"
figdir = repo_path(paths["figures"]) / "ablations"
with open(repo_path(paths["metrics"]) / "evaluate.json") as f:
    ev_metrics = json.load(f)


def table_rows(key: str, results: dict) -> list[dict]:
    """One row per setting: mean ± std of the class-mean metrics (paper columns: report stage)."""
    return report.ablation_rows(key, results)


# %% [markdown]
# ## Table II and Fig. 5: progressive budget learning

# %%
schedules = {x: study.variant_result(repo_path(paths["variants"]), "lambda_schedule", x, ev_metrics)
             for x in ab["lambda_schedules"]}
print(pipeline.write_table(table_rows("lambda schedule", schedules), tables / "table2_lambda_schedule",
                           "Table II: lambda schedule (mean over classes, %)",
                           note=f"lambda_max = {params['budget']['lambda_max']} for every schedule; "
                                f"seeds {seeds}."))
sweep = {float(x): study.variant_result(repo_path(paths["variants"]), "lambda_max", x, ev_metrics)
         for x in ab["lambda_max"]}
print(pipeline.write_table(table_rows("lambda_max", {f"{k:g}": v for k, v in sweep.items()}), tables / "fig5_lambda_max",
                           "Fig. 5: lambda_max sweep, linear schedule (mean over classes, %)",
                           note=f"schedule {params['budget']['lambda_schedule']}; seeds {seeds}."))
fig = plots.lambda_sweep(sweep, main=float(params["budget"]["lambda_max"]))
plots.save_fig(fig, figdir / "fig5_lambda_max")
display(fig)

# %% [markdown]
# ## Table III: normal budget priors (trained per seed on the main autoencoder)

# %%
train = pipeline.load_prepared(paths["prepared"], "train")
val = pipeline.load_prepared(paths["prepared"], "val")
test = pipeline.load_prepared(paths["prepared"], "test")
main_mode = params["prior"]["mode"]  # trained (prior stage) and scored (evaluate stage) already
other_modes = [m for m in ab["priors"] if m != main_mode]
per_seed = {m: [] for m in other_modes}
for s in seeds:
    model = load_model(study.seed_dir(paths["budget_models"], s) / "pvqae.pt")
    for mode in other_modes:
        prior, _ = study.learn_prior(model, train, val, {**params["prior"], "mode": mode},
                                     study.seed_dir(paths["ablation_models"], s) / f"prior_{mode}.pt", s,
                                     progress=False)
        per_seed[mode].append(study.evaluate_model(model, prior, test, ev, desc=f"prior {mode} seed {s}")[1])
priors = {m: ev_metrics["pvqae"] if m == main_mode else study.aggregate_seeds(per_seed[m]) for m in ab["priors"]}
print(pipeline.write_table(table_rows("prior", priors), tables / "table3_priors",
                           "Table III: normal budget priors (mean over classes, %)", note=f"seeds {seeds}."))

# %%
core = {m: ev_metrics[m] for m in ("static_vq", "pvqae")}
print(pipeline.write_table(table_rows("method", core), tables / "static_vs_pvqae",
                           "Static VQ vs PVQAE (mean over classes, %)",
                           note=f"same autoencoder, same number of training steps; seeds {seeds}."))


def brief(r: dict) -> dict:
    return {k: r[k] for k in ("mean", "std", "per_class", "per_class_std", "n_seeds") if k in r}


pipeline.write_json({"seeds": seeds,
                     "lambda_schedule": {k: brief(v) for k, v in schedules.items()},
                     "lambda_max": {str(k): brief(v) for k, v in sweep.items()},
                     "priors": {k: brief(v) for k, v in priors.items()},
                     "static_vs_pvqae": {k: brief(v) for k, v in core.items()}},
                    repo_path(paths["metrics"]) / "ablations.json")
fig = plots.metric_bars({f"prior: {m}": priors[m]["mean"] for m in ab["priors"]})
plots.save_fig(fig, figdir / "table3_priors")
fig = plots.metric_bars({f"schedule: {m}": schedules[m]["mean"] for m in ab["lambda_schedules"]})
plots.save_fig(fig, figdir / "table2_lambda_schedule")
fig

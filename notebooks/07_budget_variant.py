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
# # 7. One budget-learning ablation setting (Table II, Fig. 5)
# dvc.yaml runs this notebook once per setting of the ablation lists (`foreach` stages
# `lambda_schedule@<schedule>` and `lambda_max@<value>`, Sec. IV-D1): progressive budget
# learning from the same pre-trained autoencoder with one budget param changed, then the
# prior (main prior mode) and the evaluation, for every training seed — the same library
# calls as the main stages. A setting equal to the main run's is not trained again: its
# metrics file says so and the ablation tables take the main run's numbers.
# Outputs: `reports/variants/<name>/` (models per seed, metrics.json, executed notebook).

# %% tags=["parameters"]
params = None  # injected: params.yaml sections of this stage
paths = None  # injected: output paths
variant = None  # injected: {"name": "lambda_max-0.5", "overrides": {"budget.lambda_max": 0.5}}

# %%
import time

from pvqae import pipeline, study
from pvqae.config import PATHS, stage_params
from pvqae.paths import repo_path

params = params or stage_params("variant")
paths = paths or dict(PATHS)
variant = variant or {"name": "lambda_max-0.5", "overrides": {"budget.lambda_max": 0.5}}
seeds = study.training_seeds(params)
out_dir = repo_path(paths["variants"]) / variant["name"]
same_as_main = study.is_main_setting(params, variant["overrides"])
vparams = study.apply_overrides(params, variant["overrides"])
print(f"variant {variant['name']}: {variant['overrides']}; seeds {seeds}; "
      f"{'same as the main run: reusing it' if same_as_main else 'training'}")

# %%
record = {"name": variant["name"], "overrides": variant["overrides"], "seeds": seeds, "same_as_main": same_as_main}
if not same_as_main:
    t0 = time.perf_counter()
    train = pipeline.load_prepared(paths["prepared"], "train")
    val = pipeline.load_prepared(paths["prepared"], "val")
    test = pipeline.load_prepared(paths["prepared"], "test")
    per_seed, summaries = {}, {}
    for s in seeds:
        sd = study.seed_dir(out_dir, s)
        model, summ = study.learn_budget(vparams, train, val, study.seed_dir(paths["pretrain_models"], s)
                                         / "pvqae_pretrain.pt", sd, s)
        prior, psumm = study.learn_prior(model, train, val, vparams["prior"], sd / "prior.pt", s)
        _, per_seed[s] = study.evaluate_model(model, prior, test, vparams["evaluate"], desc=f"{variant['name']} {s}")
        summaries[f"seed{s}"] = {"budget": summ, "prior": {k: v for k, v in psumm.items() if k != "history"}}
    record.update(study.aggregate_seeds(list(per_seed.values())))
    record["per_seed"] = {f"seed{s}": r for s, r in per_seed.items()}
    record["training"] = summaries
    record["seconds"] = time.perf_counter() - t0
pipeline.write_json(record, out_dir / "metrics.json")
{k: record[k] for k in ("name", "same_as_main", "mean") if k in record}

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
params = None  # injected by `python -m pvqae run`: the params.yaml sections of this stage
paths = None  # injected: output paths (pvqae.stages.PATHS)
variant = None  # injected: {"name": "lambda_max-0.5", "overrides": {"budget.lambda_max": 0.5}}

# %%
from pvqae import stages
from pvqae.stages import variant as variant_stage

params = params or stages.stage_params("variant")
paths = dict(paths or stages.PATHS)
variant = variant or {"name": "lambda_max-0.5", "overrides": {"budget.lambda_max": 0.5}}
record = variant_stage.run(params, variant["name"], variant["overrides"], paths)
print(f"variant {variant['name']}: {variant['overrides']}; "
      f"{'same as the main run: reused' if record['same_as_main'] else 'trained'}")
{k: record[k] for k in ("name", "same_as_main", "mean") if k in record}

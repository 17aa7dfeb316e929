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
# # 10. Report
# Table I (every method that ran, per class, with a mean row; the paper's numbers in
# labelled columns with our delta), Tables II and III with the paper's means beside ours,
# generated claim checks, run times, and `reports/REPORT.md` embedding every table and
# figure. Reads only the outputs of the earlier stages.
# Outputs: `reports/REPORT.md`, `reports/tables/report/`.

# %% tags=["parameters"]
params = None  # injected: params.yaml sections of this stage
paths = None  # injected: output paths

# %%
import json
import platform

from IPython.display import Markdown, display

from pvqae import pipeline, report, study
from pvqae.config import PATHS, STAGES, stage_params
from pvqae.paths import repo_path

params = params or stage_params("report")
paths = paths or dict(PATHS)
seeds = study.training_seeds(params)
metrics_dir = repo_path(paths["metrics"])
report_path = repo_path(paths["report"])
report_dir = report_path.parent
tables = repo_path(paths["tables"]) / "report"
figs = repo_path(paths["figures"])


def load(name: str) -> dict:
    with open(metrics_dir / f"{name}.json") as f:
        return json.load(f)


ev, bl, ab = load("evaluate"), load("baselines"), load("ablations")
with open(repo_path(paths["prepared"]) / "manifest.json") as f:
    manifest = json.load(f)
classes, dataset = manifest["classes"], manifest["dataset"]

# %% [markdown]
# ## Table I

# %%
results = {"pvqae": ev["pvqae"], "static_vq": ev["static_vq"]}
for m in params["baselines"]["methods"]:
    results[m] = bl["results"].get(m) or bl["status"].get(m, "not run")
backbone = bl.get("backbone")
t1 = pipeline.write_table(report.table1_rows(classes, results, backbone), tables / "table1",
                          "Table I (ours): image AUROC / pixel AUROC / AUPRO per class (%)",
                          note=f"Training seeds {seeds}" + (": mean ± std." if len(seeds) > 1 else ".")
                          + " Every method's map gets the same post-processing (evaluate.score: Gaussian sigma "
                          f"{params['evaluate']['score']['smooth_sigma']} px at 256 px, scaled; image score = "
                          f"{params['evaluate']['score']['image_score']} of the map).")
prows = report.paper_rows(dataset, classes, results, backbone)
tp = pipeline.write_table(prows, tables / "table1_paper_vs_ours",
                          "Table I, paper vs ours: AUROC (%), delta = ours - paper (points)") if prows else None
display(Markdown(t1))
if tp:
    display(Markdown(tp))

# %% [markdown]
# ## Ablations with the paper's numbers, and the claims

# %%
sweep = {float(k): v for k, v in ab["lambda_max"].items()}
ablation_tables = repo_path(paths["tables"]) / "ablations"
tabs = {
    # no paper numbers for these two: the ablations stage's tables as they are
    "static_vs_pvqae": (ablation_tables / "static_vs_pvqae.md").read_text(),
    "table2": pipeline.write_table(report.ablation_rows("lambda schedule", ab["lambda_schedule"], "table2", dataset),
                                   tables / "table2_lambda_schedule", ""),
    "fig5": (ablation_tables / "fig5_lambda_max.md").read_text(),
    "table3": pipeline.write_table(report.ablation_rows("prior", ab["priors"], "table3", dataset),
                                   tables / "table3_priors", ""),
    "allocation": (repo_path(paths["tables"]) / "evaluate" / "code_allocation.md").read_text(),
}
orows = report.other_system_rows(dataset, results, backbone)
if orows:
    tabs["other_systems"] = pipeline.write_table(orows, tables / "other_systems", "")
texts = {
    "table1": report.claim_table1(results),
    "core": report.claim_core(results, classes),
    "floor": report.claim_floor(results, backbone),
    "table2": report.claim_schedule(ab["lambda_schedule"]),
    "fig5": report.claim_sweep(sweep, report.paper_numbers()["fig5"]["peak_lambda_max"]),
    "table3": report.claim_priors(ab["priors"]),
}
for t in texts.values():
    display(Markdown(t))

# %% [markdown]
# ## REPORT.md

# %%
fig_list = [
    ("Fig. 4: defect samples — image, ground truth, static-VQ and PVQAE score maps, routed and prior levels",
     figs / "qualitative" / "fig4_defect_maps.png"),
    ("Fig. 5: lambda_max sweep", figs / "ablations" / "fig5_lambda_max.png"),
    ("Code allocation per class: normal vs defective, routed vs prior", figs / "evaluate" / "code_allocation.png"),
    ("Level maps of normal test images per class (routed | prior)", figs / "qualitative" / "level_maps_per_class.png"),
    ("Table III as bars", figs / "ablations" / "table3_priors.png"),
    ("Table II as bars", figs / "ablations" / "table2_lambda_schedule.png"),
    ("Mean metrics, PVQAE vs static VQ", figs / "evaluate" / "mean_metrics.png"),
    ("Pre-training curves (first seed)", figs / "pretrain" / "training_curves.png"),
    ("Routing during budget learning (first seed)", figs / "budget" / "level_fractions.png"),
    ("Routed levels of held-out normal images after budget learning", figs / "budget" / "routed_levels.png"),
    ("Routed vs prior levels of held-out normal images", figs / "prior" / "routed_vs_prior.png"),
    ("Dataset samples with DWT entropy", figs / "prepare" / "samples.png"),
]
header = {
    "profile": params["profile"],
    "dataset": f"{dataset} ({manifest['root']}), classes {', '.join(classes)}",
    "images": ", ".join(f"{k} {v}" for k, v in manifest["counts"].items()) + f"; {manifest['image_size']} px",
    "training seeds": f"{seeds} (data seed {params['seed']})",
    "budget learning": f"lambda_max {params['budget']['lambda_max']}, {params['budget']['lambda_schedule']} schedule; "
                       f"prior mode {params['prior']['mode']}",
    "machine": f"{platform.platform()}, {pipeline.machine_info()['cpu_count']} CPUs",
}
times = report.run_time_rows(repo_path(paths["executed"]), repo_path(paths["variants"]),
                             [s for s in STAGES if s not in ("variant", "report")])
md = report.build_report(header=header, times=times, table1_md=t1, paper_md=tp, texts=texts, tables_md=tabs,
                         figures=[report.figure_md(t, p, report_dir) for t, p in fig_list])
report_path.write_text(md)
print(f"wrote {report_path} ({len(md.splitlines())} lines)")
Markdown(md)

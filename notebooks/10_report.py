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
params = None  # injected by `python -m pvqae run`: the params.yaml sections of this stage
paths = None  # injected: output paths (pvqae.stages.PATHS)

# %%
from IPython.display import Markdown, display

from pvqae import stages
from pvqae.stages import report

cfg, paths = stages.configure("report", params, paths)
res = report.run(cfg, paths)
display(Markdown(res["table1"]))
if res["paper"]:
    display(Markdown(res["paper"]))
for t in res["texts"].values():
    display(Markdown(t))
print(f"wrote {stages.out_path(paths, 'report')} ({len(res['report'].splitlines())} lines)")

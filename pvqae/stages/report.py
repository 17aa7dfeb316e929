"""Stage ``report``: Table I (every method that ran, per class, mean row; the paper's numbers
in labelled columns), Tables II-III beside the paper's means, generated claim checks, run
times and ``reports/REPORT.md`` embedding every table and figure (:mod:`pvqae.report`).
Reads only the outputs of the earlier stages."""

from __future__ import annotations

import json
import platform

from pvqae import report
from pvqae.backbones import backbone_label
from pvqae.features import read_manifest
from pvqae.records import machine_info, write_table
from pvqae.settings import Params
from pvqae.stages import ORDER, PATHS, Stage, out_path

BENCHMARKS = "reports/benchmarks"  # committed benchmark records; the scaling study's go into the report
_FIGURE_STAGES = ("prepare", "pretrain", "budget", "prior", "evaluate", "ablations", "qualitative")
_EXECUTED = ("prepare", "features", "pretrain", "budget", "prior", "evaluate", "baselines", "ablations", "figures")
STAGE = Stage("report", "10_report.py",
              params=("seed", "seeds", "data", "budget", "prior", "evaluate", "ablations", "baselines"),
              deps=("pvqae/report.py", "pvqae/paper_numbers.yaml", "pvqae/features.py", PATHS["prepared"],
                    PATHS["features"], PATHS["metrics"],
                    f"{PATHS['tables']}/evaluate", f"{PATHS['tables']}/ablations",
                    *(f"{PATHS['figures']}/{s}" for s in _FIGURE_STAGES),
                    *(f"{PATHS['executed']}/{s}.ipynb" for s in _EXECUTED), PATHS["variants"], "pvqae/backbones",
                    "pvqae/plots.py", BENCHMARKS),
              outs=(PATHS["report"], f"{PATHS['tables']}/report", f"{PATHS['figures']}/report"))

FIGURES = (
    ("Fig. 4: defect samples — image, ground truth, static-VQ and PVQAE score maps, routed and prior levels",
     "qualitative/fig4_defect_maps.png"),
    ("Fig. 5: lambda_max sweep", "ablations/fig5_lambda_max.png"),
    ("Detection vs codes per image: same-network static VQ at each level and PVQAE's lambda_max sweep",
     "ablations/same_network_tradeoff.png"),
    ("Code allocation per class: normal vs defective, routed vs prior", "evaluate/code_allocation.png"),
    ("Level maps of normal test images per class (routed | prior)", "qualitative/level_maps_per_class.png"),
    ("Table III as bars", "ablations/table3_priors.png"),
    ("Table II as bars", "ablations/table2_lambda_schedule.png"),
    ("Mean metrics, PVQAE vs static VQ", "evaluate/mean_metrics.png"),
    ("Pre-training curves (first seed)", "pretrain/training_curves.png"),
    ("Routing during budget learning (first seed)", "budget/level_fractions.png"),
    ("Routed levels of held-out normal images after budget learning", "budget/routed_levels.png"),
    ("Routed vs prior levels of held-out normal images", "prior/routed_vs_prior.png"),
    ("Dataset samples with DWT entropy", "prepare/samples.png"),
)


def scaling_sections(fig_dir, report_dir) -> list[str]:
    """A section per committed scaling study (``reports/benchmarks/scaling_*.json``, issue
    15): its figure, drawn here, and its generated sentence."""
    from pvqae.paths import repo_path
    from pvqae.plots import save_fig, scaling_figure

    out = []
    fig_dir.mkdir(parents=True, exist_ok=True)  # a DVC out, also when no scaling study is committed
    for path in sorted(repo_path(BENCHMARKS).glob("scaling_*.json")):
        rec = json.loads(path.read_text())
        full = repo_path(BENCHMARKS) / f"accuracy_{rec['dataset']}_{rec['profile']}.json"
        full_run = json.loads(full.read_text()) if full.is_file() else None
        png = save_fig(scaling_figure(rec, full_run), fig_dir / path.stem)[0]
        out.append(f"### {path.name}\n\n{report.claim_scaling(rec, full_run)}\n\n"
                   + report.figure_md(f"Scaling with compute ({rec['dataset']})", png, report_dir))
    return out


def run(cfg: Params, paths: dict = PATHS, progress: bool = True) -> dict:
    """Write the report's tables and REPORT.md; return the markdown pieces (``table1``,
    ``paper``, ``texts``, ``report``)."""
    seeds = list(cfg.seeds)
    metrics_dir = out_path(paths, "metrics")
    report_path = out_path(paths, "report")
    tables = out_path(paths, "tables") / "report"
    figs = out_path(paths, "figures")

    def load(name: str) -> dict:
        with open(metrics_dir / f"{name}.json") as f:
            return json.load(f)

    ev, bl, ab = load("evaluate"), load("baselines"), load("ablations")
    with open(out_path(paths, "prepared") / "manifest.json") as f:
        manifest = json.load(f)
    classes, dataset = manifest["classes"], manifest["dataset"]

    inp = read_manifest(out_path(paths, "features"))
    input_label = f"{backbone_label(inp['backbone'])} features" if inp["kind"] == "features" else None
    results = {m: {**ev[m], "input_label": input_label} if input_label else ev[m] for m in ("pvqae", "static_vq")}
    if not cfg.evaluate.score.is_paper:  # a variant's rows never read as the paper's score
        results["pvqae"] = {**results["pvqae"], "score_label": cfg.evaluate.score.label()}
    for m in cfg.baselines.methods:
        results[m] = bl["results"].get(m) or bl["status"].get(m, "not run")
    backbone = bl.get("backbone")
    score = cfg.evaluate.score
    t1 = write_table(report.table1_rows(classes, results, backbone), tables / "table1",
                     "Table I (ours): image AUROC / pixel AUROC / AUPRO per class (%)",
                     note=f"Training seeds {seeds}" + (": mean ± std." if len(seeds) > 1 else ".")
                     + " Every method's map gets the same post-processing (evaluate.score: Gaussian sigma "
                     f"{score.smooth_sigma} px at 256 px, scaled; image score = {score.image_score} of the map).")
    prows = report.paper_rows(dataset, classes, results, backbone)
    tp = write_table(prows, tables / "table1_paper_vs_ours",
                     "Table I, paper vs ours: AUROC (%), delta = ours - paper (points)") if prows else None

    sweep = {float(k): v for k, v in ab["lambda_max"].items()}
    ablation_tables = out_path(paths, "tables") / "ablations"
    tabs = {
        # no paper numbers for these two: the ablations stage's tables as they are
        "static_vs_pvqae": (ablation_tables / "static_vs_pvqae.md").read_text(),
        "same_network": (ablation_tables / "same_network_static.md").read_text(),
        "table2": write_table(report.ablation_rows("lambda schedule", ab["lambda_schedule"], "table2", dataset),
                              tables / "table2_lambda_schedule", ""),
        "fig5": (ablation_tables / "fig5_lambda_max.md").read_text(),
        "table3": write_table(report.ablation_rows("prior", ab["priors"], "table3", dataset),
                              tables / "table3_priors", ""),
        "allocation": (out_path(paths, "tables") / "evaluate" / "code_allocation.md").read_text(),
    }
    variants_md = out_path(paths, "tables") / "evaluate" / "score_variants.md"
    if variants_md.is_file():
        tabs["variants"] = variants_md.read_text()
    orows = report.other_system_rows(dataset, results, backbone)
    if orows:
        tabs["other_systems"] = write_table(orows, tables / "other_systems", "")
    texts = {
        "table1": report.claim_table1(results),
        "core": report.claim_core(results, classes),
        "floor": report.claim_floor(results, backbone),
        "table2": report.claim_schedule(ab["lambda_schedule"]),
        "fig5": report.claim_sweep(sweep, report.paper_numbers()["fig5"]["peak_lambda_max"]),
        "table3": report.claim_priors(ab["priors"]),
        "same_network": report.claim_same_network(ab["same_network_static"], sweep, cfg.budget.lambda_max),
        "variants": report.claim_variants(load("score_variants")),
    }
    header = {
        "profile": cfg.profile,
        "dataset": f"{dataset} ({manifest['root']}), classes {', '.join(classes)}",
        "images": ", ".join(f"{k} {v}" for k, v in manifest["counts"].items()) + f"; {manifest['image_size']} px",
        "input": ("pixels (the paper's VQ-GAN)" if not input_label else
                  f"{input_label}, strides {inp['strides']}, {inp['grid']} x {inp['grid']} grid (PVQAE-F: an extension "
                  "of the paper, not its reproduction)"),
        "score": ("CE x S_rec (the paper's product)" if cfg.evaluate.score.is_paper else
                  f"{cfg.evaluate.score.label()} (evaluate.score.combine / prior_smoothing: a variant, "
                  "not the paper's product)"),
        "training seeds": f"{seeds} (data seed {cfg.seed})",
        "budget learning": f"lambda_max {cfg.budget.lambda_max}, {cfg.budget.lambda_schedule} schedule; "
                           f"prior mode {cfg.prior.mode}",
        "machine": f"{platform.platform()}, {machine_info()['cpu_count']} CPUs",
    }
    times = report.run_time_rows(out_path(paths, "executed"), out_path(paths, "variants"),
                                 [s for s in ORDER if s not in ("variant", "report")])
    md = report.build_report(header=header, times=times, table1_md=t1, paper_md=tp, texts=texts, tables_md=tabs,
                             figures=[report.figure_md(t, figs / p, report_path.parent) for t, p in FIGURES],
                             benchmarks=scaling_sections(figs / "report", report_path.parent))
    report_path.write_text(md)
    return {"table1": t1, "paper": tp, "texts": texts, "report": md}

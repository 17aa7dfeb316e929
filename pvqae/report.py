"""The study's report: Table I (ours, and paper vs ours), the claims check, ``REPORT.md``.

Every number here is read from the run's outputs (``reports/metrics/*.json``, the executed
notebooks' run times, the prepared data's manifest). The paper's numbers come only from
``pvqae/paper_numbers.yaml`` (transcribed from Sec. IV) and appear only in columns labelled
"paper", next to ours, with our delta. The text on whether a claim holds is generated
from the numbers by fixed rules (:func:`claims`), not written by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from pvqae.baselines import NEEDS_BACKBONE
from pvqae.records import pm

PAPER_FILE = Path(__file__).with_name("paper_numbers.yaml")

# our method key -> (label, key in paper_numbers.yaml)
METHODS: dict[str, tuple[str, str]] = {
    "pvqae": ("PVQAE", "pvqae"),
    "static_vq": ("static VQ (VQ-E style)", "vq_e"),
    "median_filter": ("median-filter residual (floor)", "median_filter"),
    "ae_ssim": ("AE-SSIM", "ae_ssim"),
    "patchcore": ("PatchCore", "patchcore"),
    "padim": ("PaDiM", "padim"),
    "patch_ae": ("Patch AE", "patch_ae"),
    "vq_flow": ("VQ-Flow", "vq_flow"),
}
PAPER_BACKBONE = "WRN50"  # what the paper's memory-based rows stood on
FLOOR = "median_filter"
# which paper table rows a dataset of ours can be compared with
PAPER_DATASETS = {"mvtec": "mvtec", "btad": "btad", "mtsd": "mtsd"}


def method_label(method: str, backbone: str | None = None, result: dict | str | None = None) -> str:
    """Column / row label of a method; methods on a pretrained backbone name it
    ("PatchCore (EfficientNet-Lite0)"); PVQAE and the static VQ on a backbone's features
    (their ``result`` carries ``input_label``) are "PVQAE-F (EfficientNet-Lite0 features)"; PVQAE
    scored other than by the paper's product (``score_label``) says so: "PVQAE [score: rec]"."""
    from pvqae.backbones import backbone_label

    label = METHODS.get(method, (method, method))[0]
    feats = result.get("input_label") if isinstance(result, dict) else None
    score = result.get("score_label") if isinstance(result, dict) else None
    if method in ("pvqae", "static_vq"):
        if feats:
            label = {"pvqae": "PVQAE-F", "static_vq": "static VQ-F"}[method] + f" ({feats})"
        if score and method == "pvqae":  # a score other than the paper's product is named in the row
            label += f" [score: {score}]"
        return label
    return f"{label} ({backbone_label(backbone)})" if backbone and method in NEEDS_BACKBONE else label


def paper_numbers() -> dict:
    with open(PAPER_FILE) as f:
        return yaml.safe_load(f)


def paper_table1(dataset: str) -> dict:
    """``{class: {paper method: [image, pixel]}}`` for a dataset kind, {} when the paper has no row."""
    key = PAPER_DATASETS.get(dataset)
    return paper_numbers()["table1"].get(key, {}) if key else {}


def _cell(r: dict, cls: str | None) -> str:
    """``image / pixel / AUPRO`` (mean ± std over seeds) of a class, or of the class mean."""
    mean = r["mean"] if cls is None else r["per_class"].get(cls, {})
    std = r.get("std", {}) if cls is None else r.get("per_class_std", {}).get(cls, {})
    n = r.get("n_seeds", 1)
    return " / ".join(pm(mean.get(k), std.get(k), n) for k in ("image_auroc", "pixel_auroc", "aupro"))


def table1_rows(classes: list[str], results: dict[str, dict | str], backbone: str | None = None) -> list[dict]:
    """Table I (ours): one row per class and a mean row; one column per method holding
    ``image / pixel AUROC / AUPRO``; a method that did not run shows why (e.g.
    "not run: no pretrained weights"). Methods on ``backbone`` name it in their header."""
    rows = []
    for cls in list(classes) + [None]:
        row = {"class": cls if cls is not None else "mean"}
        for m, r in results.items():
            row[method_label(m, backbone, r)] = r if isinstance(r, str) else _cell(r, cls)
        rows.append(row)
    return rows


def paper_rows(dataset: str, classes: list[str], results: dict[str, dict | str],
               backbone: str | None = None) -> list[dict]:
    """Paper vs ours for every (class, method) the paper reports: image and pixel AUROC,
    ours, paper and delta (ours - paper, points); plus a mean row per method over the
    classes both have. Empty when the paper has no numbers for this dataset. The
    ``paper backbone`` column says what the paper's memory-based rows stood on (WRN50)."""
    paper = paper_table1(dataset)
    rows = []
    for m, r in results.items():
        label, pkey = method_label(m, backbone, r), METHODS.get(m, (m, m))[1]
        pairs = []
        for cls in classes:
            p = paper.get(cls, {}).get(pkey)
            if p is None:
                continue
            ours = (None, None) if isinstance(r, str) else (r["per_class"].get(cls, {}).get("image_auroc"),
                                                            r["per_class"].get(cls, {}).get("pixel_auroc"))
            pairs.append((cls, ours, p))
        for cls, ours, p in pairs + ([("mean", _mean_pair([o for _, o, _ in pairs]),
                                       list(np.mean([q for _, _, q in pairs], 0)))] if len(pairs) > 1 else []):
            row = {"class": cls, "method": label, "paper backbone": PAPER_BACKBONE if m in NEEDS_BACKBONE else "-"}
            for j, k in enumerate(("image", "pixel")):
                o = ours[j]
                row[f"{k} ours"] = "not run" if isinstance(r, str) else (
                    f"{100 * o:.1f}" if o is not None and np.isfinite(o) else "n/a")
                row[f"{k} paper"] = f"{p[j]:.1f}"
                row[f"{k} delta"] = f"{100 * o - p[j]:+.1f}" if (o is not None and not isinstance(r, str)
                                                                  and np.isfinite(o)) else "n/a"
            rows.append(row)
    return rows


def other_system_rows(dataset: str, results: dict[str, dict | str], backbone: str | None = None) -> list[dict]:
    """The study's two other systems (documents 001, 002): each one's own headline number (MVTec
    AD mean, labelled *paper*) beside ours on this run's data, with what differs. A delta is
    given only when this run is the whole MVTec AD."""
    from pvqae.backbones import backbone_label

    rows = []
    for m, p in paper_numbers().get("other_systems", {}).items():
        if m not in results:
            continue
        r = results[m]
        row = {"method": method_label(m, backbone), "document": p["document"]}
        for j, k in enumerate(("image", "pixel")):
            ours = None if isinstance(r, str) else r["mean"].get(f"{k}_auroc")
            row[f"{k} ours (this data)"] = "not run" if ours is None else f"{100 * ours:.1f}"
            row[f"{k} paper (MVTec AD mean)"] = "n/a" if p["mvtec_mean"][j] is None else f"{p['mvtec_mean'][j]:.1f}"
        row["what differs"] = (f"ours: {backbone_label(backbone) if backbone else 'no backbone'}, this study's "
                               f"size and steps, dataset {dataset}; paper: {p['setup']}")
        rows.append(row)
    return rows


def _mean_pair(pairs: list[tuple]) -> tuple:
    if not pairs or any(v is None for p in pairs for v in p):
        return (None, None)
    return tuple(float(np.mean([p[j] for p in pairs])) for j in range(2))


# ----------------------------------------------------------------------------- claims

def _verdict(holds: bool, diff: float, spread: float, n_seeds: int) -> str:
    word = "holds" if holds else "does not hold"
    if n_seeds <= 1:
        return f"{word} in this run (one training seed: no spread estimate)"
    if abs(diff) <= spread:
        return f"{word} in this run, but the difference ({100 * diff:+.1f} points) is within one std over seeds"
    return f"{word} in this run (difference {100 * diff:+.1f} points, beyond one std over seeds)"


def _ordering(results: dict[str, dict], metric: str = "image_auroc") -> list[str]:
    """Keys by decreasing metric; NaN (undefined) last."""
    return sorted(results, key=lambda k: -np.nan_to_num(results[k]["mean"][metric], nan=-np.inf))


def _ranked(results: dict[str, dict], order: list[str], metric: str = "image_auroc") -> str:
    """``order`` written as a ranking: ``a > b = c`` (``=`` where the means are equal, as when
    every model routes the same way)."""
    out = order[:1]
    for a, b in zip(order, order[1:]):
        out.append(("= " if np.isclose(results[a]["mean"][metric], results[b]["mean"][metric], rtol=0, atol=1e-9)
                    else "> ") + b)
    return " ".join(out)


def claim_core(results: dict[str, dict | str], classes: list[str]) -> str:
    """Paper: PVQAE beats the static-VQ baseline (VQ-E) on every object (Sec. IV-B1)."""
    pv, st = results.get("pvqae"), results.get("static_vq")
    if not isinstance(pv, dict) or not isinstance(st, dict):
        return "Core claim not testable: PVQAE or the static-VQ baseline did not run."
    parts = []
    for k, name in (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC")):
        d = pv["mean"][k] - st["mean"][k]
        spread = max(pv.get("std", {}).get(k, 0.0), st.get("std", {}).get(k, 0.0))
        parts.append(f"mean {name}: PVQAE {100 * pv['mean'][k]:.1f} vs static VQ {100 * st['mean'][k]:.1f}; the "
                     f"claim {_verdict(d > 0, d, spread, pv.get('n_seeds', 1))}")
    wins = sum(pv["per_class"][c]["image_auroc"] > st["per_class"][c]["image_auroc"] for c in classes
               if c in pv["per_class"] and c in st["per_class"])
    return ("**PVQAE vs static VQ** (paper: PVQAE beats the standard-VQ VQ-E on every object). "
            + "; ".join(parts) + f". PVQAE has the higher image AUROC on {wins} of {len(classes)} classes.")


def claim_floor(results: dict[str, dict | str], backbone: str | None = None) -> str:
    """Each method's margin over the untrained median-filter residual (image / pixel AUROC
    points): a method at or below the floor has not shown it learned the normal appearance."""
    floor = results.get(FLOOR)
    if not isinstance(floor, dict):
        return "**Floor**: the median-filter residual did not run, so no margins over it."
    f = floor["mean"]
    parts = []
    for m, r in results.items():
        if m == FLOOR or not isinstance(r, dict):
            continue
        di, dp = (r["mean"][k] - f[k] for k in ("image_auroc", "pixel_auroc"))
        parts.append(f"{method_label(m, backbone)} {100 * di:+.1f} / {100 * dp:+.1f}")
    below = [method_label(m, backbone) for m, r in results.items() if m != FLOOR and isinstance(r, dict)
             and r["mean"]["image_auroc"] <= f["image_auroc"]]
    return (f"**Margin over the floor** (the median-filter residual, no training: {100 * f['image_auroc']:.1f} / "
            f"{100 * f['pixel_auroc']:.1f} image / pixel AUROC), in points: " + "; ".join(parts) + "."
            + (f" At or below the floor by image AUROC: {', '.join(below)}." if below else ""))


def claim_table1(results: dict[str, dict | str]) -> str:
    ran = {m: r for m, r in results.items() if isinstance(r, dict)}
    skipped = {m: r for m, r in results.items() if isinstance(r, str)}
    order = _ordering(ran)
    rank = order.index("pvqae") + 1 if "pvqae" in order else None
    text = ("**Table I** (paper: PVQAE is competitive with every baseline). By mean image AUROC the methods that ran "
            "rank: " + ", ".join(f"{METHODS.get(m, (m,))[0]} {100 * ran[m]['mean']['image_auroc']:.1f}" for m in order)
            + (f"; PVQAE is #{rank} of {len(order)}." if rank else "."))
    if skipped:
        text += " Not run: " + "; ".join(f"{METHODS.get(m, (m,))[0]} ({why})" for m, why in skipped.items()) + "."
    return text


def claim_schedule(schedules: dict[str, dict]) -> str:
    """Paper Table II: linear > cosine > constant."""
    if "linear" not in schedules or len(schedules) < 2:
        return "**Table II**: not testable (needs the linear schedule and another one)."
    order = _ordering(schedules)
    best_other = max((k for k in schedules if k != "linear"), key=lambda k: schedules[k]["mean"]["image_auroc"])
    d = schedules["linear"]["mean"]["image_auroc"] - schedules[best_other]["mean"]["image_auroc"]
    spread = max(schedules["linear"].get("std", {}).get("image_auroc", 0), schedules[best_other].get("std", {})
                 .get("image_auroc", 0))
    return (f"**Table II** (paper: the linear lambda schedule is best, then cosine, then constant). Ours by mean "
            f"image AUROC: {_ranked(schedules, order)}; linear vs the best other ({best_other}): the claim "
            f"{_verdict(d > 0, d, spread, schedules['linear'].get('n_seeds', 1))}.")


def claim_sweep(sweep: dict[float, dict], peak: float = 1.25) -> str:
    """Paper Fig. 5: detection improves with lambda_max up to about 1.25, then declines."""
    if len(sweep) < 2:
        return "**Fig. 5**: not testable (fewer than two lambda_max values)."
    xs = sorted(sweep)
    best = max(xs, key=lambda x: sweep[x]["mean"]["image_auroc"])
    step = min(np.diff(xs)) if len(xs) > 1 else 0.25
    holds = abs(best - peak) <= max(0.25, step / 2 + 1e-9)
    n = sweep[best].get("n_seeds", 1)
    runner_up = max((x for x in xs if x != best), key=lambda x: sweep[x]["mean"]["image_auroc"])
    gap = sweep[best]["mean"]["image_auroc"] - sweep[runner_up]["mean"]["image_auroc"]
    spread = max(sweep[best].get("std", {}).get("image_auroc", 0), sweep[runner_up].get("std", {}).get("image_auroc", 0))
    notes = (["one training seed: no spread estimate"] if n <= 1 else
             [f"the lead over {runner_up:g}, {100 * gap:.1f} points, is within one std over seeds"] if gap <= spread
             else [])
    if len(xs) < 9:
        notes.append("a thinned sweep: the profile sets ablations.lambda_max")
    caveat = f" ({'; '.join(notes)})" if notes else ""
    return (f"**Fig. 5** (paper: image and pixel AUROC peak around lambda_max = {peak}). Swept {', '.join(f'{x:g}' for x in xs)}; "
            f"our image AUROC peaks at {best:g} ({100 * sweep[best]['mean']['image_auroc']:.1f}): the claim "
            f"{'holds' if holds else 'does not hold'} at this resolution of the sweep{caveat}.")


def claim_priors(priors: dict[str, dict]) -> str:
    """Paper Table III: per-class > universal > none."""
    want = [m for m in ("per-class", "universal", "none") if m in priors]
    if len(want) < 2:
        return "**Table III**: not testable (fewer than two prior modes)."
    order = _ordering({m: priors[m] for m in want})
    means = [priors[m]["mean"]["image_auroc"] for m in want]
    holds = order == want and all(a > b + 1e-9 for a, b in zip(means, means[1:]))  # strictly: ties do not hold
    d = priors[want[0]]["mean"]["image_auroc"] - priors[want[1]]["mean"]["image_auroc"]
    spread = max(priors[want[0]].get("std", {}).get("image_auroc", 0), priors[want[1]].get("std", {})
                 .get("image_auroc", 0))
    return (f"**Table III** (paper: per-class prior > universal prior > no prior). Ours by mean image AUROC: "
            f"{_ranked(priors, order)}; the full ordering {_verdict(holds, d, spread, priors[want[0]].get('n_seeds', 1))}.")


# ----------------------------------------------------------------------------- run times

def notebook_seconds(path: Path) -> float | None:
    """Wall time papermill recorded for an executed notebook."""
    try:
        with open(path) as f:
            return float(json.load(f)["metadata"]["papermill"]["duration"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def run_time_rows(executed_dir: Path, variants_dir: Path, stages: list[str]) -> list[dict]:
    rows = []
    for st in stages:
        s = notebook_seconds(Path(executed_dir) / f"{st}.ipynb")
        if s is not None:
            rows.append({"stage": st, "seconds": round(s, 1)})
    for nb in sorted(Path(variants_dir).glob("*/executed.ipynb")):
        s = notebook_seconds(nb)
        if s is not None:
            rows.append({"stage": f"variant {nb.parent.name}", "seconds": round(s, 1)})
    if rows:
        rows.append({"stage": "total (stages above)", "seconds": round(sum(r["seconds"] for r in rows), 1)})
    return rows


# ----------------------------------------------------------------------------- REPORT.md

def figure_md(title: str, png: Path, report_dir: Path) -> str:
    """Markdown image link relative to the report (PNG shown; the PDF lies beside it)."""
    png = Path(png)
    if not png.exists():
        return f"*{title}: figure missing ({png})*"
    rel = png.relative_to(report_dir)
    return f"**{title}** (`{rel}`, PDF: `{rel.with_suffix('.pdf')}`)\n\n![{title}]({rel})"


def build_report(*, header: dict, times: list[dict], table1_md: str, paper_md: str | None,
                 texts: dict[str, str], tables_md: dict[str, str], figures: list[str],
                 benchmarks: list[str] | None = None) -> str:
    """Assemble REPORT.md from rendered tables, generated claim texts and figure links."""
    out = ["# PVQAE study report", "",
           "Generated by the `report` stage (`notebooks/10_report.py`) from this run's outputs; no number in it "
           "is typed by hand. Paper numbers (`pvqae/paper_numbers.yaml`, from Sec. IV of the paper) appear only "
           "in columns labelled *paper*, with our delta (ours - paper, points). Metrics are in %: image AUROC, "
           "pixel AUROC, AUPRO (FPR <= 0.3); with several training seeds, mean ± std over seeds.", ""]
    out += ["## Run", ""] + [f"- **{k}**: {v}" for k, v in header.items()] + [""]
    if times:
        out += ["### Run times (papermill, per executed notebook)", "",
                "| stage | seconds |", "|---|---|"] + [f"| {r['stage']} | {r['seconds']} |" for r in times] + [""]
    out += ["## Table I: defect detection per class", "", table1_md, "", texts["table1"], "", texts["core"], ""]
    if "floor" in texts:
        out += [texts["floor"], ""]
    out += ["### Paper vs ours", "", paper_md if paper_md else
            "The paper reports no numbers for this dataset (e.g. the synthetic default): no paper columns.", ""]
    if tables_md.get("other_systems"):
        out += ["### The study's other systems: their own headline numbers (paper) beside ours", "",
                tables_md["other_systems"], ""]
    for key, title in (("static_vs_pvqae", "Core claim: static VQ vs PVQAE"),
                       ("same_network", "Core claim, fair ablation: same-network static VQ vs PVQAE"),
                       ("table2", "Table II: lambda schedule"),
                       ("fig5", "Fig. 5: lambda_max sweep"), ("table3", "Table III: normal budget priors"),
                       ("allocation", "Code allocation: normal vs defective, routed vs prior"),
                       ("variants", "Score variants (diagnostic; selected on the label-free validation split)")):
        if key in tables_md:
            out += [f"## {title}", "", tables_md[key], ""]
            if key in texts:
                out += [texts[key], ""]
    out += ["## Figures", ""] + [f + "\n" for f in figures]
    if benchmarks:
        out += ["## Benchmarks beside this run: scaling with compute", "",
                "Committed records of `reports/benchmarks/` (their own runs and data, not this run's).", ""]
        out += [b + "\n" for b in benchmarks]
    return "\n".join(out).rstrip() + "\n"


def ablation_rows(key: str, results: dict, paper_table: str | None = None, dataset: str | None = None) -> list[dict]:
    """Ablation table rows: ours (mean ± std over seeds); with ``paper_table`` ("table2",
    "table3") the paper's MVTec AD means beside them, and the delta only when our dataset is
    MVTec AD (else it compares different data)."""
    paper = paper_numbers().get(paper_table, {}) if paper_table else {}
    rows = []
    for name, r in results.items():
        row = {key: METHODS[name][0] if key == "method" and name in METHODS else name}
        for j, k in enumerate(("image_auroc", "pixel_auroc")):
            short = k.split("_")[0]
            row[f"{short} ours"] = pm(r["mean"][k], r.get("std", {}).get(k), r.get("n_seeds", 1))
            if paper:
                p = paper.get(str(name))
                row[f"{short} paper (MVTec AD)"] = f"{p[j]:.1f}" if p else "n/a"
                if dataset == "mvtec":
                    row[f"{short} delta"] = f"{100 * r['mean'][k] - p[j]:+.1f}" if p else "n/a"
        row["AUPRO ours"] = pm(r["mean"]["aupro"], r.get("std", {}).get("aupro"), r.get("n_seeds", 1))
        rows.append(row)
    return rows


def claim_scaling(record: dict, full_run: dict | None = None) -> str:
    """The scaling study's sentence (issue 15), by fixed rules from its log-linear fits."""
    fit = record.get("fit") or {}
    sched = sorted((r for r in record["rows"] if r["series"] == "schedule"), key=lambda r: r["fraction"])
    if len(sched) < 2:
        return "Scaling: fewer than two schedule fractions measured; no fit."
    lo, hi = sched[0]["fraction"], sched[-1]["fraction"]
    parts = [f"**Scaling ({record['dataset']}, {record['profile']} profile, one seed).** Over {lo:g} to {hi:g} of "
             "the training schedule,"]
    target = (record.get("targets") or {}).get("paper_pvqae_image_auroc")
    for m, name in (("pvqae", "PVQAE"), ("static_vq", "the static VQ")):
        f = fit.get(m, {})
        b = (f.get("fit_vs_fraction") or {}).get("b_per_decade")
        if b is None:
            continue
        s = f"{name}'s image AUROC changes by {100 * b:+.1f} points per tenfold training"
        frac = (f.get("fraction_to_reach") or {}).get("paper_pvqae_image_auroc")
        hours = (f.get("hours_to_reach") or {}).get("paper_pvqae_image_auroc")
        if target is not None:
            s += (f"; the fit reaches the paper's {100 * target:.1f} only at {frac:.3g} x the schedule "
                  f"(about {hours:.3g} hours of this machine)" if frac is not None and hours is not None else
                  f"; on this trend more training does not reach the paper's {100 * target:.1f}")
        parts.append(s + ";")
    if full_run and all((fit.get(m) or {}).get("fit_vs_fraction") for m in ("pvqae", "static_vq")):
        pred = [100 * fit[m]["fit_vs_fraction"]["a"] for m in ("pvqae", "static_vq")]
        meas = [100 * full_run[m]["mean"]["image_auroc"] for m in ("pvqae", "static_vq")]
        parts.append(f"at the whole schedule the fits predict {pred[0]:.1f} (PVQAE) and {pred[1]:.1f} (static VQ), where "
                     f"an earlier whole-schedule run measured {meas[0]:.1f} and {meas[1]:.1f}.")
    size = [r for r in record["rows"] if r["series"] == "size"]
    ref = next((r for r in sched if r["fraction"] == record.get("reference_fraction")), None)
    if size and ref:
        cells = ", ".join(f"{r['image_size']} px ch {r['ch']}: {100 * r['pvqae']['mean']['image_auroc']:.1f} / "
                          f"{100 * r['static_vq']['mean']['image_auroc']:.1f}" for r in [ref] + size)
        parts.append(f"At one training wall time (PVQAE / static VQ image AUROC): {cells}.")
    parts.append("Fits are extrapolations, not measurements.")
    return " ".join(parts)


def tradeoff_rows(results: dict[str, dict]) -> list[dict]:
    """Rows of the detection vs codes-per-image table (same-network static levels, lambda_max sweep)."""
    rows = []
    for name, r in results.items():
        n = r.get("n_seeds", 1)
        rows.append({"model": name, "codes / image": f"{r['codes_per_image']:.0f}" if r.get("codes_per_image") else "n/a",
                     **{lab: pm(r["mean"][k], r.get("std", {}).get(k), n) for lab, k in
                        (("image AUROC", "image_auroc"), ("pixel AUROC", "pixel_auroc"), ("AUPRO", "aupro"))}})
    return rows


def claim_same_network(statics: dict[str, dict], sweep: dict[float, dict], main: float) -> str:
    """The core claim against the fair ablation: does PVQAE at the run's lambda_max (``main``,
    fixed before the run) beat the best same-network static level that uses at least as many
    codes, by more than the seed spread? The rest of the sweep is reported beside it, not
    selected from (picking its best on test would be test-set selection)."""
    if not statics or not sweep:
        return "Same-network static VQ: not run."
    if main not in sweep:
        return (f"Same-network static VQ: no verdict; the run's lambda_max {main:g} is not one of the sweep's "
                f"({', '.join(f'{k:g}' for k in sorted(sweep))}); add it to ablations.lambda_max.")
    r = sweep[main]
    codes = r.get("codes_per_image")
    rivals = [(k, s) for k, s in statics.items() if codes is not None and s.get("codes_per_image") is not None
              and s["codes_per_image"] >= codes]
    lo, hi = (min(v["mean"]["image_auroc"] for v in sweep.values()), max(v["mean"]["image_auroc"] for v in sweep.values()))
    span = (f" Across the lambda_max sweep ({', '.join(f'{k:g}' for k in sorted(sweep))}) PVQAE's image AUROC spans "
            f"{100 * lo:.1f}-{100 * hi:.1f} with {min(v.get('codes_per_image') or 0 for v in sweep.values()):.0f}-"
            f"{max(v.get('codes_per_image') or 0 for v in sweep.values()):.0f} codes per image (reported, not selected).")
    if not rivals:
        return (f"Same-network static VQ: PVQAE at lambda_max {main:g} uses {codes:.0f} codes per image, more than every "
                f"static level; no comparison at equal or fewer codes." + span)
    k, st = max(rivals, key=lambda kv: kv[1]["mean"]["image_auroc"])
    diff = r["mean"]["image_auroc"] - st["mean"]["image_auroc"]
    spread = max(r.get("std", {}).get("image_auroc", 0.0), st.get("std", {}).get("image_auroc", 0.0))
    verdict = _verdict(diff > 0, diff, spread, min(r.get("n_seeds", 1), st.get("n_seeds", 1)))
    return (f"**Core claim, fair ablation** (same network, same pre-training and steps): PVQAE at the run's lambda_max "
            f"{main:g} ({codes:.0f} codes / image) against the best static level with at least as many codes, static "
            f"{k} ({st['codes_per_image']:.0f}): {100 * diff:+.1f} image AUROC points; {verdict}." + span)


def score_variant_rows(rec: dict) -> list[dict]:
    """Rows of the score-variant diagnostic table: validation and test AUROCs per variant."""
    rows = []
    for k, desc in rec["descriptions"].items():
        row = {"score": k + (" (paper)" if k == "product" else ""), "what": desc}
        for sp in ("validation", "test"):
            r = rec[sp][k]
            n = r.get("n_seeds", 1)
            row[f"{sp} image AUROC"] = pm(r["mean"]["image_auroc"], r["std"]["image_auroc"], n)
            row[f"{sp} pixel AUROC"] = pm(r["mean"]["pixel_auroc"], r["std"]["pixel_auroc"], n)
        row["chosen on validation"] = "yes" if k == rec["chosen_on_validation"] else ""
        rows.append(row)
    return rows


def claim_variants(rec: dict) -> str:
    """The score-variant sentence: which variant the validation split chose, and what it and
    the paper's product give on test."""
    if "chosen_on_validation" not in rec:
        return f"Score variants: {rec.get('status', 'not run')}."
    k = rec["chosen_on_validation"]
    val, test = rec["validation"], rec["test"]
    gap = test[k]["mean"]["image_auroc"] - test["product"]["mean"]["image_auroc"]
    what = "the paper's score" if k == "product" else "a variant, not the paper's score"
    return (f"Chosen on the label-free validation split (synthetic defects on held-out normal images; no test label "
            f"used): **{k}** ({what}), validation image AUROC {100 * val[k]['mean']['image_auroc']:.1f} vs the "
            f"product's {100 * val['product']['mean']['image_auroc']:.1f}. On test it gives "
            f"{100 * test[k]['mean']['image_auroc']:.1f} ({100 * gap:+.1f} points vs the product's "
            f"{100 * test['product']['mean']['image_auroc']:.1f}).")

"""The accuracy record of a finished run (``python -m pvqae benchmark --accuracy``, after
``dvc repro evaluate`` and / or ``dvc repro baselines`` on a dataset).

Reads the run's outputs and records dataset, profile, seeds, machine, training and stage wall
times, PVQAE's and the static VQ's metrics (mean ± std over seeds, per class), the paper's
numbers for that dataset (labelled), and whether the targets are met:
``accuracy_<dataset>_<profile>.json``. The baselines stage's methods (median-filter floor,
PatchCore and PaDiM on the named backbone, AE-SSIM) are recorded with their fit and scoring
times, memory-bank sizes and margin over the floor; a run of the baselines alone is
``accuracy_<dataset>_<profile>_<size>px_baselines.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pvqae.config import load_params
from pvqae.records import machine_info
from pvqae.scoring import ScoreConfig

# Issue targets for the cpu profile (real data, 2 cores); the paper's numbers are in paper_numbers.yaml.
TARGETS = {"image_auroc": 0.95, "pixel_auroc": 0.93, "training_seconds": 3600.0, "pvqae_minus_static_image_auroc": 0.02}
# PatchCore on ImageNet EfficientNet-Lite0 must show that the harness measures a working detector.
# Patch AE and VQ-Flow (the study's other systems) have their own issue targets.
BASELINE_TARGETS = {"mtsd": {"patchcore": {"image_auroc": 0.93, "pixel_auroc": 0.90},
                             "patch_ae": {"image_auroc": 0.93}, "vq_flow": {"image_auroc": 0.93}},
                    "mvtec-bottle": {"patchcore": {"image_auroc": 0.99}, "patch_ae": {"image_auroc": 0.99},
                                     "vq_flow": {"image_auroc": 0.99}}}
# PVQAE-F (input.kind: features) on EfficientNet-Lite0 features, per dataset (its issue):
# PatchCore on the same backbone in the same run is the bar; <= 30 min of training per seed.
FEATURE_TARGETS = {"mtsd": {"image_auroc": 0.95, "pixel_auroc": 0.93},
                   "mvtec-bottle": {"image_auroc": 0.995, "pixel_auroc": 0.97}}
FEATURE_TRAINING_SECONDS = 1800.0
FLOOR = "median_filter"


def auroc_by_defect(reports: Path, manifest: dict, seeds: list[int],
                    methods: tuple[str, ...] = ("pvqae", "static_vq")) -> dict:
    """``{method: {class: {defect kind: image AUROC}}}``, each kind against the class's normal
    test images, mean over seeds, from the evaluate stage's ``scores/seed<k>/<method>.npz``
    (in test-split order, as the manifest lists the samples). Methods without scores are left out."""
    import numpy as np

    from pvqae.evaluation import auroc_by_kind

    kinds = [s["defect"] or "" for s in manifest.get("samples", []) if s["split"] == "test"]
    out: dict = {}
    for m in methods:
        files = [reports / "scores" / f"seed{s}" / f"{m}.npz" for s in seeds]
        if not kinds or not all(f.is_file() for f in files):
            continue
        per_seed = []
        for f in files:
            z = np.load(f)
            if len(z["label"]) != len(kinds):
                raise ValueError(f"{f} scores {len(z['label'])} images but the manifest lists {len(kinds)} test "
                                 f"images: they come from different runs; run `dvc repro evaluate`")
            per_seed.append(auroc_by_kind(z["label"], z["class_index"], kinds, manifest["classes"], z["image"]))
        out[m] = {cls: {k: float(np.mean([r[cls][k] for r in per_seed])) for k in per_seed[0][cls]}
                  for cls in per_seed[0]}
    return out


def codes_per_image(reports: Path, manifest: dict, params: dict) -> dict:
    """Codes an image is represented with: PVQAE's routed and prior budgets (normal and
    defective test images, mean over classes, from the evaluate stage's code-allocation
    table; empty when it is missing) and the static VQ's fixed grid at ``static_vq.level``."""
    import csv

    out: dict = {}
    grid = manifest.get("coarse_grid")
    level = (params.get("static_vq") or {}).get("level")
    if grid and level is not None:
        out["static_vq"] = (grid * 2 ** int(level)) ** 2
    path = reports / "tables" / "evaluate" / "code_allocation.csv"
    if path.is_file():
        with open(path) as f:
            rows = list(csv.DictReader(f))
        for images in ("normal", "defective"):
            for bud in ("routed", "prior"):
                v = [float(r["codes_per_image"]) for r in rows if r["images"] == images and r["budget"] == bud]
                if v:
                    out[f"pvqae_{bud}_{images}"] = sum(v) / len(v)
    return out


def _load(reports: Path, rel: str) -> dict:
    path = reports / rel
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro evaluate` or `dvc repro baselines` first "
                                f"(on the dataset to benchmark)")
    return json.loads(path.read_text())


def _pvqae_record(reports: Path, manifest: dict, params: dict, targets: dict) -> dict:
    """PVQAE's and the static VQ's part of the accuracy record (after ``dvc repro evaluate``)."""
    from pvqae.report import notebook_seconds, paper_table1

    ev = _load(reports, "metrics/evaluate.json")
    pre, bud, pri = (_load(reports, f"models/{st}/summary.json") for st in ("pretrain", "budget", "prior"))
    seeds = ev["seeds"]
    pv_secs = [pre[f"seed{s}"]["pvqae_pretrain"]["train_seconds"] + bud[f"seed{s}"]["train_seconds"]
               + pri[f"seed{s}"].get("train_seconds", 0.0) for s in seeds]
    st_secs = [pre[f"seed{s}"]["static_vq"]["train_seconds"] for s in seeds]
    stages = {st: notebook_seconds(reports / "executed" / f"{st}.ipynb") for st in
              ("prepare", "pretrain", "budget", "prior", "evaluate")}
    brief = {m: {k: ev[m][k] for k in ("mean", "std", "per_class", "n_seeds")} for m in ("pvqae", "static_vq")}
    gap = ev["pvqae"]["mean"]["image_auroc"] - ev["static_vq"]["mean"]["image_auroc"]
    train_s = sum(pv_secs) / len(pv_secs)
    paper = {cls: {m: v for m, v in p.items() if m in ("pvqae", "vq_e")} for cls, p in
             paper_table1(manifest["dataset"]).items() if cls in manifest["classes"]}
    return {
        "image_auroc_by_defect": auroc_by_defect(reports, manifest, seeds),
        "codes_per_image": codes_per_image(reports, manifest, params), "seeds": seeds,
        "training_seconds": {"pvqae_pretrain_budget_prior": train_s, "static_vq": sum(st_secs) / len(st_secs),
                             "per_seed_pvqae": pv_secs},
        "stage_seconds": stages,
        "wall_seconds": sum(stages.values()) if None not in stages.values() else None,  # prepare..evaluate
        "steps": {k: params[k]["steps"] for k in ("pretrain", "budget", "prior", "static_vq")},
        # PVQAE's score: "product" (the paper's), or the variant evaluate.score's combine and
        # prior_smoothing name
        "score": ScoreConfig.from_dict(params.get("evaluate", {}).get("score", {})).label(),
        **brief, "pvqae_minus_static_image_auroc": gap,
        "paper_percent": paper, "targets": targets,
        "met": {"image_auroc": ev["pvqae"]["mean"]["image_auroc"] >= targets["image_auroc"],
                "pixel_auroc": ev["pvqae"]["mean"]["pixel_auroc"] >= targets["pixel_auroc"],
                "training_seconds": train_s <= targets["training_seconds"],
                "pvqae_minus_static_image_auroc": gap >= targets["pvqae_minus_static_image_auroc"]},
    }


def baselines_record(reports: Path, tag: str, params: dict) -> dict:
    """The baselines stage's part of the accuracy record: per method its metrics (mean ± std
    over seeds, per class), fit seconds, memory-bank / fitted-state size, scoring seconds and
    images/s (mean over seeds), the margin of image / pixel AUROC over the median-filter floor,
    and the targets of :data:`BASELINE_TARGETS` for this dataset with whether each is met."""
    from pvqae.report import notebook_seconds

    b = _load(reports, "metrics/baselines.json")
    floor = b["results"].get(FLOOR, {}).get("mean")
    methods = {}
    for m, res in b["results"].items():
        fits = list(b["training"].get(m, {}).values())
        per_seed = list(b["per_seed"][m].values())

        def mean_of(rows, key):
            v = [r[key] for r in rows if r.get(key) is not None]
            return sum(v) / len(v) if v else None

        rec = {k: res[k] for k in ("mean", "std", "per_class", "n_seeds")}
        fit_key = "seconds" if fits and "seconds" in fits[0] else "train_seconds"  # trained models report the latter
        rec.update({"fit_seconds": mean_of(fits, fit_key), "scoring_seconds": mean_of(per_seed, "scoring_seconds"),
                    "inference_images_per_second": res.get("inference_images_per_second")})
        if res.get("image_auroc_by_kind"):  # older baselines records have none
            rec["image_auroc_by_defect"] = res["image_auroc_by_kind"]
        for key in ("bank_size", "bank_size_full", "bank_mb", "bank_mb_full", "mb", "feature_dim", "grid"):
            if fits and key in fits[0]:
                rec[key] = fits[0][key]
        if floor is not None:
            rec["margin_over_floor"] = {k: res["mean"][k] - floor[k] for k in ("image_auroc", "pixel_auroc")}
        methods[m] = rec
    targets = BASELINE_TARGETS.get(tag, {})
    met = {f"{m}_{k}": methods[m]["mean"][k] >= v for m, t in targets.items() if m in methods for k, v in t.items()}
    return {"backbone": b.get("backbone"), "backbone_status": b.get("backbone_status", b.get("backbone")),
            "status": b["status"], "seeds": b["seeds"], "methods": methods,
            "stage_seconds": notebook_seconds(reports / "executed" / "baselines.ipynb"),
            "patchcore_params": params.get("baselines", {}).get("patchcore"),
            "padim_params": params.get("baselines", {}).get("padim"),
            **{f"{m}_params": params.get("baselines", {}).get(m) for m in methods if m not in ("patchcore", "padim")},
            "postprocess": {k: params.get("evaluate", {}).get("score", {}).get(k) for k in ("smooth_sigma", "image_score")},
            "targets": targets, "met": met}


def accuracy(reports: Path, params: dict | None = None, targets: dict | None = None) -> dict:
    """Accuracy benchmark record of a finished run (``reports/`` after ``dvc repro evaluate``
    and / or ``dvc repro baselines``); each part is present when its stage has run.

    Training seconds of PVQAE = pre-training + budget learning + prior learning of one seed
    (mean over seeds), from the stages' summaries; the static VQ's are reported beside it.
    """
    reports = Path(reports)
    params = params or load_params()
    targets = dict(targets or TARGETS)
    manifest = _load(reports, "prepared/manifest.json")
    has_pvqae = (reports / "metrics" / "evaluate.json").is_file()
    has_baselines = (reports / "metrics" / "baselines.json").is_file()
    if not (has_pvqae or has_baselines):
        _load(reports, "metrics/evaluate.json")  # raises, naming what to run
    out = {"benchmark": "accuracy", "dataset": manifest["dataset"], "root": manifest["root"],
           "classes": manifest["classes"], "counts": manifest["counts"], "image_size": manifest["image_size"],
           "profile": params.get("profile"), "machine": machine_info()}
    inp = reports / "features" / "manifest.json"
    out["input"] = json.loads(inp.read_text()) if inp.is_file() else {"kind": "pixels"}
    if out["input"]["kind"] == "features" and targets == TARGETS:  # PVQAE-F's own targets
        tag = dataset_tag(out)
        targets.update(FEATURE_TARGETS.get(tag, {}), training_seconds=FEATURE_TRAINING_SECONDS)
    if has_pvqae:
        out.update(_pvqae_record(reports, manifest, params, targets))
    if has_baselines:
        out["baselines"] = baselines_record(reports, dataset_tag(out), params)
        out.setdefault("seeds", out["baselines"]["seeds"])
    for part, rel in (("score_variants", "metrics/score_variants.json"), ("ablations", "metrics/ablations.json")):
        if (reports / rel).is_file():  # the diagnostic score table; Tables II-III, Fig. 5, the fair static ablation
            out[part] = _load(reports, rel)
    return out


def dataset_tag(result: dict) -> str:
    """Dataset name of an accuracy record, with the class when a run covers one class of a
    multi-class dataset (``mvtec-bottle``; MTSD's one class is the dataset itself)."""
    classes = result.get("classes") or []
    if len(classes) == 1 and classes[0] != result["dataset"]:
        return f"{result['dataset']}-{classes[0]}"
    return result["dataset"]

"""Benchmarks that write ``reports/benchmarks/*.json`` (kept in git, shown in the README).

**Accuracy** (``python -m pvqae benchmark --accuracy``, after ``dvc repro evaluate`` and/or
``dvc repro baselines`` on a dataset): reads the run's outputs and records dataset, profile,
seeds, machine, training and stage wall times, PVQAE's and the static VQ's metrics (mean ±
std over seeds, per class), the paper's numbers for that dataset (labelled), and whether the
targets are met: ``accuracy_<dataset>_<profile>.json``. The baselines stage's methods
(median-filter floor, PatchCore and PaDiM on the named backbone, AE-SSIM) are recorded with
their fit and scoring times, memory-bank sizes and margin over the floor; a run of the
baselines alone is ``accuracy_<dataset>_<profile>_<size>px_baselines.json``.

**Speed and size** (``python -m pvqae benchmark --profile paper``):
``reports/benchmarks/speed_size_<profile>_<size>px.json``.

Measured for the model a profile defines (weights do not matter for speed or size, so the
model is freshly initialised; no data needed):

- inference images/s of the full defect score (routing, prior with every position masked,
  reconstruction with the prior budget; Sec. III-C2), batched, and the process's peak
  resident memory;
- training images/s of one budget-learning step (routing, budget loss, VQ-GAN losses);
- the size of PVQAE + Budget Prior Transformer in MB (float32 state dicts);
- for comparison, the size of a PatchCore memory bank for the same training set, computed
  from the architecture: WideResNet-50-2 layer2 + layer3 features at stride 8, aggregated and
  projected to 1024 dims (PatchCore's default), one float32 vector per stride-8 position per
  training image, before and after coreset subsampling.
"""

from __future__ import annotations

import math
import resource
import statistics
import time
from pathlib import Path

import torch

from pvqae import budget, pipeline
from pvqae.baselines.patchcore import PatchCore, coreset_size
from pvqae.config import deep_merge, load_params, load_yaml, profile_path
from pvqae.model import PVQAE
from pvqae.prior import BudgetPriorTransformer
from pvqae.scoring import score_batch
from pvqae.train import TrainConfig, reconstruction_loss


def state_dict_mb(module: torch.nn.Module) -> float:
    """Bytes of a module's parameters and buffers, in MB (1e6 bytes)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values()) / 1e6


def profile_params(names: list[str]) -> dict:
    """params.yaml with profile overlays applied in memory (params.yaml is not touched)."""
    params = load_params()
    for n in names:
        params = deep_merge(params, load_yaml(profile_path(n)))
    return params


def resize_profile(data: dict, model: dict, image_size: int) -> tuple[dict, dict]:
    """The profile's model at another image size with the same coarse patch grid (the
    paper's 8 x 8): one encoder level more per doubling, repeating the last channel
    multiplier (fewer levels when smaller). Keeps the prior's sequence length, whose
    predict-all cost grows with the cube of the grid's area."""
    grid = pipeline.coarse_grid(data)
    levels = (image_size // grid).bit_length()  # 2^(levels-1) = image_size / grid
    if image_size % grid or 2 ** (levels - 1) != image_size // grid:
        raise ValueError(f"image size {image_size} is not the coarse grid {grid} times a power of two")
    mult = list(model["ch_mult"])
    mult = mult[:levels] if levels <= len(mult) else mult + [mult[-1]] * (levels - len(mult))
    return {**data, "image_size": image_size, "patch_size": image_size // grid}, {**model, "ch_mult": mult}


def _timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call (robust to a stray slow call)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _reset_peak_rss() -> None:
    """Reset the process's peak resident memory (Linux ``VmHWM``) to its current resident memory,
    so the next :func:`_peak_rss_mb` is the peak of what runs in between, not of earlier work in
    the same process (another profile, a training step). A no-op where /proc is missing."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    """Peak resident memory in MB since the last :func:`_reset_peak_rss` (Linux ``VmHWM``); the
    process's lifetime peak (``ru_maxrss``) where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e3  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # Linux: kB


def run(profile: str, batch_sizes: tuple[int, ...] = (2, 4, 8), repeats: int = 5, n_train: int = 761,
        num_classes: int = 1, image_size: int | None = None, seed: int = 0, train_batch_size: int = 8) -> dict:
    """Benchmark the model of ``profile`` (``n_train`` default: MTSD's published train split).

    Inference is timed at each of ``batch_sizes`` (ascending) and the fastest is the headline;
    every size's figure is kept. On the 2-core machine at 256 px, batches of 2, 4 and 8 were within
    the run-to-run noise of each other (11.1-14.2 img/s over four runs); on one thread beside a
    training run, 2 and 4 were ~25 % faster than 8 (a 16-channel 256 px activation of 4 images,
    17 MB, fits the 32 MB L3 cache; of 8, 34 MB, it does not). The peak resident memory of each
    batch size is its own (the peak is reset before each)."""
    torch.manual_seed(seed)
    params = profile_params([profile])
    data, model_params = dict(params["data"]), dict(params["model"])
    if image_size:
        data, model_params = resize_profile(data, model_params, image_size)
    cfg = pipeline.model_config(model_params, data)
    model = PVQAE(cfg).eval()
    p = params["prior"]
    prior = BudgetPriorTransformer(num_levels=3, grid=cfg.grids[0], dim=p["dim"], heads=p["heads"],
                                   prior="per-class", num_classes=num_classes).eval()
    t0 = time.perf_counter()
    by_batch, rss_by_batch = {}, {}
    for bs in sorted(set(batch_sizes)):
        xb = torch.rand(bs, cfg.in_channels, cfg.image_size, cfg.image_size)
        cls = torch.zeros(bs, dtype=torch.long)
        _reset_peak_rss()
        by_batch[bs] = bs / _timed(lambda: score_batch(model, xb, cls, prior), repeats)
        rss_by_batch[bs] = _peak_rss_mb()
    best = max(by_batch, key=by_batch.get)

    x = torch.rand(train_batch_size, cfg.in_channels, cfg.image_size, cfg.image_size)
    tc = TrainConfig.from_dict({**params["pretrain"], **params["budget"]})
    train_model = PVQAE(cfg).train()
    opt = torch.optim.Adam(train_model.parameters(), lr=1e-4)
    ent = torch.rand(train_batch_size, cfg.grids[0], cfg.grids[0])

    def step():
        out = train_model(x, mode="dynamic")
        costs = tc.budget_scale * budget.level_costs(ent, 3, tc.budget_factor, tc.budget_eps).permute(0, 3, 1, 2)
        loss = reconstruction_loss(x, out.recon, tc) + out.vq_loss + budget.budget_loss(out.routing.gate, costs)
        opt.zero_grad()
        loss.backward()
        opt.step()

    train = _timed(step, max(1, repeats - 1))
    baselines = baseline_speed(params, cfg.image_size, cfg.in_channels, n_train, batch_size=best,
                               repeats=max(1, repeats - 2), seed=seed)
    return {
        "benchmark": "speed_size", "profile": profile, "machine": pipeline.machine_info(), "seed": seed,
        "image_size": cfg.image_size, "grids": list(cfg.grids), "ch_mult": list(cfg.ch_mult), "ch": cfg.ch,
        "batch_size": best, "inference_images_per_second": by_batch[best],
        "inference_peak_rss_mb": rss_by_batch[best],
        "inference_images_per_second_by_batch_size": {str(b): v for b, v in by_batch.items()},
        "peak_rss_mb_by_batch_size": {str(b): v for b, v in rss_by_batch.items()},
        "train_batch_size": train_batch_size, "train_images_per_second": train_batch_size / train,
        "model_mb": state_dict_mb(model), "prior_mb": state_dict_mb(prior),
        "model_parameters": sum(q.numel() for q in model.parameters()),
        "patchcore_wrn50_bank": PatchCore.memory_bank_mb(n_train, cfg.image_size),
        "baselines": baselines,
        "wall_seconds": time.perf_counter() - t0,
        "note": "random weights: speed and size do not depend on them; threads = torch default",
    }


def baseline_speed(params: dict, image_size: int, channels: int, n_train: int, batch_size: int = 8,
                   repeats: int = 3, seed: int = 0) -> dict:
    """Inference images/s (batch ``batch_size``, median of ``repeats`` calls, the backbone
    included) and size of the feature-based baselines on the params' backbone at
    ``image_size``: PatchCore and Patch AE with memory banks of the size ``n_train`` training
    images give (filled with random vectors: speed does not depend on the values), PaDiM and
    VQ-Flow as built. Size = the float32 state a deployment keeps: PatchCore's bank, PaDiM's
    Gaussians, Patch AE's trained layers + bank, VQ-Flow's trained layers (backbone not counted)."""
    from pvqae.backbones import load_backbone
    from pvqae.baselines import harness

    bp = params["baselines"]
    backbone, status = load_backbone(bp["backbone"], bp.get("backbone_weights"))
    if backbone is None:
        return {"status": status}
    torch.manual_seed(seed)
    x = torch.rand(batch_size, channels, image_size, image_size)
    data = {"image_size": image_size, "channels": channels}
    out = {"backbone": bp["backbone"], "batch_size": batch_size}
    for m in ("patchcore", "padim", "patch_ae", "vq_flow"):
        model = harness.build(m, bp, data, seed, backbone).eval()
        if m == "patchcore":
            positions = math.ceil(image_size / model.strides[0]) ** 2
            bank = coreset_size(n_train * positions, model.coreset_ratio)
            model.memory_bank = torch.randn(bank, model.memory_bank.shape[1])
        elif m == "padim":
            model.fit(torch.rand(4, channels, image_size, image_size), progress=False)
        elif m == "patch_ae":
            positions = math.ceil(image_size / model.patch) ** 2
            model.memory_bank = torch.randn(coreset_size(n_train * positions, model.cfg.coreset_ratio),
                                            model.cfg.feature_dim)
        with torch.no_grad():
            secs = _timed(lambda: model(x), repeats)
        kept = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
        out[m] = {"inference_images_per_second": batch_size / secs,
                  "mb": sum(t.numel() * t.element_size() for t in kept.values()) / 1e6}
    return out


# Issue targets for the cpu profile (real data, 2 cores); the paper's numbers are in paper_numbers.yaml.
TARGETS = {"image_auroc": 0.95, "pixel_auroc": 0.93, "training_seconds": 3600.0, "pvqae_minus_static_image_auroc": 0.02}
# PatchCore on ImageNet EfficientNet-Lite0 must show that the harness measures a working detector.
# Patch AE and VQ-Flow (the study's other systems) have their own issue targets.
BASELINE_TARGETS = {"mtsd": {"patchcore": {"image_auroc": 0.93, "pixel_auroc": 0.90},
                             "patch_ae": {"image_auroc": 0.93}, "vq_flow": {"image_auroc": 0.93}},
                    "mvtec-bottle": {"patchcore": {"image_auroc": 0.99}, "patch_ae": {"image_auroc": 0.99},
                                     "vq_flow": {"image_auroc": 0.99}}}
FLOOR = "median_filter"


def auroc_by_defect(reports: Path, manifest: dict, seeds: list[int],
                    methods: tuple[str, ...] = ("pvqae", "static_vq")) -> dict:
    """``{method: {class: {defect kind: image AUROC}}}``, each kind against the class's normal
    test images, mean over seeds, from the evaluate stage's ``scores/seed<k>/<method>.npz``
    (in test-split order, as the manifest lists the samples). Methods without scores are left out."""
    import numpy as np

    from pvqae.metrics import image_auroc_by_kind

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
            by_class = {}
            for c, cls in enumerate(manifest["classes"]):
                sel = z["class_index"] == c
                if sel.any():
                    by_class[cls] = image_auroc_by_kind(z["label"][sel], z["image"][sel],
                                                        [kinds[i] for i in np.flatnonzero(sel)])
            per_seed.append(by_class)
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
    import json

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
           "profile": params.get("profile"), "machine": pipeline.machine_info()}
    if has_pvqae:
        out.update(_pvqae_record(reports, manifest, params, targets))
    if has_baselines:
        out["baselines"] = baselines_record(reports, dataset_tag(out), params)
        out.setdefault("seeds", out["baselines"]["seeds"])
    return out


def accuracy_table(out_dir: Path) -> str:
    """Markdown table of every ``accuracy_*.json`` under ``out_dir``."""
    import json

    rows = ["| dataset | profile | image | steps (PVQAE pretrain + budget / static VQ) | seeds "
            "| PVQAE image / pixel AUROC | static VQ image / pixel | PVQAE training s (pretrain+budget+prior) "
            "| targets met | codes per normal image (PVQAE routed / static VQ) | machine |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    kinds = ["", "Image AUROC per defect kind (each kind against the normal test images):", "",
             "| dataset | profile | method | class | image AUROC per defect kind |", "|---|---|---|---|---|"]
    base = ["", "Baselines (the baselines stage: same data, splits, size, post-processing and metrics; margin = "
            "AUROC points over the median-filter floor):", "",
            "| dataset | profile | image | method | backbone | seeds | image / pixel AUROC | AUPRO "
            "| margin over floor (image / pixel) | fit s | scoring img/s | bank / fitted MB | targets met | machine |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(Path(out_dir).glob("accuracy_*.json")):
        r = json.loads(p.read_text())
        if "baselines" in r:
            base += _baseline_rows(r)
        if "pvqae" not in r:
            continue
        pv, st = r["pvqae"]["mean"], r["static_vq"]["mean"]
        met = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in r["met"].items())
        steps = r.get("steps") or {}
        steps = (f"{steps['pretrain']} + {steps['budget']} / {steps['static_vq']}"
                 if {"pretrain", "budget", "static_vq"} <= set(steps) else "-")
        rows.append(f"| {dataset_tag(r)} | {r['profile']} | {r['image_size']} px | {steps} | {r['seeds']} "
                    f"| {100 * pv['image_auroc']:.1f} / {100 * pv['pixel_auroc']:.1f} "
                    f"| {100 * st['image_auroc']:.1f} / {100 * st['pixel_auroc']:.1f} "
                    f"| {r['training_seconds']['pvqae_pretrain_budget_prior']:.0f} | {met} | {_codes(r)} "
                    f"| {r['machine']['cpu_count']} CPU{', CUDA' if r['machine']['cuda'] else ''} |")
        for m, per_class in r.get("image_auroc_by_defect", {}).items():
            for cls, v in per_class.items():
                kinds.append(f"| {dataset_tag(r)} | {r['profile']} | {m} | {cls} | "
                             + ", ".join(f"{k} {100 * a:.1f}" for k, a in v.items()) + " |")
    return "\n".join(rows + (kinds if len(kinds) > 5 else []) + (base if len(base) > 5 else [])) + "\n"


def _baseline_rows(r: dict) -> list[str]:
    from pvqae.backbones import backbone_label
    from pvqae.baselines import NEEDS_BACKBONE

    b = r["baselines"]
    out = []
    for m, rec in b["methods"].items():
        mean, std = rec["mean"], rec["std"]
        spread = (lambda k: f" ± {100 * std[k]:.1f}" if rec["n_seeds"] > 1 else "")
        margin = rec.get("margin_over_floor")
        margin = "-" if m == FLOOR or not margin else (f"{100 * margin['image_auroc']:+.1f} / "
                                                       f"{100 * margin['pixel_auroc']:+.1f}")
        mb = rec.get("bank_mb", rec.get("mb"))
        met = ", ".join(f"{k.removeprefix(m + '_')} {'yes' if v else 'NO'}" for k, v in b["met"].items()
                        if k.startswith(m + "_")) or "-"
        fit = rec.get("fit_seconds")
        ips = rec.get("inference_images_per_second")
        out.append(f"| {dataset_tag(r)} | {r['profile']} | {r['image_size']} px | {m} "
                   f"| {backbone_label(b['backbone']) if m in NEEDS_BACKBONE else '-'} | {b['seeds']} "
                   f"| {100 * mean['image_auroc']:.1f}{spread('image_auroc')} / {100 * mean['pixel_auroc']:.1f}"
                   f"{spread('pixel_auroc')} | {100 * mean['aupro']:.1f} | {margin} "
                   f"| {'-' if fit is None else f'{fit:.0f}'} | {'-' if ips is None else f'{ips:.1f}'} "
                   f"| {'-' if mb is None else f'{mb:.0f}'} | {met} | {r['machine']['cpu_count']} CPU |")
    return out


def _codes(r: dict) -> str:
    c = r.get("codes_per_image") or {}
    pv, st = c.get("pvqae_routed_normal"), c.get("static_vq")
    return f"{pv:.0f} / {st}" if pv is not None and st is not None else "-"


def dataset_tag(result: dict) -> str:
    """Dataset name of an accuracy record, with the class when a run covers one class of a
    multi-class dataset (``mvtec-bottle``; MTSD's one class is the dataset itself)."""
    classes = result.get("classes") or []
    if len(classes) == 1 and classes[0] != result["dataset"]:
        return f"{result['dataset']}-{classes[0]}"
    return result["dataset"]


def write(result: dict, out_dir: Path, suffix: str = "baselines") -> Path:
    """``accuracy_<dataset>_<profile>.json`` (``..._<size>px_<suffix>.json`` for a run without
    PVQAE) or ``speed_size_<profile>_<size>px.json`` under ``out_dir``."""
    if result["benchmark"] == "accuracy":
        name = f"accuracy_{dataset_tag(result)}_{result['profile']}"
        if "pvqae" not in result:
            name += f"_{result['image_size']}px_{suffix}"
    else:
        name = f"speed_size_{result['profile']}_{result['image_size']}px"
    path = Path(out_dir) / f"{name}.json"
    pipeline.write_json(result, path)
    return path


def table(out_dir: Path) -> str:
    """Markdown table of every ``speed_size_*.json`` under ``out_dir`` (for the README)."""
    import json

    rows = ["| profile | image | inference img/s (batch) | peak RSS MB | train img/s | PVQAE + prior MB | "
            "PatchCore bank MB (full / 10 % coreset, n_train) | machine |", "|---|---|---|---|---|---|---|---|"]
    for p in sorted(Path(out_dir).glob("speed_size_*.json")):
        r = json.loads(p.read_text())
        b = r["patchcore_wrn50_bank"]
        m = r["machine"]
        rows.append(f"| {r['profile']} | {r['image_size']} px | {r['inference_images_per_second']:.1f} ({r['batch_size']}) "
                    f"| {r['inference_peak_rss_mb']:.0f} | {r['train_images_per_second']:.1f} "
                    f"| {r['model_mb'] + r['prior_mb']:.1f} | {b['full_mb']:.0f} / {b['coreset_mb']:.0f} ({b['n_train']}) "
                    f"| {m['cpu_count']} CPU, torch {m['torch'].split('+')[0]}{', CUDA' if m['cuda'] else ''} |")
    base = ["", "Feature-based baselines in the same run (inference images/s at the batch above, the backbone "
            "included; MB = what a deployment keeps beside the backbone):", "",
            "| profile | image | backbone | PatchCore img/s (MB) | PaDiM img/s (MB) | Patch AE img/s (MB) "
            "| VQ-Flow img/s (MB) |", "|---|---|---|---|---|---|---|"]
    for p in sorted(Path(out_dir).glob("speed_size_*.json")):
        r = json.loads(p.read_text())
        b = r.get("baselines") or {}
        if "patchcore" in b:
            cells = " | ".join(f"{b[m]['inference_images_per_second']:.1f} ({b[m]['mb']:.0f})"
                               for m in ("patchcore", "padim", "patch_ae", "vq_flow"))
            base.append(f"| {r['profile']} | {r['image_size']} px | {b['backbone']} | {cells} |")
    return "\n".join(rows + (base if len(base) > 5 else [])) + "\n"

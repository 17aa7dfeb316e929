"""Stage ``evaluate``: score the test split with PVQAE (S = CE(routed, prior budget) x L2 error
with the prior's budget, Sec. III-C2) and the static VQ; metrics per class, mean ± std over
seeds, and the code allocation of normal vs defective images."""

from __future__ import annotations

from pvqae import report
from pvqae.evaluation import aggregate_seeds, code_allocation, evaluate_scores, score_split, score_variants_split
from pvqae.model import PVQAE
from pvqae.prior import BudgetPriorTransformer, load_prior
from pvqae.records import save_scores, write_json, write_table
from pvqae.scoring import SCORE_VARIANTS
from pvqae.settings import EvaluateConfig, Params
from pvqae.stages import (
    AUTOENCODER_DEPS,
    PATHS,
    SCORING_DEPS,
    Stage,
    load_split,
    load_validation_split,
    out_path,
    seed_dir,
)

STAGE = Stage("evaluate", "05_evaluate.py", params=("seed", "seeds", "prior", "evaluate"),
              deps=(*AUTOENCODER_DEPS, *SCORING_DEPS, "pvqae/report.py", "pvqae/plots.py", PATHS["prepared"], PATHS["pretrain_models"],
                    PATHS["budget_models"], PATHS["prior_models"]),
              outs=(PATHS["scores"], f"{PATHS['tables']}/evaluate", f"{PATHS['figures']}/evaluate"),
              metrics=(f"{PATHS['metrics']}/evaluate.json", f"{PATHS['metrics']}/score_variants.json"))
METHODS = ("pvqae", "static_vq")


def evaluate_model(model: PVQAE, prior: BudgetPriorTransformer | None, test: dict, ev: EvaluateConfig,
                   progress: bool = True, desc: str = "score", variants: bool = False) -> tuple[dict, dict]:
    """Score a split and compute its metrics: ``(scores, results)``; ``variants``: the scores also
    hold every score variant of the same pass (:func:`pvqae.evaluation.score_split`)."""
    sc = score_split(model, test, prior, ev.score, ev.batch_size, progress=progress, desc=desc, variants=variants)
    res = evaluate_scores(test, sc, ev.fpr_limit)
    res["inference_images_per_second"] = sc["images_per_second"]
    res["codes_per_image"] = codes_per_image(model, sc["routed"])
    return sc, res


def codes_per_image(model: PVQAE, routed) -> float:
    """Mean codes per test image: a coarse patch takes 1 code, a median 4, a fine 16 (PVQAE's
    routed budget); a static VQ its grid."""
    import numpy as np

    if routed is None:
        return float(model.sizes[0] ** 2)
    return float(np.mean((4.0 ** np.asarray(routed)).sum((1, 2))))


def run(cfg: Params, paths: dict = PATHS, progress: bool = True) -> dict:
    """Score every seed; write metrics, score files and tables. Returns ``results`` (per
    method, aggregated), ``scores`` ({seed: {method: scores}}), ``allocation`` rows, the
    markdown ``table`` and the test split."""
    test = load_split(paths, "test")
    val = load_validation_split(paths) if cfg.prior.mode != "none" else None
    no_variants = _no_variants(cfg, val)  # None: the diagnostic runs, from the test pass below
    per_seed, scores, test_variants = {}, {}, {}
    for s in cfg.seeds:
        model = PVQAE.from_checkpoint(seed_dir(out_path(paths, "budget_models"), s) / "pvqae.pt")
        prior = load_prior(seed_dir(out_path(paths, "prior_models"), s) / "prior.pt")
        static = PVQAE.from_checkpoint(seed_dir(out_path(paths, "pretrain_models"), s) / "static_vq.pt")
        scores[s] = {}
        scores[s]["pvqae"], pv = evaluate_model(model, prior, test, cfg.evaluate, progress, desc=f"PVQAE seed {s}",
                                                variants=no_variants is None)
        scores[s]["static_vq"], st = evaluate_model(static, None, test, cfg.evaluate, progress,
                                                    desc=f"static VQ seed {s}")
        per_seed[s] = {"pvqae": pv, "static_vq": st}
        variant_maps = scores[s]["pvqae"].pop("variants", None)  # metrics now, so the maps need not be kept
        test_variants[s] = (None if variant_maps is None else
                            {k: evaluate_scores(test, sc, cfg.evaluate.fpr_limit) for k, sc in variant_maps.items()})
        for name, sc in scores[s].items():
            save_scores(sc, test, seed_dir(out_path(paths, "scores"), s) / f"{name}.npz")
    seeds = list(cfg.seeds)
    variants = score_variant_table(cfg, paths, test, progress, val=val, test_results=test_variants)
    results = {m: aggregate_seeds([per_seed[s][m] for s in seeds]) for m in METHODS}
    write_json({**results, "seeds": seeds, "per_seed": {f"seed{s}": r for s, r in per_seed.items()}},
               out_path(paths, "metrics") / "evaluate.json")
    tables = out_path(paths, "tables") / "evaluate"
    md = write_table(report.table1_rows(test["classes"], results), tables / "main",
                     "PVQAE vs static VQ on the test set: image AUROC / pixel AUROC / AUPRO (%)",
                     note=f"Mean ± std over training seeds {seeds}" if len(seeds) > 1 else
                     f"One training seed ({seeds[0]}).")
    first = scores[seeds[0]]["pvqae"]
    alloc = code_allocation(test, first["routed"], "routed")
    if first["prior"] is not None:
        alloc += code_allocation(test, first["prior"], "prior")
    alloc_md = write_table(alloc, tables / "code_allocation", "Fraction of coarse patches per level",
                           pct_cols=("coarse", "median", "fine"))
    return {"results": results, "scores": scores, "allocation": alloc, "table": md, "allocation_table": alloc_md,
            "test": test, "variants": variants}


def _no_variants(cfg: Params, val: dict | None) -> str | None:
    """Why the score-variant diagnostic cannot run (its record's status), or None when it can."""
    if cfg.prior.mode == "none":
        return "prior mode none: S = S_rec, no variants"
    if val is None or not len(val["image"]) or len(set(val["label"].tolist())) < 2:
        return "no label-free validation split (data.val_fraction holds out no image)"
    return None


def score_variant_table(cfg: Params, paths: dict, test: dict, progress: bool = True, val: dict | None = None,
                        test_results: dict | None = None) -> dict:
    """Issue 13's diagnostic: every score variant of PVQAE (:data:`SCORE_VARIANTS`) on the
    label-free validation split and on the test split, per seed, aggregated; the variant with
    the best validation image AUROC is recorded as *chosen on validation* (a variant, never the
    paper's score unless it is ``product``). Writes ``score_variants.json`` and its table;
    without a prior there is nothing to combine and the record says so. ``val``: the validation
    split when already loaded; ``test_results``: ``{seed: {variant: metrics}}`` of the test split
    from the main scoring pass (``score_split(..., variants=True)``), scored here when missing."""
    metrics_path = out_path(paths, "metrics") / "score_variants.json"
    if cfg.prior.mode != "none" and val is None:
        val = load_validation_split(paths)
    status = _no_variants(cfg, val)
    if status is not None:
        rec = {"status": status, "seeds": list(cfg.seeds)}
        write_json(rec, metrics_path)
        return rec
    test_results = test_results or {}
    per = {sp: {k: [] for k in SCORE_VARIANTS} for sp in ("validation", "test")}
    for s in cfg.seeds:
        model = PVQAE.from_checkpoint(seed_dir(out_path(paths, "budget_models"), s) / "pvqae.pt")
        prior = load_prior(seed_dir(out_path(paths, "prior_models"), s) / "prior.pt")
        for sp, split in (("validation", val), ("test", test)):
            if sp == "test" and test_results.get(s) is not None:
                for k, r in test_results[s].items():
                    per[sp][k].append(r)
                continue
            scored = score_variants_split(model, split, prior, cfg.evaluate.score, cfg.evaluate.batch_size,
                                          progress, desc=f"variants {sp} seed {s}")
            for k, sc in scored.items():
                per[sp][k].append(evaluate_scores(split, sc, cfg.evaluate.fpr_limit))
    agg = {sp: {k: aggregate_seeds(v) for k, v in d.items()} for sp, d in per.items()}
    chosen = max(SCORE_VARIANTS, key=lambda k: (agg["validation"][k]["mean"]["image_auroc"], k == "product"))
    rec = {"seeds": list(cfg.seeds), "descriptions": SCORE_VARIANTS, "chosen_on_validation": chosen,
           "selection_rule": "highest mean validation image AUROC (ties: the paper's product)",
           "validation_images": {"normal": int((val["label"] == 0).sum()), "defective": int((val["label"] == 1).sum())},
           **agg}
    write_json(rec, metrics_path)
    rows = report.score_variant_rows(rec)
    rec["table"] = write_table(rows, out_path(paths, "tables") / "evaluate" / "score_variants",
                               "PVQAE score variants (diagnostic): label-free validation vs test (%)",
                               note=f"chosen on validation: {chosen} ({rec['selection_rule']}); the paper's score is "
                                    f"product. Seeds {list(cfg.seeds)}.")
    return rec

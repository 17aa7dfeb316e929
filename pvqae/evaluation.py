"""The evaluation protocol shared by every method: scoring a split in batches, its metrics
per class, mean ± std over training seeds, held-out reconstruction error (selection on
normal images only) and code-allocation statistics of routed budgets."""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from pvqae import distributed
from pvqae.metrics import METRIC_NAMES, evaluate
from pvqae.model import LEVEL_NAMES, PVQAE
from pvqae.prior import BudgetPriorTransformer
from pvqae.scoring import SCORE_VARIANTS, ScoreConfig, score_batch, score_variants, variant_maps


@torch.no_grad()
def score_split(model: PVQAE, split: dict, prior: BudgetPriorTransformer | None = None,
                score_cfg: ScoreConfig | None = None, batch_size: int = 16, progress: bool = True,
                desc: str = "score", variants: bool = False) -> dict:
    """Score every image of a split; numpy arrays: maps (N,S,S) float32, image (N,),
    routed/prior levels (N,G,G) (or None), rec (N,S,S), seconds, images_per_second. With
    ``variants`` (a PVQAE with a prior) also ``variants``, every score variant from the same
    pass as :func:`score_variants_split` gives them; their extra seconds are not counted in
    ``seconds`` / ``images_per_second``, which stay those of the configured score."""
    model.eval()
    if prior is not None:
        prior.eval()
    n = len(split["image"])
    maps, img, routed, prior_lv, recs = [], [], [], [], []
    var: dict[str, dict[str, list]] = {k: {"maps": [], "image": []} for k in SCORE_VARIANTS}
    extra = 0.0
    t0 = time.perf_counter()
    with distributed.on_device(model, prior) as dev:
        for i in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, mininterval=5):
            x = split["image"][i:i + batch_size].to(dev)
            c = split["class_index"][i:i + batch_size].to(dev)
            out = score_batch(model, x, c, prior, score_cfg, out_size=split["mask"].shape[-1])
            if variants:
                t1 = time.perf_counter()
                for k, (m, im) in variant_maps(out, score_cfg, out_size=split["mask"].shape[-1]).items():
                    var[k]["maps"].append(m.cpu().numpy())
                    var[k]["image"].append(im.cpu().numpy())
                extra += time.perf_counter() - t1
            maps.append(out.score_map.cpu().numpy())
            img.append(out.image_score.cpu().numpy())
            recs.append(out.rec_map.cpu().numpy())
            if out.routed_levels is not None:
                routed.append(out.routed_levels.cpu().numpy())
            if out.prior_levels is not None:
                prior_lv.append(out.prior_levels.cpu().numpy())
    secs = time.perf_counter() - t0 - extra
    return {
        "maps": np.concatenate(maps), "image": np.concatenate(img), "rec": np.concatenate(recs),
        "routed": np.concatenate(routed) if routed else None,
        "prior": np.concatenate(prior_lv) if prior_lv else None,
        "seconds": secs, "images_per_second": n / secs if secs > 0 else None,
        **({"variants": {k: {key: np.concatenate(v) for key, v in d.items()} for k, d in var.items()}}
           if variants else {}),
    }


@torch.no_grad()
def score_variants_split(model: PVQAE, split: dict, prior: BudgetPriorTransformer, score_cfg: ScoreConfig | None = None,
                         batch_size: int = 16, progress: bool = True, desc: str = "score variants") -> dict[str, dict]:
    """Every score variant (:data:`pvqae.scoring.SCORE_VARIANTS`) of a split: ``{name: {"maps",
    "image"}}`` numpy arrays, as :func:`score_split` gives them."""
    model.eval()
    prior.eval()
    maps: dict[str, list] = {k: [] for k in SCORE_VARIANTS}
    imgs: dict[str, list] = {k: [] for k in SCORE_VARIANTS}
    with distributed.on_device(model, prior) as dev:
        for i in tqdm(range(0, len(split["image"]), batch_size), desc=desc, disable=not progress, mininterval=5):
            out = score_variants(model, split["image"][i:i + batch_size].to(dev),
                                 split["class_index"][i:i + batch_size].to(dev), prior, score_cfg,
                                 out_size=split["mask"].shape[-1])
            for k, (m, im) in out.items():
                maps[k].append(m.cpu().numpy())
                imgs[k].append(im.cpu().numpy())
    return {k: {"maps": np.concatenate(maps[k]), "image": np.concatenate(imgs[k])} for k in SCORE_VARIANTS}


def metric_records(split: dict, scores: dict) -> dict:
    """Per-class records for :func:`pvqae.metrics.evaluate`."""
    recs = {}
    ci = split["class_index"].numpy()
    for k, cls in enumerate(split["classes"]):
        sel = ci == k
        if not sel.any():
            continue
        recs[cls] = {"labels": split["label"].numpy()[sel], "image_scores": scores["image"][sel],
                     "masks": split["mask"].numpy()[sel], "maps": scores["maps"][sel]}
    return recs


def evaluate_scores(split: dict, scores: dict, fpr_limit: float = 0.3) -> dict:
    """Metrics (per class and mean) of scored split."""
    return evaluate(metric_records(split, scores), fpr_limit=fpr_limit)


def auroc_by_kind(labels, class_index, kinds, classes, image_scores) -> dict[str, dict[str, float]]:
    """``{class: {defect kind: image AUROC}}``: each kind against the class's normal images
    (which defects a detector finds). ``labels``, ``class_index``, ``kinds`` (defect names; those
    of normal images are ignored) and ``image_scores`` are per image, in the same order."""
    from pvqae.metrics import image_auroc_by_kind

    ci, lab = np.asarray(class_index), np.asarray(labels)
    kinds, scores = np.asarray(kinds, dtype=object), np.asarray(image_scores)
    return {cls: image_auroc_by_kind(lab[ci == k], scores[ci == k], list(kinds[ci == k]))
            for k, cls in enumerate(classes) if lab[ci == k].any()}


def aggregate_seeds(per_seed: list[dict], metrics: tuple[str, ...] = METRIC_NAMES) -> dict:
    """Mean ± std over seeds of :func:`pvqae.metrics.evaluate` results.

    Returns the same shape as one result (``mean``: class-mean metrics, ``per_class``),
    averaged over seeds, plus ``std`` / ``per_class_std`` (population std over seeds,
    0 for one seed; NaN-aware) and ``n_seeds``.
    """
    if not per_seed:
        raise ValueError("no per-seed results to aggregate")

    def stats(values: list[float]) -> tuple[float, float]:
        v = np.array([np.nan if x is None else float(x) for x in values], float)
        if np.all(np.isnan(v)):
            return float("nan"), float("nan")
        return float(np.nanmean(v)), float(np.nanstd(v))

    out: dict = {"mean": {}, "std": {}, "per_class": {}, "per_class_std": {}, "n_seeds": len(per_seed)}
    for k in metrics:
        out["mean"][k], out["std"][k] = stats([r["mean"].get(k) for r in per_seed])
    classes = list(dict.fromkeys(c for r in per_seed for c in r.get("per_class", {})))
    for c in classes:
        out["per_class"][c], out["per_class_std"][c] = {}, {}
        for k in metrics:
            out["per_class"][c][k], out["per_class_std"][c][k] = stats(
                [r["per_class"].get(c, {}).get(k) for r in per_seed])
    for key in ("inference_images_per_second", "codes_per_image"):
        extra = [r[key] for r in per_seed if r.get(key) is not None]
        if extra:
            out[key] = float(np.mean(extra))
    by_kind = [r["image_auroc_by_kind"] for r in per_seed if r.get("image_auroc_by_kind")]
    if by_kind:  # mean over the seeds that have it, per class and kind
        out["image_auroc_by_kind"] = {c: {k: stats([r.get(c, {}).get(k) for r in by_kind])[0] for k in kinds}
                                      for c, kinds in by_kind[0].items()}
    return out


@torch.no_grad()
def heldout_error(model: PVQAE, images: torch.Tensor, batch_size: int = 16, **forward_kw) -> float:
    """Mean L1 reconstruction error on held-out normal images (selection on normal data only)."""
    if len(images) == 0:
        return float("nan")
    model.eval()
    tot = 0.0
    with distributed.on_device(model) as dev:
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(dev)
            tot += float((model(x, **forward_kw).recon - x).abs().mean()) * len(x)
    return tot / len(images)


def defect_samples(split: dict, class_index: int, n: int) -> list[int]:
    """Up to ``n`` defective images of a class, one defect kind after another (round robin
    over kinds, in file order within a kind), so a figure shows every kind it can."""
    ci, lab = split["class_index"].numpy(), split["label"].numpy()
    by_kind: dict[str, list[int]] = {}
    for i in np.nonzero((ci == class_index) & (lab == 1))[0]:
        by_kind.setdefault(split["meta"][i]["defect"] or "", []).append(int(i))
    picks, queues = [], [list(v) for _, v in sorted(by_kind.items())]
    while len(picks) < n and any(queues):
        for q in queues:
            if q and len(picks) < n:
                picks.append(q.pop(0))
    return picks


def code_allocation(split: dict, levels: np.ndarray, which: str) -> list[dict]:
    """Fraction of coarse/median/fine codes per class and normal/defective, as table rows."""
    rows = []
    ci, lab = split["class_index"].numpy(), split["label"].numpy()
    for k, cls in enumerate(split["classes"]):
        for name, want in (("normal", 0), ("defective", 1)):
            sel = (ci == k) & (lab == want)
            if not sel.any():
                continue
            lv = levels[sel]
            row = {"class": cls, "images": name, "budget": which, "n": int(sel.sum())}
            for j, ln in enumerate(LEVEL_NAMES):
                row[ln] = float((lv == j).mean())
            # codes per image relative to all-fine (1.0) : coarse 1/16, median 1/4 of fine's count
            row["codes_per_image"] = float(np.mean(np.stack([(lv == j).sum((1, 2)) * 4 ** j for j in range(3)]).sum(0)))
            rows.append(row)
    return rows

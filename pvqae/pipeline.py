"""Stage logic shared by the notebooks: prepared-data I/O, model construction from params,
batched scoring of a split, metric records and code-allocation statistics.

The notebooks stay thin: they call these functions, show, plot and write outputs.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pvqae import budget as budget_mod
from pvqae import distributed
from pvqae.data import (
    generate_synthetic,
    load_sample,
    read_dataset,
    summarize,
    validate_samples,
)
from pvqae.errors import DataError
from pvqae.metrics import evaluate
from pvqae.model import LEVEL_NAMES, PVQAE, ModelConfig
from pvqae.paths import repo_path
from pvqae.prior import BudgetPriorTransformer
from pvqae.scoring import ScoreConfig, score_batch

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


# ----------------------------------------------------------------------------- data

def coarse_grid(data: dict) -> int:
    """Side of the coarse patch grid: image_size / data.patch_size (paper: 256 / 32 = 8)."""
    size, patch = int(data["image_size"]), int(data["patch_size"])
    if size % patch:
        raise ValueError(f"data.image_size {size} is not a multiple of data.patch_size {patch}")
    return size // patch


def dataset_root(data: dict, prepared_dir: Path, seed: int) -> Path:
    """Where the raw images are: the generated synthetic set, or ``data.source``."""
    if data["dataset"] == "synthetic":
        syn = dict(data["synthetic"])
        out = Path(prepared_dir) / "synthetic"
        generate_synthetic(out, image_size=int(syn.pop("image_size", data["image_size"])), seed=seed,
                           overwrite=True, **syn)
        return out
    root = repo_path(data["source"])
    if not root.exists():
        raise DataError(f"dataset folder {root} does not exist; set data.source in params.yaml "
                        f"(or `python -m pvqae profile <dataset> --set data.source=/path/to/data`)")
    return root


def read_samples(data: dict, root: Path, seed: int) -> list:
    """Samples of the configured dataset kind (see ``pvqae.data.readers``)."""
    kind = "mvtec" if data["dataset"] == "synthetic" else data["dataset"]
    kw = {}
    if kind == "mtsd":
        kw = {"train_list": repo_path(data["train_list"]) if data.get("train_list") else None, "seed": seed}
    return read_dataset(kind, root, data.get("classes"), **kw)


def held_out_split(samples: list, val_fraction: float, seed: int) -> list[str]:
    """Split names per sample: a seeded ``val_fraction`` of each class's normal training
    images is held out as "val" (for model selection on normal data only)."""
    splits = [s.split for s in samples]
    rng = np.random.default_rng(seed)
    for cls in sorted({s.cls for s in samples}):
        idx = [i for i, s in enumerate(samples) if s.cls == cls and s.split == "train"]
        n_val = int(round(val_fraction * len(idx)))
        if n_val and len(idx) - n_val < 1:
            raise DataError(f"class {cls!r} has {len(idx)} training images: too few to hold out {n_val}")
        for i in rng.permutation(idx)[:n_val]:
            splits[i] = "val"
    return splits


def prepare(data: dict, out_dir: Path, seed: int, progress: bool = True) -> dict:
    """Data-preparation stage: read + validate the dataset, resize every image once, cache
    the DWT entropy of every coarse patch (Sec. III-B2: it depends only on the image), and
    write ``arrays.npz`` + ``manifest.json`` under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    root = dataset_root(data, out_dir, seed)
    samples = read_samples(data, root, seed)
    validate_samples(samples, progress=progress)
    classes = sorted({s.cls for s in samples})
    splits = held_out_split(samples, float(data.get("val_fraction", 0.0)), seed)
    size, ch = int(data["image_size"]), int(data["channels"])
    images = np.zeros((len(samples), ch, size, size), np.uint8)
    masks = np.zeros((len(samples), size, size), bool)
    for i, s in enumerate(tqdm(samples, desc="load+resize", disable=not progress, mininterval=5)):
        img, m = load_sample(s, size, ch)
        images[i] = np.round(img * 255).astype(np.uint8)
        masks[i] = m
    ent = data["entropy"]
    grid = coarse_grid(data)
    entropy = budget_mod.batch_patch_entropies(images.astype(np.float32) / 255.0, grid, wavelet=ent["wavelet"],
                                               level=int(ent["level"]), noise_floor=float(ent["noise_floor"]))
    class_index = np.array([classes.index(s.cls) for s in samples], np.int64)
    split_codes = np.array([SPLIT_CODES[x] for x in splits], np.int64)
    val = validation_defects(images, class_index, split_codes, seed)
    val_entropy = budget_mod.batch_patch_entropies(val["images"].astype(np.float32) / 255.0, grid,
                                                   wavelet=ent["wavelet"], level=int(ent["level"]),
                                                   noise_floor=float(ent["noise_floor"]))
    np.savez(out_dir / "arrays.npz", images=images, masks=masks,
             labels=np.array([s.label for s in samples], np.int64), class_index=class_index, split=split_codes,
             entropy=entropy.astype(np.float32), val_defect_source=val["source"], val_defect_images=val["images"],
             val_defect_masks=val["masks"], val_defect_entropy=val_entropy.astype(np.float32),
             val_defect_kind=np.array(val["kinds"], dtype="U16"))
    manifest = {
        "dataset": data["dataset"], "root": str(root), "classes": classes, "image_size": size, "channels": ch,
        "coarse_grid": grid, "seed": seed,
        "counts": {sp: int(sum(1 for x in splits if x == sp)) for sp in SPLIT_CODES},
        "validation_defects": {k: val["kinds"].count(k) for k in sorted(set(val["kinds"]))},
        "summary": summarize(samples),
        "samples": [{"path": str(s.path), "class": s.cls, "split": sp, "label": s.label, "defect": s.defect,
                     "mask": str(s.mask_path) if s.mask_path else None} for s, sp in zip(samples, splits)],
        "seconds": time.perf_counter() - t0,
    }
    with open(out_dir / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def validation_defects(images: np.ndarray, class_index: np.ndarray, split: np.ndarray, seed: int) -> dict:
    """The label-free validation split's defective half (:mod:`pvqae.data.validation`): one
    synthetic defect on each held-out normal image, CutPaste donors from the same class's
    held-out images; never a test image. ``source`` indexes the samples each was made from."""
    from pvqae.data.validation import KINDS, paste_defects

    src, imgs, masks, kinds = [], [], [], []
    for c in np.unique(class_index):
        idx = np.flatnonzero((class_index == c) & (split == SPLIT_CODES["val"]))
        if len(idx) == 0:
            continue
        out, m, k = paste_defects(images[idx], seed + int(c), KINDS if len(idx) > 1 else KINDS[:3])
        src.append(idx)
        imgs.append(out)
        masks.append(m)
        kinds += k
    size = images.shape[-1]
    return {"source": np.concatenate(src) if src else np.zeros(0, np.int64),
            "images": np.concatenate(imgs) if imgs else np.zeros((0, *images.shape[1:]), np.uint8),
            "masks": np.concatenate(masks) if masks else np.zeros((0, size, size), bool), "kinds": kinds}


def load_validation(prepared_dir: Path) -> dict:
    """The label-free validation split, for selection without test labels: the held-out normal
    images (label 0) followed by their synthetically defective copies (label 1, exact masks);
    the same keys as :func:`load_prepared` (``meta`` rows carry the defect kind)."""
    prepared_dir = repo_path(prepared_dir)
    normal = load_prepared(prepared_dir, "val")
    arr = np.load(prepared_dir / "arrays.npz")
    src = arr["val_defect_source"]
    manifest = normal["manifest"]
    meta = [{**manifest["samples"][int(i)], "split": "val_defect", "label": 1, "defect": str(k), "source_index": int(i)}
            for i, k in zip(src, arr["val_defect_kind"])]
    return {
        "image": torch.cat([normal["image"], torch.from_numpy(arr["val_defect_images"].astype(np.float32) / 255.0)]),
        "mask": torch.cat([normal["mask"], torch.from_numpy(arr["val_defect_masks"])]),
        "label": torch.cat([torch.zeros(len(normal["image"]), dtype=torch.long), torch.ones(len(src), dtype=torch.long)]),
        "class_index": torch.cat([normal["class_index"], torch.from_numpy(arr["class_index"][src])]),
        "entropy": torch.cat([normal["entropy"], torch.from_numpy(arr["val_defect_entropy"])]),
        "meta": normal["meta"] + meta, "classes": normal["classes"], "manifest": manifest,
    }


def load_prepared(prepared_dir: Path, split: str | tuple[str, ...]) -> dict:
    """Tensors of one or more splits: image (N,C,S,S) float [0,1], mask (N,S,S) bool,
    label, class_index, entropy (N,G,G), plus ``meta`` (manifest rows) and ``classes``."""
    prepared_dir = repo_path(prepared_dir)
    with open(prepared_dir / "manifest.json") as f:
        manifest = json.load(f)
    arr = np.load(prepared_dir / "arrays.npz")
    splits = (split,) if isinstance(split, str) else split
    sel = np.isin(arr["split"], [SPLIT_CODES[s] for s in splits])
    idx = np.nonzero(sel)[0]
    return {
        "image": torch.from_numpy(arr["images"][idx].astype(np.float32) / 255.0),
        "mask": torch.from_numpy(arr["masks"][idx]),
        "label": torch.from_numpy(arr["labels"][idx]),
        "class_index": torch.from_numpy(arr["class_index"][idx]),
        "entropy": torch.from_numpy(arr["entropy"][idx]),
        "meta": [manifest["samples"][i] for i in idx],
        "classes": manifest["classes"],
        "manifest": manifest,
    }


# ----------------------------------------------------------------------------- models

def model_config(model: dict, data: dict, levels: tuple[int, ...] = (0, 1, 2)) -> ModelConfig:
    """ModelConfig from the ``model`` and ``data`` params sections; checks that the
    encoder's coarse grid matches the patch grid of the cached DWT entropies."""
    cfg = ModelConfig.from_dict({**model, "image_size": int(data["image_size"]), "in_channels": int(data["channels"]),
                                 "levels": list(levels)})
    if cfg.grids[0] != coarse_grid(data):
        raise ValueError(f"model.ch_mult has {len(cfg.ch_mult)} levels, giving a coarse grid of {cfg.grids[0]} at "
                         f"{cfg.image_size} px, but data.patch_size {data['patch_size']} gives {coarse_grid(data)}; "
                         f"set data.patch_size to {cfg.image_size // cfg.grids[0]}")
    return cfg


# ----------------------------------------------------------------------------- scoring

@torch.no_grad()
def score_split(model: PVQAE, split: dict, prior: BudgetPriorTransformer | None = None,
                score_cfg: ScoreConfig | None = None, batch_size: int = 16, progress: bool = True,
                desc: str = "score") -> dict:
    """Score every image of a split; numpy arrays: maps (N,S,S) float32, image (N,),
    routed/prior levels (N,G,G) (or None), rec (N,S,S), seconds, images_per_second."""
    model.eval()
    if prior is not None:
        prior.eval()
    n = len(split["image"])
    maps, img, routed, prior_lv, recs = [], [], [], [], []
    t0 = time.perf_counter()
    with distributed.on_device(model, prior) as dev:
        for i in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, mininterval=5):
            x = split["image"][i:i + batch_size].to(dev)
            c = split["class_index"][i:i + batch_size].to(dev)
            out = score_batch(model, x, c, prior, score_cfg)
            maps.append(out.score_map.cpu().numpy())
            img.append(out.image_score.cpu().numpy())
            recs.append(out.rec_map.cpu().numpy())
            if out.routed_levels is not None:
                routed.append(out.routed_levels.cpu().numpy())
            if out.prior_levels is not None:
                prior_lv.append(out.prior_levels.cpu().numpy())
    secs = time.perf_counter() - t0
    return {
        "maps": np.concatenate(maps), "image": np.concatenate(img), "rec": np.concatenate(recs),
        "routed": np.concatenate(routed) if routed else None,
        "prior": np.concatenate(prior_lv) if prior_lv else None,
        "seconds": secs, "images_per_second": n / secs if secs > 0 else None,
    }


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


# ----------------------------------------------------------------------------- reporting

def fmt(v, pct: bool = True, nd: int = 1) -> str:
    """Table cell: percentage with ``nd`` decimals, 'n/a' for NaN/None."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{100 * v:.{nd}f}" if pct else f"{v:.{nd}f}"


def write_table(rows: list[dict], stem: Path, title: str = "", pct_cols: tuple[str, ...] = (),
                note: str = "") -> str:
    """Write rows as ``<stem>.csv`` (raw values) and ``<stem>.md`` (formatted); returns the markdown."""
    import csv

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows(rows)
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if c in pct_cols:
                cells.append(fmt(v))
            elif isinstance(v, float):
                cells.append(f"{v:.3f}" if np.isfinite(v) else "n/a")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    if note:
        lines += ["", note]
    md = "\n".join(lines) + "\n"
    stem.with_suffix(".md").write_text(md)
    return md


def machine_info() -> dict:
    """Machine facts recorded with every metrics/benchmark file."""
    return {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "device": str(distributed.device()),
            "gpu": torch.cuda.get_device_name(distributed.device()) if distributed.device().type == "cuda" else None}


def write_json(obj: dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # unique per process: safe under torchrun
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    tmp.replace(path)


# ----------------------------------------------------------------------------- training glue

def train_stream(split: dict, batch_size: int, seed: int, jitter: float = 0.1):
    """Deterministic augmented batch stream over a split's images and entropy maps."""
    from functools import partial

    from pvqae.train import BatchStream, flip_augment

    return BatchStream({"image": split["image"], "entropy": split["entropy"]}, batch_size, seed,
                       augment=partial(flip_augment, jitter=jitter))


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


def save_scores(scores: dict, split: dict, path: Path) -> None:
    """Scores of a split as npz (maps in float16 to keep the cache small)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {k: scores[k] for k in ("routed", "prior") if scores.get(k) is not None}
    np.savez_compressed(path, maps=scores["maps"].astype(np.float16), image=scores["image"],
                        label=split["label"].numpy(), class_index=split["class_index"].numpy(), **extra)

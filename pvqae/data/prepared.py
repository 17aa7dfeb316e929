"""The prepared dataset: read once, validated, resized, split, with cached DWT entropies.

:func:`prepare` (the prepare stage) reads the configured dataset in its original layout (or
generates the synthetic default), validates every image and mask, resizes everything once,
holds out ``data.val_fraction`` of each class's normal training images, caches the DWT
entropy of every coarse patch (Sec. III-B2: it depends only on the image) and builds the
label-free validation split (:mod:`pvqae.data.validation`). :func:`load_prepared` and
:func:`load_validation` give the splits as tensors.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pvqae.data import (
    generate_synthetic,
    load_sample,
    read_dataset,
    summarize,
    validate_samples,
)
from pvqae.entropy import batch_patch_entropies
from pvqae.errors import DataError
from pvqae.paths import repo_path
from pvqae.settings import DataConfig

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def dataset_root(data: DataConfig, prepared_dir: Path, seed: int) -> Path:
    """Where the raw images are: the generated synthetic set, or ``data.source``."""
    if data.dataset == "synthetic":
        syn = data.synthetic
        out = Path(prepared_dir) / "synthetic"
        generate_synthetic(out, classes=syn.classes, defects=syn.defects, n_train=syn.n_train,
                           n_test_good=syn.n_test_good, n_test_defect=syn.n_test_defect,
                           image_size=syn.image_size or data.image_size, seed=seed, overwrite=True)
        return out
    root = repo_path(data.source)
    if not root.exists():
        raise DataError(f"dataset folder {root} does not exist; set data.source in params.yaml "
                        f"(or `python -m pvqae profile <dataset> --set data.source=/path/to/data`)")
    return root


def read_samples(data: DataConfig, root: Path, seed: int) -> list:
    """Samples of the configured dataset kind (see ``pvqae.data.readers``)."""
    kind = "mvtec" if data.dataset == "synthetic" else data.dataset
    kw = {}
    if kind == "mtsd":
        kw = {"train_list": repo_path(data.train_list) if data.train_list else None, "seed": seed}
    return read_dataset(kind, root, list(data.classes) if data.classes else None, **kw)


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


def prepare(data: DataConfig | dict, out_dir: Path, seed: int, progress: bool = True) -> dict:
    """Data-preparation stage: read + validate the dataset, resize every image once, cache
    the DWT entropy of every coarse patch (Sec. III-B2: it depends only on the image), and
    write ``arrays.npz`` + ``manifest.json`` under ``out_dir``."""
    data = DataConfig.from_dict(data)  # a params ``data`` mapping is read strictly
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    root = dataset_root(data, out_dir, seed)
    samples = read_samples(data, root, seed)
    validate_samples(samples, progress=progress)
    classes = sorted({s.cls for s in samples})
    splits = held_out_split(samples, data.val_fraction, seed)
    size, ch = data.image_size, data.channels
    images = np.zeros((len(samples), ch, size, size), np.uint8)
    masks = np.zeros((len(samples), size, size), bool)
    for i, s in enumerate(tqdm(samples, desc="load+resize", disable=not progress, mininterval=5)):
        img, m = load_sample(s, size, ch)
        images[i] = np.round(img * 255).astype(np.uint8)
        masks[i] = m
    ent = data.entropy
    grid = data.coarse_grid
    class_index = np.array([classes.index(s.cls) for s in samples], np.int64)
    split_codes = np.array([SPLIT_CODES[x] for x in splits], np.int64)
    # the noise floor: fixed, or calibrated on the training normals' own noise (never a test image)
    floor, floor_info = ent.calibrated(images[split_codes == SPLIT_CODES["train"]].astype(np.float32) / 255.0)
    entropy = batch_patch_entropies(images.astype(np.float32) / 255.0, grid, wavelet=ent.wavelet,
                                    level=ent.level, noise_floor=floor)
    val = validation_defects(images, class_index, split_codes, seed)
    val_entropy = batch_patch_entropies(val["images"].astype(np.float32) / 255.0, grid,
                                        wavelet=ent.wavelet, level=ent.level, noise_floor=floor)
    np.savez(out_dir / "arrays.npz", images=images, masks=masks,
             labels=np.array([s.label for s in samples], np.int64), class_index=class_index, split=split_codes,
             entropy=entropy.astype(np.float32), val_defect_source=val["source"], val_defect_images=val["images"],
             val_defect_masks=val["masks"], val_defect_entropy=val_entropy.astype(np.float32),
             val_defect_kind=np.array(val["kinds"], dtype="U16"))
    manifest = {
        "dataset": data.dataset, "root": str(root), "classes": classes, "image_size": size, "channels": ch,
        "coarse_grid": grid, "seed": seed, "entropy": floor_info,
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
        "index": normal["index"],  # rows of arrays.npz of the normal half; the defective half follows
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
        "index": idx,  # rows of arrays.npz
        "classes": manifest["classes"],
        "manifest": manifest,
    }

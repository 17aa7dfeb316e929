"""Score your own images with a trained PVQAE: ``python -m pvqae score`` (paper Sec. III-C2).

    python -m pvqae score --model reports/models --images /path/to/images --out scored/ \\
        [--masks /path/to/masks] [--class NAME] [--batch-size 16] [--no-prior] [--skip-bad]

The model folder is the pipeline's ``reports/models`` (``budget/pvqae.pt`` +
``prior/prior.pt``) or any folder holding ``pvqae.pt`` + ``prior.pt``; the class names come
from ``manifest.json`` at ``<model>/../prepared/`` or ``<model>/``. Every image is resized to
the model's size (:func:`pvqae.data.images.load_image`) and scored by
:func:`pvqae.scoring.score_batch`, exactly as the ``evaluate`` stage scores the test split
(default ``ScoreConfig``: image score = max of ``S = CE(routed, prior) x L2``).

Outputs under ``--out``:

- ``scores.csv``: one row per image: file, class, image_score, max_budget_ce,
  max_rec_error, the fraction of coarse patches routed to each level (``frac_<level>_routed``)
  and the prior's (``frac_<level>_prior``), the heatmap's name; with ``--masks`` also the
  mask file and label; with ``--skip-bad`` an ``error`` column.
- ``heatmaps/<name>.png``: the image with its score map overlaid beside the routed (and
  prior) level maps; ``<name>`` is the image's path below the deepest folder holding every
  input, ``/`` -> ``__`` (``test/crack/000.png`` -> ``crack__000.png`` for ``--images test``).
- ``metrics.json`` (with ``--masks``): :func:`pvqae.metrics.evaluate` per class and mean.

Class of an image (the per-class prior's class token, Sec. III-C1): ``--class NAME``; else
the only class of a one-class model; else the nearest enclosing folder named after a class
(``.../bottle/test/crack/000.png`` -> ``bottle``). A per-class prior with several classes
stops with an error when an image has none. Universal and "none" priors need no class.

Heavy modules (torch, matplotlib) are imported inside the functions that use them, so that
``python -m pvqae --help`` stays fast.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from pvqae.errors import DataError, PVQAEError

if TYPE_CHECKING:  # pragma: no cover
    from pvqae.model import PVQAE
    from pvqae.prior import BudgetPriorTransformer
    from pvqae.scoring import ScoreConfig

LEVELS = ("coarse", "median", "fine")
CSV_COLUMNS = ("file", "class", "image_score", "max_budget_ce", "max_rec_error",
               *(f"frac_{lv}_routed" for lv in LEVELS), *(f"frac_{lv}_prior" for lv in LEVELS), "heatmap")
FIX_MODELS = ("run `dvc repro` first (at least up to the prior stage: `dvc repro prior`), or pass --model "
              "the pipeline's reports/models folder")


# ----------------------------------------------------------------------------- the model folder

@dataclass
class ModelFiles:
    """Where the checkpoints and the manifest of a model folder are."""

    model: Path
    prior: Path
    manifest: Path


@dataclass
class Bundle:
    """A loaded model folder: PVQAE, Budget Prior Transformer (None for prior mode "none" or
    ``use_prior=False``), prior mode ("per-class", "universal", "none" or "off"), and the
    manifest's class names, image size and channels."""

    model: "PVQAE"
    prior: "BudgetPriorTransformer | None"
    prior_mode: str
    classes: list[str]
    image_size: int
    channels: int
    files: ModelFiles
    manifest: dict = field(default_factory=dict)


def find_model_files(model_dir: str | Path, manifest: str | Path | None = None) -> ModelFiles:
    """Locate ``pvqae.pt``, ``prior.pt`` and ``manifest.json`` of a model folder.

    Accepts the pipeline's ``reports/models`` (``budget/seed<k>/pvqae.pt`` and
    ``prior/seed<k>/prior.pt`` of the lowest training seed k, or ``budget/pvqae.pt`` and
    ``prior/prior.pt``; manifest in ``../prepared/``) or a flat folder (``pvqae.pt``, ``prior.pt``,
    ``manifest.json``), or an explicit ``manifest`` file. The prior path is returned even
    when it does not exist (``--no-prior`` does not need it).

    Raises:
        DataError: naming the folder, the files expected and how to get them.
    """
    from pvqae.paths import repo_path

    d = repo_path(Path(model_dir).expanduser())
    if not d.is_dir():
        raise DataError(f"model folder {d} does not exist; {FIX_MODELS}")
    seeded = sorted((p.parent for p in d.glob("budget/seed*/pvqae.pt") if p.parent.name[4:].isdigit()),
                    key=lambda p: int(p.name[4:]))
    layouts = [(sd / "pvqae.pt", d / "prior" / sd.name / "prior.pt") for sd in seeded[:1]]  # first training seed
    layouts += [(d / "budget" / "pvqae.pt", d / "prior" / "prior.pt"), (d / "pvqae.pt", d / "prior.pt")]
    found = next(((m, p) for m, p in layouts if m.is_file()), None)
    if found is None:
        raise DataError(f"no PVQAE checkpoint in model folder {d}: expected {d / 'budget' / 'seed0' / 'pvqae.pt'} "
                        f"(the pipeline's reports/models) or {d / 'pvqae.pt'}; {FIX_MODELS}")
    if manifest is not None:
        m = repo_path(Path(manifest).expanduser())
        if not m.is_file():
            raise DataError(f"manifest {m} does not exist; run `dvc repro prepare` (it writes "
                            f"reports/prepared/manifest.json)")
        return ModelFiles(found[0], found[1], m)
    manifests = [d.parent / "prepared" / "manifest.json", d / "manifest.json"]
    found_manifest = next((m for m in manifests if m.is_file()), None)
    if found_manifest is None:
        raise DataError(f"no manifest.json (class names, image size) for model folder {d}: expected "
                        f"{manifests[0]} or {manifests[1]}; run `dvc repro prepare`, or copy the pipeline's "
                        f"reports/prepared/manifest.json next to the checkpoints")
    return ModelFiles(found[0], found[1], found_manifest)


def load_bundle(model_dir: str | Path, use_prior: bool = True, manifest: str | Path | None = None) -> Bundle:
    """Load the model, the prior (unless ``use_prior`` is False) and the manifest of a model
    folder (see :func:`find_model_files`); models in eval mode on the CPU.

    Args:
        model_dir: the pipeline's ``reports/models`` or a folder with ``pvqae.pt`` + ``prior.pt``.
        use_prior: load the Budget Prior Transformer (False: ``prior`` None, mode "off").
        manifest: the prepare stage's ``manifest.json`` (default: looked up beside the models).

    Raises:
        DataError: missing files, or a manifest that disagrees with the model's image size.
    """
    from pvqae.checkpoint import load_checkpoint
    from pvqae.train import load_model, load_prior

    files = find_model_files(model_dir, manifest)
    with open(files.manifest) as f:
        meta = json.load(f)
    classes = list(meta.get("classes") or [])
    if not classes:
        raise DataError(f"manifest {files.manifest} lists no classes; re-run `dvc repro prepare`")
    model = load_model(files.model)
    if not model.dynamic:
        raise DataError(f"{files.model} is a static single-level VQ, not a PVQAE; pass the folder holding "
                        f"budget/pvqae.pt")
    size, ch = model.cfg.image_size, model.cfg.in_channels
    if int(meta.get("image_size", size)) != size or int(meta.get("channels", ch)) != ch:
        raise DataError(f"manifest {files.manifest} says {meta.get('image_size')} px x "
                        f"{meta.get('channels')} channels but model {files.model} is {size} px x {ch}; "
                        f"they come from different runs: run `dvc repro` to bring them in line")
    prior, mode = None, "off"
    if use_prior:
        if not files.prior.is_file():
            raise DataError(f"no Budget Prior Transformer at {files.prior}; {FIX_MODELS} (or score without "
                            f"a prior: --no-prior)")
        mode = str(load_checkpoint(files.prior)["mode"])
        prior = load_prior(files.prior)
        if prior is not None and prior.num_classes != len(classes) and mode == "per-class":
            raise DataError(f"prior {files.prior} has {prior.num_classes} classes but manifest {files.manifest} "
                            f"lists {len(classes)} ({', '.join(classes)}); run `dvc repro` to bring them in line")
    return Bundle(model, prior, mode, classes, size, ch, files, meta)


# ----------------------------------------------------------------------------- inputs

@dataclass
class Item:
    """One image to score: its file, the name of its heatmap, its mask (or None)."""

    path: Path
    rel: Path  # path below the folder it was found in (its name for a file given directly)
    name: str = ""
    mask: Path | None = None
    class_index: int | None = None


def _is_candidate(p: Path, exclude: Path | None, exts: frozenset[str]) -> bool:
    if not p.is_file() or p.name.startswith(".") or p.suffix.lower() not in exts:
        return False
    if p.stem.endswith("_mask"):  # MVTec-style ground truth next to the images
        return False
    return exclude is None or exclude not in p.resolve().parents


def list_images(inputs: Sequence[str | Path], exclude: str | Path | None = None) -> list[Item]:
    """Images to score: every image file below each folder (recursively; extensions
    :data:`pvqae.data.readers.IMAGE_EXTS`; hidden files, ``*_mask.*`` files and files under
    ``exclude`` skipped) and every file given directly, in that order, without duplicates.

    Raises:
        DataError: an input that does not exist, or no image at all.
    """
    from pvqae.data.readers import IMAGE_EXTS, raise_problems

    excl = Path(exclude).expanduser().resolve() if exclude is not None else None
    items: list[Item] = []
    seen: set[Path] = set()
    problems = []
    for inp in inputs:
        p = Path(inp).expanduser()
        if p.is_dir():
            found = sorted((f for f in p.rglob("*") if _is_candidate(f, excl, IMAGE_EXTS)),
                           key=lambda f: f.relative_to(p).parts)
            if not found:
                problems.append(f"folder {p} holds no image ({'/'.join(sorted(e[1:] for e in IMAGE_EXTS))})")
            pairs = [(f, f.relative_to(p)) for f in found]
        elif p.is_file():
            pairs = [(p, Path(p.name))]
        else:
            problems.append(f"{p} does not exist; pass image files or folders of images")
            continue
        for f, rel in pairs:
            if f.resolve() not in seen:
                seen.add(f.resolve())
                items.append(Item(f, rel))
    raise_problems(problems, "the --images given")
    if not items:
        raise DataError("no images given; pass --images FOLDER or files")
    # heatmap names: the path below the deepest folder holding every input, "/" -> "__"
    common = Path(os.path.commonpath([str(it.path.resolve().parent) for it in items]))
    used: set[str] = set()
    for it in items:
        base = "__".join(it.path.resolve().relative_to(common).with_suffix("").parts)
        name, k = base, 1
        while name in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        it.name = name
    return items


def find_mask(masks_dir: Path, item: Item) -> Path | None:
    """The mask of an image: ``<masks>/<sub>/<stem>.png`` or ``<stem>_mask.png`` (``<sub>`` =
    the image's sub-folder below the folder given, as in MVTec's ``ground_truth/<defect>/``),
    else the same names directly in ``<masks>``; None when there is none (a normal image)."""
    stem = item.rel.stem
    for d in (masks_dir / item.rel.parent, masks_dir):
        for name in (f"{stem}.png", f"{stem}_mask.png"):
            m = d / name
            if m.is_file() and m.resolve() != item.path.resolve():
                return m
    return None


def infer_class(path: Path, classes: Sequence[str]) -> int | None:
    """Index of the nearest enclosing folder of ``path`` named after a class, or None."""
    for parent in Path(path).parent.parts[::-1]:
        if parent in classes:
            return list(classes).index(parent)
    return None


def resolve_classes(items: Sequence[Item], classes: Sequence[str], prior_mode: str,
                    class_name: str | None = None) -> list[int | None]:
    """Class index of every image (see the module docstring for the rule).

    Raises:
        DataError: an unknown ``class_name`` (the message lists the valid ones), or images
            without class for a per-class prior with several classes.
    """
    classes = list(classes)
    if class_name is not None:
        if class_name not in classes:
            raise DataError(f"unknown class {class_name!r}; this model knows: {', '.join(classes)}")
        return [classes.index(class_name)] * len(items)
    if len(classes) == 1:
        return [0] * len(items)
    found = [infer_class(it.path, classes) for it in items]
    if prior_mode == "per-class":
        missing = [str(it.path) for it, c in zip(items, found) if c is None]
        if missing:
            shown = "; ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise DataError(f"the per-class prior needs each image's class, but {len(missing)} image(s) are in "
                            f"no folder named after a class ({', '.join(classes)}): {shown}. Pass --class NAME, "
                            f"or put the images in folders named after their class")
    return found


# ----------------------------------------------------------------------------- heatmaps

def heatmap_figure(image: np.ndarray, score_map: np.ndarray, routed: np.ndarray | None,
                   prior_levels: np.ndarray | None = None, mask: np.ndarray | None = None, title: str = "",
                   alpha: float = 0.5):
    """The image with its score map overlaid (hot colour map, ``alpha``; ground-truth
    contour in cyan when ``mask`` is given), beside the routed level map and, with a
    prior, the prior's level map (:func:`pvqae.plots.show_levels`)."""
    import matplotlib.pyplot as plt

    from pvqae import plots

    n = 1 + (routed is not None) + (prior_levels is not None)
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n + 0.6, 2.6), squeeze=False)
    axes = axes[0]
    size = image.shape[-1]
    axes[0].imshow(plots.to_rgb(image))
    im = axes[0].imshow(score_map, cmap="hot", alpha=alpha, vmin=0, vmax=max(float(score_map.max()), 1e-12))
    if mask is not None and mask.any():
        axes[0].contour(mask, levels=[0.5], colors="cyan", linewidths=0.8)
    axes[0].set_title("score map", fontsize=8)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    fig.colorbar(im, ax=axes[0], fraction=0.046, pad=0.04)
    if routed is not None:
        plots.show_levels(axes[1], routed, size, "routed budget")
    if prior_levels is not None:
        plots.show_levels(axes[n - 1], prior_levels, size, "prior budget")
    if n > 1:
        handles = [plt.Rectangle((0, 0), 1, 1, color=plots.LEVEL_CMAP(j)) for j in range(3)]
        fig.legend(handles, plots.LEVEL_LABELS, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


# ----------------------------------------------------------------------------- scoring

def _fractions(levels: np.ndarray | None) -> list[float | None]:
    if levels is None:
        return [None] * 3
    return [float((levels == k).mean()) for k in range(3)]


def _result_row(it: Item, classes: Sequence[str], image_score: float, max_budget_ce: float | None,
                max_rec_error: float, routed: np.ndarray | None, prior_levels: np.ndarray | None) -> dict:
    """One CSV row (without heatmap, mask and label)."""
    row = {"file": str(it.path), "class": classes[it.class_index] if it.class_index is not None else None,
           "image_score": image_score, "max_budget_ce": max_budget_ce, "max_rec_error": max_rec_error}
    for lv, v in zip(LEVELS, _fractions(routed)):
        row[f"frac_{lv}_routed"] = v
    for lv, v in zip(LEVELS, _fractions(prior_levels)):
        row[f"frac_{lv}_prior"] = v
    row["heatmap"] = None
    return row


def score_images(model_dir: str | Path, paths: Sequence[str | Path], out_dir: str | Path,
                 masks: str | Path | None = None, class_name: str | None = None, batch_size: int = 16,
                 use_prior: bool = True, skip_bad: bool = False, heatmaps: bool = True,
                 score_cfg: "ScoreConfig | None" = None, progress: bool = True) -> list[dict]:
    """Score images with a trained PVQAE and write ``scores.csv``, ``heatmaps/`` and (with
    ``masks``) ``metrics.json`` under ``out_dir`` (see the module docstring).

    Args:
        model_dir: the pipeline's ``reports/models`` or a folder with ``pvqae.pt`` + ``prior.pt``.
        paths: image files and/or folders (searched recursively).
        out_dir: output folder (created).
        masks: optional folder of ground-truth masks, matched by name (:func:`find_mask`);
            an image without mask counts as normal (label 0).
        class_name: class of every image (must be one of the manifest's classes).
        batch_size: images per forward pass.
        use_prior: False scores without the prior (routed reconstruction, ``S = S_rec``, the
            "no prior" row of Table III).
        skip_bad: list unreadable images in the CSV with an ``error`` instead of stopping.
        heatmaps: write ``heatmaps/<name>.png``.
        score_cfg: how maps become scores (default :class:`pvqae.scoring.ScoreConfig`, as the
            committed ``params.yaml``).
        progress: show a tqdm progress bar.

    Returns:
        The CSV rows as dicts (None for empty cells), in input order.

    Raises:
        DataError: missing model files, unknown class, an unreadable image or mask (naming
            every bad file; unless ``skip_bad``).
    """
    import matplotlib.pyplot as plt
    import torch
    from tqdm.auto import tqdm

    from pvqae.data.images import image_size_hw, load_image, load_mask, open_image
    from pvqae.data.readers import raise_problems
    from pvqae.scoring import score_batch

    if batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {batch_size}")
    bundle = load_bundle(model_dir, use_prior)
    masks_dir = Path(masks).expanduser() if masks is not None else None
    if masks_dir is not None and not masks_dir.is_dir():
        raise DataError(f"mask folder {masks_dir} does not exist; pass --masks a folder of <stem>.png or "
                        f"<stem>_mask.png files, or leave it out")
    items = list_images(paths, exclude=masks_dir)
    for it, c in zip(items, resolve_classes(items, bundle.classes, bundle.prior_mode, class_name)):
        it.class_index = c
        it.mask = find_mask(masks_dir, it) if masks_dir is not None else None
    # every file fully decoded first (a truncated file has a readable header): one error listing
    # every unreadable image or mask, before any output
    errors: dict[int, str] = {}
    for i, it in enumerate(items):
        try:
            open_image(it.path).close()
            if it.mask is not None:
                open_image(it.mask).close()
        except DataError as e:
            errors[i] = str(e)
    if errors and not skip_bad:
        raise_problems([f"{e} (or pass --skip-bad to list it in scores.csv and go on)" for e in errors.values()],
                       f"{len(items)} images")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    if heatmaps:
        (out / "heatmaps").mkdir(exist_ok=True)

    size, ch = bundle.image_size, bundle.channels
    rows: list[dict | None] = [None] * len(items)
    kept: list[tuple[int, np.ndarray, np.ndarray, int]] = []  # (index, score map, mask, label) for metrics
    model, prior = bundle.model, bundle.prior
    model.eval()
    todo = [i for i in range(len(items)) if i not in errors]
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    for batch in tqdm(batches, desc="score", unit="batch", disable=not progress):
        good, xs, ms = [], [], []
        for i in batch:
            it = items[i]
            try:
                x = load_image(it.path, size, ch)
                m = (load_mask(it.mask, size, image_size_hw(it.path), image_path=it.path)
                     if it.mask is not None else np.zeros((size, size), bool))
            except DataError as e:
                if not skip_bad:
                    raise
                errors[i] = str(e)
                continue
            good.append(i)
            xs.append(x)
            ms.append(m)
        if not good:
            continue
        x = torch.from_numpy(np.stack(xs))
        cidx = [items[i].class_index for i in good]
        ci = None if any(c is None for c in cidx) else torch.tensor(cidx, dtype=torch.long)
        with torch.no_grad():
            res = score_batch(model, x, ci, prior, score_cfg)
        for j, i in enumerate(good):
            it = items[i]
            smap = res.score_map[j].numpy()
            routed = res.routed_levels[j].numpy() if res.routed_levels is not None else None
            prior_lv = res.prior_levels[j].numpy() if res.prior_levels is not None else None
            row = _result_row(it, bundle.classes, float(res.image_score[j]),
                              float(res.budget_map[j].max()) if prior is not None else None,
                              float(res.rec_map[j].max()), routed, prior_lv)
            if heatmaps:
                fig = heatmap_figure(xs[j], smap, routed, prior_lv, ms[j] if it.mask is not None else None,
                                     f"{it.rel.as_posix()}  score {row['image_score']:.4g}")
                hp = out / "heatmaps" / f"{it.name}.png"
                fig.savefig(hp, dpi=100)
                plt.close(fig)
                row["heatmap"] = str(hp.relative_to(out))
            if masks_dir is not None:
                row["mask"] = str(it.mask) if it.mask is not None else None
                row["label"] = int(ms[j].any())
                kept.append((i, smap, ms[j], row["label"]))
            rows[i] = row
    for i, e in errors.items():
        c = items[i].class_index
        rows[i] = {"file": str(items[i].path), "class": bundle.classes[c] if c is not None else None, "error": e}
    cols = list(CSV_COLUMNS) + (["mask", "label"] if masks_dir is not None else []) + (["error"] if skip_bad else [])
    final = [{c: r.get(c) for c in cols} for r in rows if r is not None]
    write_csv(final, out / "scores.csv", cols)
    if masks_dir is not None:
        write_metrics(items, rows, kept, out / "metrics.json")
    return final


def write_csv(rows: list[dict], path: Path, cols: Sequence[str]) -> None:
    """Rows as CSV; None is an empty cell, floats keep 6 significant digits."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(cols))
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in r.items()})


def write_metrics(items: list[Item], rows: list, kept: list, path: Path) -> dict:
    """``metrics.json``: :func:`pvqae.metrics.evaluate` per class (``"all"`` when the class is
    unknown) on the images scored; labels = mask non-empty. Image AUROC and F1 need both
    normal and defective images of a class (else NaN -> null).

    Args:
        items: every image given; rows: their result rows (by index);
        kept: (index, score map, mask, label) of each image scored; path: the JSON file.
    """
    from pvqae.metrics import evaluate

    records: dict[str, dict[str, list]] = {}
    for i, smap, mask, label in kept:
        cls = rows[i]["class"] or "all"
        rec = records.setdefault(cls, {"labels": [], "image_scores": [], "masks": [], "maps": []})
        rec["labels"].append(label)
        rec["image_scores"].append(rows[i]["image_score"])
        rec["masks"].append(mask)
        rec["maps"].append(smap)
    result: dict[str, Any] = {"images": len(kept), "defective": int(sum(k[3] for k in kept)),
                              "skipped": len(items) - len(kept),
                              "note": "label = mask non-empty (no mask file = normal); image AUROC/F1 need both "
                                      "labels in a class; metrics at the model resolution"}
    if records:
        ev = evaluate({c: {k: np.asarray(v) for k, v in r.items()} for c, r in records.items()})
        result.update(ev)

    def clean(o):
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, float) and not np.isfinite(o):
            return None
        return o

    result = clean(result)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    return result


# ----------------------------------------------------------------------------- command line

def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``score`` sub-command's options."""
    p.add_argument("--model", required=True, metavar="DIR",
                   help="the pipeline's reports/models (budget/pvqae.pt, prior/prior.pt) or a folder with pvqae.pt "
                        "+ prior.pt; manifest.json from DIR/../prepared/ or DIR/")
    p.add_argument("--images", required=True, nargs="+", metavar="PATH",
                   help="image files and/or folders (searched recursively; *_mask.* files skipped)")
    p.add_argument("--out", required=True, metavar="DIR", help="writes scores.csv, heatmaps/, metrics.json")
    p.add_argument("--masks", metavar="DIR",
                   help="ground-truth masks <stem>.png or <stem>_mask.png (same sub-folders as the images, or flat); "
                        "an image without mask is normal; writes metrics.json")
    p.add_argument("--class", dest="class_name", metavar="NAME",
                   help="class of every image (default: the only class, or the nearest folder named after a class)")
    p.add_argument("--batch-size", type=int, default=16, metavar="N")
    p.add_argument("--prior", action=argparse.BooleanOptionalAction, default=True,
                   help="score with the Budget Prior Transformer (default) or without (S = routed L2 error)")
    p.add_argument("--skip-bad", action="store_true",
                   help="list unreadable images in scores.csv (error column) instead of stopping")
    p.add_argument("--no-heatmaps", dest="heatmaps", action="store_false", help="write scores.csv only")
    return p


def run(args: argparse.Namespace) -> int:
    """Run the ``score`` sub-command; print a summary, or the error (exit status 2) when the
    input is bad."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    try:
        rows = score_images(args.model, args.images, args.out, masks=args.masks, class_name=args.class_name,
                            batch_size=args.batch_size, use_prior=args.prior, skip_bad=args.skip_bad,
                            heatmaps=args.heatmaps)
    except PVQAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bad = sum(1 for r in rows if r.get("error"))
    print(f"scored {len(rows) - bad} image(s){f', {bad} unreadable' if bad else ''}; wrote "
          f"{Path(args.out) / 'scores.csv'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m pvqae.score_cli`` (same as ``python -m pvqae score``)."""
    p = add_arguments(argparse.ArgumentParser(prog="python -m pvqae score", description=__doc__.splitlines()[0]))
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""Score your own images with a trained PVQAE: ``python -m pvqae score`` (paper Sec. III-C2).

    python -m pvqae score --model reports/models --images /path/to/images --out scored/ \\
        [--masks /path/to/masks] [--class NAME] [--batch-size 16] [--no-prior] [--skip-bad]

The model folder (``--model``) is the pipeline's ``reports/models`` or any folder holding
``pvqae.pt`` + ``prior.pt``, with a ``manifest.json`` of the class names. How it is found and
checked, how images and masks are found and how an image's class is chosen is
:mod:`pvqae.score_inputs`; every input is validated there before any output is written.
Every image is resized to the model's size (:func:`pvqae.data.images.load_image`) and scored
by :func:`pvqae.scoring.score_batch`, exactly as the ``evaluate`` stage scores the test split
(default ``ScoreConfig``: image score = max of ``S = CE(routed, prior) x L2``).

Outputs under ``--out``:

- ``scores.csv``: one row per image: file, class, image_score, max_budget_ce,
  max_rec_error, the fraction of coarse patches routed to each level (``frac_<level>_routed``)
  and the prior's (``frac_<level>_prior``), the heatmap's name; with ``--masks`` also the
  mask file and label; with ``--skip-bad`` an ``error`` column.
- ``heatmaps/<name>.png``: the image with its score map overlaid beside the routed (and
  prior) level maps; ``<name>`` is the image's path below the deepest folder holding every
  input, ``/`` -> ``__`` (``test/crack/000.png`` -> ``crack__000.png`` for ``--images test``).
- ``metrics.json`` (with ``--masks``): :func:`pvqae.evaluation.evaluate_scores` per class and mean.

Heavy modules (torch, matplotlib) are imported inside the functions that use them, so that
``python -m pvqae --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from pvqae.errors import DataError, PVQAEError
from pvqae.score_inputs import (  # noqa: F401  (importable from here too, as scripts and tests do)
    Bundle,
    Item,
    ModelFiles,
    collect_inputs,
    find_mask,
    find_model_files,
    infer_class,
    list_images,
    load_bundle,
    resolve_classes,
)

if TYPE_CHECKING:  # pragma: no cover
    from pvqae.scoring import ScoreConfig


def csv_columns(masks: bool = False, skip_bad: bool = False) -> list[str]:
    """The columns of ``scores.csv`` (with ``--masks`` also mask and label, with ``--skip-bad``
    error)."""
    from pvqae.model import LEVEL_NAMES

    return ["file", "class", "image_score", "max_budget_ce", "max_rec_error",
            *(f"frac_{lv}_{which}" for which in ("routed", "prior") for lv in LEVEL_NAMES), "heatmap",
            *(["mask", "label"] if masks else []), *(["error"] if skip_bad else [])]


def __getattr__(name: str):
    """``CSV_COLUMNS`` (the columns of :func:`csv_columns` without options), built on first use:
    the level names come from :mod:`pvqae.model`, whose torch import would slow down ``--help``."""
    if name == "CSV_COLUMNS":
        return tuple(csv_columns())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------- scoring

def _result_row(it: Item, res, j: int) -> dict:
    """The CSV row of image ``j`` of a :class:`pvqae.scoring.ScoreOutput` (heatmap, mask and
    label filled in by the caller)."""
    from pvqae.model import LEVEL_NAMES
    from pvqae.plots import level_fractions

    has_prior = res.prior_levels is not None
    row = {"file": str(it.path), "class": it.class_name, "image_score": float(res.image_score[j]),
           "max_budget_ce": float(res.budget_map[j].max()) if has_prior else None,
           "max_rec_error": float(res.rec_map[j].max()), "heatmap": None}
    for which, levels in (("routed", res.routed_levels), ("prior", res.prior_levels)):
        fractions = level_fractions(levels[j]) if levels is not None else [None] * len(LEVEL_NAMES)
        row.update({f"frac_{lv}_{which}": v for lv, v in zip(LEVEL_NAMES, fractions)})
    return row


def score_images(model_dir: str | Path, paths: Sequence[str | Path], out_dir: str | Path,
                 masks: str | Path | None = None, class_name: str | None = None, batch_size: int = 16,
                 use_prior: bool = True, skip_bad: bool = False, heatmaps: bool = True,
                 score_cfg: "ScoreConfig | None" = None, progress: bool = True) -> list[dict]:
    """Score images with a trained PVQAE and write ``scores.csv``, ``heatmaps/`` and (with
    ``masks``) ``metrics.json`` under ``out_dir`` (see the module docstring).

    Args:
        model_dir: see :func:`load_bundle`; paths: image files and/or folders (recursive).
        masks: optional folder of ground-truth masks, matched by name
            (:func:`pvqae.score_inputs.find_mask`);
            an image without mask counts as normal (label 0).
        class_name: class of every image (one of the manifest's classes).
        use_prior: False scores without the prior (routed reconstruction, ``S = S_rec``, the
            "no prior" row of Table III).
        skip_bad: list unreadable images in the CSV with an ``error`` instead of stopping.
        heatmaps: write ``heatmaps/<name>.png`` (:func:`pvqae.plots.heatmap_figure`).
        score_cfg: how maps become scores (default :class:`pvqae.scoring.ScoreConfig`).

    Returns:
        The CSV rows as dicts (None for empty cells), in input order.

    Raises:
        DataError: missing model files, unknown class, an unreadable image or mask (naming
            every bad file before any output is written; unless ``skip_bad``).
    """
    import matplotlib.pyplot as plt
    import torch
    from tqdm.auto import tqdm

    from pvqae.data.images import image_size_hw, load_image, load_mask
    from pvqae.plots import heatmap_figure
    from pvqae.records import write_csv
    from pvqae.scoring import score_batch

    if batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {batch_size}")
    bundle = load_bundle(model_dir, use_prior)
    items, masks_dir, errors = collect_inputs(paths, bundle, masks, class_name, skip_bad)  # before any output
    out = Path(out_dir).expanduser()
    (out / "heatmaps" if heatmaps else out).mkdir(parents=True, exist_ok=True)

    size = bundle.image_size
    rows: dict[int, dict] = {}
    scored: list[tuple[str | None, float, np.ndarray, np.ndarray]] = []  # class, score, map, mask: metrics
    todo = [i for i in range(len(items)) if i not in errors]
    for start in tqdm(range(0, len(todo), batch_size), desc="score", unit="batch", disable=not progress):
        batch = []  # (index, image, mask) of the images of this batch that load
        for i in todo[start:start + batch_size]:
            it = items[i]
            try:
                batch.append((i, load_image(it.path, size, bundle.channels),
                              load_mask(it.mask, size, image_size_hw(it.path), image_path=it.path)
                              if it.mask is not None else np.zeros((size, size), bool)))
            except DataError as e:
                if not skip_bad:
                    raise
                errors[i] = str(e)
        if not batch:
            continue
        cidx = [items[i].class_index for i, _, _ in batch]
        ci = None if None in cidx else torch.tensor(cidx, dtype=torch.long)
        res = score_batch(bundle.model, torch.from_numpy(np.stack([x for _, x, _ in batch])), ci, bundle.prior,
                          score_cfg)
        for j, (i, x, m) in enumerate(batch):
            it, row = items[i], _result_row(items[i], res, j)
            smap = res.score_map[j].numpy()
            if heatmaps:
                lv = [None if t is None else t[j].numpy() for t in (res.routed_levels, res.prior_levels)]
                fig = heatmap_figure(x, smap, *lv, m if it.mask is not None else None,
                                     f"{it.rel.as_posix()}  score {row['image_score']:.4g}")
                hp = out / "heatmaps" / f"{it.name}.png"
                fig.savefig(hp, dpi=100)
                plt.close(fig)
                row["heatmap"] = str(hp.relative_to(out))
            if masks_dir is not None:
                row["mask"], row["label"] = str(it.mask) if it.mask is not None else None, int(m.any())
                scored.append((it.class_name, row["image_score"], smap, m))
            rows[i] = row
    rows.update({i: {"file": str(items[i].path), "class": items[i].class_name, "error": e} for i, e in errors.items()})
    cols = csv_columns(masks_dir is not None, skip_bad)
    final = [{c: rows[i].get(c) for c in cols} for i in sorted(rows)]
    write_csv(final, out / "scores.csv", cols)
    if masks_dir is not None:
        write_metrics(scored, len(items), out / "metrics.json")
    return final


def write_metrics(scored: Sequence[tuple[str | None, float, np.ndarray, np.ndarray]], n_images: int,
                  path: Path) -> dict:
    """``metrics.json``: :func:`pvqae.evaluation.evaluate_scores` per class (``"all"`` for
    images of unknown class) and mean, on the images scored; label = mask non-empty. Image
    AUROC and F1 need normal and defective images in a class (else NaN, written as null).

    ``scored``: (class name or None, image score, score map, mask) of each image scored, of
    ``n_images`` given (the rest count as skipped).
    """
    import torch

    from pvqae.evaluation import evaluate_scores
    from pvqae.records import finite_or_none, write_json

    result: dict[str, Any] = {"images": len(scored), "defective": int(sum(m.any() for *_, m in scored)),
                              "skipped": n_images - len(scored),
                              "note": "label = mask non-empty (no mask file = normal); image AUROC/F1 need both "
                                      "labels in a class; metrics at the model resolution"}
    if scored:
        names = [c or "all" for c, *_ in scored]
        classes = list(dict.fromkeys(names))
        masks = np.stack([m for *_, m in scored])
        split = {"classes": classes, "class_index": torch.tensor([classes.index(c) for c in names]),
                 "label": torch.from_numpy(masks.any((1, 2)).astype(np.int64)), "mask": torch.from_numpy(masks)}
        result.update(evaluate_scores(split, {"image": np.array([s for _, s, _, _ in scored]),
                                              "maps": np.stack([smap for _, _, smap, _ in scored])}))
    result = finite_or_none(result)
    write_json(result, path)
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

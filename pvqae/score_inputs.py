"""What ``python -m pvqae score`` reads: the trained-model folder and the user's images and
masks, found and validated here so that a bad input stops the command before any output.

The model folder is the pipeline's ``reports/models`` (``budget/pvqae.pt`` +
``prior/prior.pt``, or ``budget/seed<k>/`` + ``prior/seed<k>/``) or any folder holding
``pvqae.pt`` + ``prior.pt``; the class names come from ``manifest.json`` at
``<model>/../prepared/`` or ``<model>/`` (:func:`find_model_files`, :func:`load_bundle`,
which also checks that checkpoints and manifest come from the same run).

Images are image files or folders searched recursively (:func:`list_images`); masks are
matched by name (:func:`find_mask`). Class of an image (the per-class prior's class token,
Sec. III-C1): ``--class NAME``; else the only class of a one-class model; else the nearest
enclosing folder named after a class (``.../bottle/test/crack/000.png`` -> ``bottle``). A
per-class prior with several classes stops with an error when an image has none. Universal
and "none" priors need no class (:func:`resolve_classes`). :func:`collect_inputs` does all of
this and decodes every image and mask in full (:func:`find_unreadable`).

Heavy modules (torch) are imported inside the functions that use them, so that
``python -m pvqae --help`` stays fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pvqae.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from pvqae.model import PVQAE
    from pvqae.prior import BudgetPriorTransformer

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
    """Load the model, the prior (unless ``use_prior`` is False: ``prior`` None, mode "off")
    and the manifest (default: looked up beside the models) of a model folder (see
    :func:`find_model_files`); models in eval mode on the CPU.

    Raises:
        DataError: missing files, or a manifest that disagrees with the model or the prior.
    """
    from pvqae.checkpoint import load_checkpoint
    from pvqae.model import PVQAE
    from pvqae.prior import load_prior

    files = find_model_files(model_dir, manifest)
    with open(files.manifest) as f:
        meta = json.load(f)
    classes = list(meta.get("classes") or [])
    if not classes:
        raise DataError(f"manifest {files.manifest} lists no classes; re-run `dvc repro prepare`")
    model = PVQAE.from_checkpoint(files.model)
    if not model.dynamic:
        raise DataError(f"{files.model} is a static single-level VQ, not a PVQAE; pass the folder holding "
                        f"budget/pvqae.pt")
    size, ch = model.cfg.image_size, model.cfg.in_channels
    if ch not in (1, 3):
        raise DataError(f"{files.model} is a PVQAE-F model (it reads {ch}-channel backbone features, input.kind: "
                        f"features); this command scores pixel models: score PVQAE-F with `dvc repro evaluate`")
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
    """One image to score: its file, the name of its heatmap, its mask (or None), its class."""

    path: Path
    rel: Path  # path below the folder it was found in (its name for a file given directly)
    name: str = ""
    mask: Path | None = None
    class_index: int | None = None
    class_name: str | None = None


def _is_candidate(p: Path, exclude: Path | None, exts: frozenset[str]) -> bool:
    """Whether ``p`` is an image to score: a visible file with an image extension, not a
    ``*_mask.*`` file, not under ``exclude``."""
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


# ----------------------------------------------------------------------------- validation


def find_unreadable(items: Sequence[Item]) -> dict[int, str]:
    """Index -> error of every image or mask that does not decode in full (a truncated file
    has a readable header, so opening is not enough)."""
    from pvqae.data.images import open_image

    errors: dict[int, str] = {}
    for i, it in enumerate(items):
        try:
            for p in (it.path, it.mask) if it.mask is not None else (it.path,):
                open_image(p).close()
        except DataError as e:
            errors[i] = str(e)
    return errors


def collect_inputs(paths: Sequence[str | Path], bundle: Bundle, masks: str | Path | None = None,
                   class_name: str | None = None, skip_bad: bool = False,
                   ) -> tuple[list[Item], Path | None, dict[int, str]]:
    """The images to score with their class and mask, every one decoded in full, so that a
    bad input stops the command before it writes anything.

    Args:
        paths: image files and/or folders (:func:`list_images`; files under ``masks`` skipped).
        bundle: the loaded model folder (its classes and prior mode, :func:`resolve_classes`).
        masks: optional folder of ground-truth masks, matched by name (:func:`find_mask`).
        class_name: class of every image (one of the manifest's classes).
        skip_bad: return unreadable images as errors instead of stopping.

    Returns:
        The items (class and mask filled in), the mask folder (None without ``masks``) and
        index -> error of every unreadable image or mask (empty unless ``skip_bad``).

    Raises:
        DataError: a missing mask folder, a bad input or class (see :func:`list_images`,
            :func:`resolve_classes`), or one error naming every unreadable file (unless
            ``skip_bad``).
    """
    from pvqae.data.readers import raise_problems

    masks_dir = Path(masks).expanduser() if masks is not None else None
    if masks_dir is not None and not masks_dir.is_dir():
        raise DataError(f"mask folder {masks_dir} does not exist; pass --masks a folder of <stem>.png or "
                        f"<stem>_mask.png files, or leave it out")
    items = list_images(paths, exclude=masks_dir)
    for it, c in zip(items, resolve_classes(items, bundle.classes, bundle.prior_mode, class_name)):
        it.class_index, it.class_name = c, bundle.classes[c] if c is not None else None
        it.mask = find_mask(masks_dir, it) if masks_dir is not None else None
    errors = find_unreadable(items)  # one error naming every bad file, before any output
    if errors and not skip_bad:
        raise_problems([f"{e} (or pass --skip-bad to list it in scores.csv and go on)" for e in errors.values()],
                       f"{len(items)} images")
    return items, masks_dir, errors

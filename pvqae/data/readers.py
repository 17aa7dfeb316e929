"""Readers of the datasets' original folder layouts.

Past ~350 lines on purpose: one reader per layout (MVTec AD, BTAD, MTSD, folder), all sharing
the error collection that names every bad path with its fix.

Every reader returns a deterministically sorted ``list[Sample]`` and raises one
:class:`~pvqae.errors.DataError` that lists *all* layout problems it found (missing mask,
mask without image, empty class...), each naming the offending path and the fix.
Readers only look at file names; :func:`pvqae.data.images.validate_samples` decodes the files.

Layouts:

- MVTec AD (``read_mvtec``, also any folder in that layout, kind ``"folder"``)::

      <class>/train/good/*.png
      <class>/test/good/*.png
      <class>/test/<defect>/*.png
      <class>/ground_truth/<defect>/<stem>_mask.png

- BTAD (``read_btad``)::

      01/train/ok/*.bmp|png   01/test/ok/*   01/test/ko/*   01/ground_truth/ko/<stem>.png|bmp

- MTSD (``read_mtsd``)::

      MT_Free/Imgs/<name>.jpg + <name>.png (mask)   MT_<Kind>/Imgs/<name>.jpg + <name>.png
"""

from __future__ import annotations

import inspect
import math
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pvqae.data.records import NORMAL, Sample, sort_key
from pvqae.errors import DataError
from pvqae.paths import repo_path

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
KINDS = ("mvtec", "btad", "mtsd", "folder")
MTSD_MASK_THRESHOLD = 128  # MTSD masks are anti-aliased grey levels; >= 128 is half coverage
MAX_LISTED = 50

_EXAMPLES = {
    "mvtec": "a folder holding <class>/train/good, e.g. ../shared/data/mvtec_ad",
    "folder": "a folder holding <class>/train/good (MVTec AD layout)",
    "btad": "the BTAD folder holding 01/, 02/, 03/",
    "mtsd": "the MTSD folder holding MT_Free/, MT_Crack/..., e.g. ../shared/data/MTSD",
}


# --------------------------------------------------------------------------- helpers


def _is_image(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS


def _list_images(folder: Path, exts: Iterable[str] = IMAGE_EXTS) -> list[Path]:
    exts = frozenset(exts)
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.iterdir() if _is_image(p) and p.suffix.lower() in exts),
        key=lambda p: p.name,
    )


def _subdirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def _resolve_root(root: str | Path, kind: str) -> Path:
    p = repo_path(Path(root).expanduser())
    if not p.exists():
        raise DataError(
            f"dataset folder {p} does not exist; set data.source in params.yaml to "
            f"{_EXAMPLES.get(kind, 'the dataset folder')} (relative paths are read from the "
            f"repository root)"
        )
    if not p.is_dir():
        raise DataError(f"dataset path {p} is a file, not a folder; set data.source in "
                        f"params.yaml to {_EXAMPLES.get(kind, 'the dataset folder')}")
    return p.resolve()


def raise_problems(problems: Sequence[str], what: str) -> None:
    """Raise one DataError listing every problem (the first ``MAX_LISTED`` verbatim)."""
    if not problems:
        return
    lines = [f"  - {p}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  ... and {len(problems) - MAX_LISTED} more")
    raise DataError(f"{len(problems)} problem(s) in {what}:\n" + "\n".join(lines))


def _stems(images: list[Path], problems: list[str]) -> dict[str, Path]:
    """Map stem -> image; two images with the same stem (a.png + a.jpg) are a problem."""
    out: dict[str, Path] = {}
    for p in images:
        if p.stem in out:
            problems.append(f"two images share the name {p.stem!r}: {out[p.stem]} and {p}; "
                            f"remove one of them")
            continue
        out[p.stem] = p
    return out


def _mask_index(gt_dir: Path, suffixes: Sequence[str]) -> dict[str, list[Path]]:
    """Map image stem -> candidate mask files in ``gt_dir`` (``<stem><suffix>.<ext>``)."""
    index: dict[str, list[Path]] = defaultdict(list)
    for m in _list_images(gt_dir):
        keys = []
        for suf in suffixes:
            if not suf:
                keys.append(m.stem)
            elif m.stem.endswith(suf) and len(m.stem) > len(suf):
                keys.append(m.stem[: -len(suf)])
        for k in dict.fromkeys(keys):
            index[k].append(m)
    return index


def _class_dirs(root: Path, classes: Sequence[str] | None, kind: str,
                layout_hint: str) -> dict[str, Path]:
    """``{class name: class folder}``; ``root`` may itself be a class folder."""
    if isinstance(classes, str):
        classes = [classes]
    if (root / "train").is_dir():  # root IS a class folder
        found = {root.name: root}
        if classes is not None and root.name not in classes:
            raise DataError(f"{root} is the folder of class {root.name!r}, but classes="
                            f"{list(classes)} was asked for; fix data.classes in params.yaml")
        return found
    if classes is None:
        found = {d.name: d for d in _subdirs(root) if (d / "train").is_dir()}
        if not found:
            seen = [d.name for d in _subdirs(root)][:20]
            raise DataError(
                f"no classes found in {root}: expected {layout_hint} ({kind} layout); "
                f"subfolders there: {seen or 'none'}; set data.source in params.yaml to the "
                f"folder that holds the class folders")
        return found
    problems = []
    found = {}
    for c in classes:
        d = root / c
        if not d.is_dir():
            problems.append(f"class folder {d} does not exist; fix data.classes in "
                            f"params.yaml (available: {[x.name for x in _subdirs(root)][:30]})")
        elif not (d / "train").is_dir():
            problems.append(f"class folder {d} has no train/ folder ({layout_hint})")
        else:
            found[c] = d
    raise_problems(problems, f"{kind} dataset {root}")
    if not found:
        raise DataError(f"no classes asked for in {root}; set data.classes in params.yaml")
    return found


def _read_layout(root: Path, classes, *, kind: str, normal_dir: str, mask_suffixes,
                 mask_hint: str, mask_threshold: int | None) -> list[Sample]:
    layout_hint = f"<class>/train/{normal_dir}/<images>"
    class_dirs = _class_dirs(root, classes, kind, layout_hint)
    problems: list[str] = []
    samples: list[Sample] = []
    for cls, cdir in sorted(class_dirs.items()):
        train = _list_images(cdir / "train" / normal_dir)
        if not train:
            problems.append(f"empty class {cls!r}: {cdir / 'train' / normal_dir} has no images "
                            f"({'/'.join(sorted(e[1:] for e in IMAGE_EXTS))}); add normal "
                            f"training images or leave the class out of data.classes")
        for p in train:
            samples.append(Sample(p, cls, "train", 0, NORMAL, None, mask_threshold))

        gt_root = cdir / "ground_truth"
        used_masks: set[Path] = set()
        test_dirs = {d.name: d for d in _subdirs(cdir / "test")}
        for dname, tdir in sorted(test_dirs.items()):
            normal = dname == normal_dir
            defect = NORMAL if normal else dname
            stems = _stems(_list_images(tdir), problems)
            masks = _mask_index(gt_root / dname, mask_suffixes)
            for stem, img in sorted(stems.items()):
                cands = masks.get(stem, [])
                if len(cands) > 1:
                    problems.append(f"image {img} has several masks: "
                                    f"{[str(c) for c in cands]}; keep one")
                mask = cands[0] if cands else None
                if mask is not None:
                    used_masks.add(mask)
                if not normal and mask is None:
                    problems.append(
                        f"defective test image {img} has no mask: expected "
                        f"{gt_root / dname / mask_hint.format(stem=stem)}; add the mask or "
                        f"remove the image")
                    continue
                samples.append(Sample(img, cls, "test", 0 if normal else 1, defect, mask,
                                      mask_threshold))
        for gdir in _subdirs(gt_root):
            for m in _list_images(gdir):
                if m not in used_masks:
                    problems.append(
                        f"mask {m} has no image: expected an image named like "
                        f"{cdir / 'test' / gdir.name / mask_stem(m.stem, mask_suffixes)}.png; "
                        f"remove the mask or add the image")
    raise_problems(problems, f"{kind} dataset {root}")
    return sorted(samples, key=sort_key)


def mask_stem(stem: str, suffixes: Sequence[str]) -> str:
    for suf in suffixes:
        if suf and stem.endswith(suf):
            return stem[: -len(suf)]
    return stem


# --------------------------------------------------------------------------- readers


def read_mvtec(root: str | Path, classes: Sequence[str] | None = None, *,
               mask_threshold: int | None = None) -> list[Sample]:
    """Read a folder in MVTec AD layout (the real MVTec AD, or any folder laid out like it).

    ``root`` holds class folders (those with a ``train/`` subfolder are classes, or the
    ``classes`` given), or is itself one class folder (class name = folder name).
    Masks are ``ground_truth/<defect>/<stem>_mask.<ext>`` (``<stem>.<ext>`` is accepted too).
    ``mask_threshold``: None = masks must be strictly binary; an int binarises grey masks.
    """
    root = _resolve_root(root, "mvtec")
    return _read_layout(root, classes, kind="MVTec-layout", normal_dir="good",
                        mask_suffixes=("_mask", ""), mask_hint="{stem}_mask.png",
                        mask_threshold=mask_threshold)


def read_btad(root: str | Path, classes: Sequence[str] | None = None, *,
              mask_threshold: int | None = None) -> list[Sample]:
    """Read BTAD (``01..03/{train/ok, test/ok, test/ko, ground_truth/ko/<stem>.png|bmp}``).

    Normal images get defect ``"good"``; defective ones ``"ko"``.
    """
    root = _resolve_root(root, "btad")
    return _read_layout(root, classes, kind="BTAD", normal_dir="ok",
                        mask_suffixes=("", "_mask"), mask_hint="{stem}.png",
                        mask_threshold=mask_threshold)


def parse_name_list(path: str | Path) -> list[str]:
    """Image names (stems) from a split file such as DifferNet's
    ``differnet_mtd_train_filenames.txt`` (one ``exp6_num_34208.jpg`` per line).

    Robust to: blank lines, ``#`` comments, CRLF, a BOM, commas/semicolons/quotes/brackets
    (a pasted Python list), folder prefixes (``MT_Free/Imgs/x.jpg``) and missing extensions.
    Order is kept, duplicates dropped.
    """
    p = repo_path(Path(path).expanduser())
    if not p.is_file():
        raise DataError(f"train list {p} does not exist; fix data.train_list in params.yaml "
                        f"(e.g. ../shared/data/MTSD/differnet_mtd_train_filenames.txt) or "
                        f"set it to null for a seeded split")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read train list {p}: {e}; replace it with a text file of "
                        f"image names, one per line") from e
    names: list[str] = []
    seen: set[str] = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for tok in re.findall(r"[^\s,;\"'\[\]()]+", line):
            base = re.split(r"[\\/]", tok)[-1]
            stem, dot, ext = base.rpartition(".")
            if dot and "." + ext.lower() in IMAGE_EXTS:
                base = stem
            if base and base not in seen:
                seen.add(base)
                names.append(base)
    if not names:
        raise DataError(f"train list {p} holds no image names; expected one name per line "
                        f"like exp6_num_34208.jpg")
    return names


def read_mtsd(root: str | Path, train_list: str | Path | None = None, seed: int = 0,
              train_fraction: float = 0.8, *, class_name: str = "mtsd",
              mask_threshold: int | None = MTSD_MASK_THRESHOLD) -> list[Sample]:
    """Read the Magnetic Tile Surface Defects dataset (one class, ``class_name``).

    ``MT_Free`` images are normal, ``MT_<Kind>`` images defective with kind ``<kind>``
    (lower case). Each ``.jpg`` has a same-name ``.png`` mask (grey-level, anti-aliased:
    binarised with ``mask_threshold``).

    Train split: with ``train_list`` (e.g. ``differnet_mtd_train_filenames.txt``, the
    published DifferNet split: 761 MT_Free names) those MT_Free images are train, the other
    MT_Free and all defective images test. Without it, a seeded split of MT_Free:
    ``floor(train_fraction * n)`` images train (0.8 -> 761 of 952). A list file sitting in
    ``root`` is never used implicitly: pass it explicitly.
    """
    root = _resolve_root(root, "mtsd")
    kind_dirs = [d for d in _subdirs(root) if d.name.startswith("MT_")]
    if not kind_dirs:
        raise DataError(f"no MT_<Kind> folders in {root}: expected MT_Free/Imgs/*.jpg, "
                        f"MT_Crack/Imgs/*.jpg... (MTSD layout); set data.source in params.yaml "
                        f"to {_EXAMPLES['mtsd']}")
    if not any(d.name == "MT_Free" for d in kind_dirs):
        raise DataError(f"empty class {class_name!r}: {root / 'MT_Free'} does not exist, so "
                        f"there are no normal training images; set data.source in params.yaml "
                        f"to {_EXAMPLES['mtsd']}")
    if not (0.0 < float(train_fraction) < 1.0):
        raise DataError(f"train_fraction must be in (0, 1), got {train_fraction}; fix "
                        f"data.train_fraction in params.yaml")
    problems: list[str] = []
    by_kind: dict[str, list[tuple[str, Path, Path | None]]] = {}
    where: dict[str, str] = {}
    for d in kind_dirs:
        folder = d / "Imgs" if (d / "Imgs").is_dir() else d
        kind = d.name[3:].lower()
        kind = NORMAL if kind == "free" else kind
        imgs = _stems(_list_images(folder, IMAGE_EXTS - {".png"}), problems)
        masks = {m.stem: m for m in _list_images(folder, {".png"})}
        rows = []
        for stem, img in sorted(imgs.items()):
            mask = masks.get(stem)
            if mask is None and kind != NORMAL:
                problems.append(f"defective image {img} has no mask: expected "
                                f"{folder / (stem + '.png')}; add the mask or remove the image")
                continue
            rows.append((stem, img, mask))
            where.setdefault(stem, d.name)
        for stem, m in sorted(masks.items()):
            if stem not in imgs:
                problems.append(f"mask {m} has no image: expected {folder / (stem + '.jpg')}; "
                                f"remove the mask or add the image")
        by_kind[kind] = rows
    raise_problems(problems, f"MTSD dataset {root}")

    free = by_kind.get(NORMAL, [])
    if not free:
        raise DataError(f"empty class {class_name!r}: {root / 'MT_Free'} has no .jpg images; "
                        f"add the defect-free images")
    free_stems = [s for s, _, _ in free]
    if train_list is not None:
        names = parse_name_list(train_list)
        known = set(free_stems)
        unknown = [n for n in names if n not in known]
        if unknown:
            shown = [f"{n} (in {where[n]}, not MT_Free)" if n in where else n
                     for n in unknown[:MAX_LISTED]]
            more = f" ... and {len(unknown) - MAX_LISTED} more" if len(unknown) > MAX_LISTED else ""
            raise DataError(
                f"train list {train_list} names {len(unknown)} image(s) that are not "
                f"defect-free images in {root / 'MT_Free'}: {', '.join(shown)}{more}; fix the "
                f"list or data.source")
        train = set(names)
    else:
        order = np.random.default_rng(seed).permutation(len(free_stems))
        n_train = math.floor(float(train_fraction) * len(free_stems) + 1e-9)
        train = {free_stems[i] for i in order[:n_train]}

    samples = []
    for kind, rows in by_kind.items():
        for stem, img, mask in rows:
            if kind == NORMAL:
                split = "train" if stem in train else "test"
                samples.append(Sample(img, class_name, split, 0, NORMAL, mask, mask_threshold))
            else:
                samples.append(Sample(img, class_name, "test", 1, kind, mask, mask_threshold))
    return sorted(samples, key=sort_key)


def read_dataset(kind: str, root: str | Path, classes: Sequence[str] | None = None,
                 **kw) -> list[Sample]:
    """Dispatch on ``kind`` in {"mvtec", "btad", "mtsd", "folder"} ("folder" = MVTec layout).

    Extra keyword options go to the reader (``train_list``, ``seed``, ``train_fraction``,
    ``class_name`` for MTSD; ``mask_threshold`` for all). Options set to None that a reader
    does not take are dropped, so one params.yaml section can serve every kind; a non-None
    option that does not apply is a DataError.
    """
    k = str(kind).strip().lower()
    readers = {"mvtec": read_mvtec, "folder": read_mvtec, "btad": read_btad,
               "mtsd": read_mtsd}
    if k not in readers:
        raise DataError(f"unknown dataset kind {kind!r}; set data.kind in params.yaml to one "
                        f"of {', '.join(KINDS)}")
    fn = readers[k]
    accepted = set(inspect.signature(fn).parameters) - {"root", "classes"}
    wrong = [n for n, v in kw.items() if n not in accepted and v is not None]
    if wrong:
        raise DataError(f"option(s) {wrong} do not apply to dataset kind {k!r} (it takes "
                        f"{sorted(accepted)}); remove them from the data section of "
                        f"params.yaml")
    kw = {n: v for n, v in kw.items() if n in accepted}
    if k != "mtsd":
        return fn(root, classes, **kw)
    if isinstance(classes, str):
        classes = [classes]
    if classes is not None:
        name = kw.get("class_name", "mtsd")
        if list(classes) != [name]:
            raise DataError(f"MTSD has one class, {name!r}; got classes={list(classes)}; "
                            f"set data.classes in params.yaml to [{name}] or null")
    return fn(root, **kw)


def summarize(samples: Sequence[Sample]) -> dict:
    """Counts per class: train, test normal, test defective per kind, masks, empty-mask risk."""
    out: dict[str, dict] = {}
    for s in samples:
        c = out.setdefault(s.cls, {"train": 0, "test_good": 0, "test_defect": Counter(),
                                   "masks": 0})
        if s.split == "train":
            c["train"] += 1
        elif s.label == 0:
            c["test_good"] += 1
        else:
            c["test_defect"][s.defect] += 1
        if s.mask_path is not None and s.label == 1:
            c["masks"] += 1
    for c in out.values():
        c["test_defect"] = dict(sorted(c["test_defect"].items()))
    return dict(sorted(out.items()))

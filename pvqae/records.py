"""What stages write: markdown + CSV tables, JSON records (atomic), score files, machine facts."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import torch

from pvqae import distributed


def fmt(v, pct: bool = True, nd: int = 1) -> str:
    """Table cell: percentage with ``nd`` decimals, 'n/a' for NaN/None."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{100 * v:.{nd}f}" if pct else f"{v:.{nd}f}"


def pm(mean: float, std: float | None = None, n: int = 1) -> str:
    """Percent cell ``mean ± std`` (std shown only for more than one seed)."""
    if mean is None or not np.isfinite(mean):
        return "n/a"
    if n > 1 and std is not None and np.isfinite(std):
        return f"{100 * mean:.1f} ± {100 * std:.1f}"
    return f"{100 * mean:.1f}"


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


def save_scores(scores: dict, split: dict, path: Path) -> None:
    """Scores of a split as npz (maps in float16 to keep the cache small)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {k: scores[k] for k in ("routed", "prior") if scores.get(k) is not None}
    np.savez_compressed(path, maps=scores["maps"].astype(np.float16), image=scores["image"],
                        label=split["label"].numpy(), class_index=split["class_index"].numpy(), **extra)


def write_csv(rows: list[dict], path: Path, cols: list[str] | tuple[str, ...]) -> None:
    """Rows as CSV with the columns ``cols``: None is an empty cell, floats keep 6 significant
    digits (a table to read, where :func:`write_table` keeps raw values)."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(cols))
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in r.items()})


def finite_or_none(obj):
    """``obj`` with every non-finite float (NaN, inf) of its nested dicts and lists replaced by
    None, so that :func:`write_json` writes ``null`` (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj

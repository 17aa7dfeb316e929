"""Benchmarks that write ``reports/benchmarks/*.json`` (kept in git, shown in the README).

One module per job:

- :mod:`.speed`: speed and size of a profile's model (``python -m pvqae benchmark --profile
  paper``; no data needed);
- :mod:`.accuracy_record`: the accuracy record of a finished run (``python -m pvqae benchmark
  --accuracy``);
- :mod:`.tables`: markdown tables of the JSON files (``python -m pvqae benchmark --table``);
- :mod:`.selection`: a baseline's settings chosen on the label-free validation split
  (``python -m pvqae.benchmark.selection``).

This package re-exports their public names (``benchmark.run``, ``benchmark.accuracy``,
``benchmark.table``, ...) and names the files (:func:`write`), which covers both kinds of
record.
"""

from __future__ import annotations

from pathlib import Path

from pvqae.benchmark.accuracy_record import (
    BASELINE_TARGETS,
    FLOOR,
    TARGETS,
    accuracy,
    auroc_by_defect,
    baselines_record,
    codes_per_image,
    dataset_tag,
)
from pvqae.benchmark.speed import (
    PVQAE,
    DataConfig,
    Params,
    PatchCore,
    baseline_speed,
    profile_params,
    resize_profile,
    run,
    state_dict_mb,
)
from pvqae.benchmark.tables import accuracy_table, budgeted_table, selection_table, table
from pvqae.records import write_json

__all__ = ["BASELINE_TARGETS", "FLOOR", "PVQAE", "TARGETS", "DataConfig", "Params", "PatchCore", "accuracy",
           "accuracy_table", "auroc_by_defect", "budgeted_table", "baseline_speed", "baselines_record", "codes_per_image",
           "dataset_tag", "profile_params", "resize_profile", "run", "selection_table", "state_dict_mb", "table", "write"]


def write(result: dict, out_dir: Path, suffix: str | None = None) -> Path:
    """``accuracy_<dataset>_<profile>.json`` (``..._<size>px_<suffix>.json`` for a run without
    PVQAE, suffix ``baselines`` by default; ``..._<size>px_features.json`` for PVQAE-F; a
    suffix given for a PVQAE run is appended, ``..._<size>px[_features]_<suffix>.json``, so a
    second PVQAE run does not overwrite the first) or ``speed_size_<profile>_<size>px.json``
    under ``out_dir``."""
    if result["benchmark"] == "accuracy":
        name = f"accuracy_{dataset_tag(result)}_{result['profile']}"
        if "pvqae" not in result:
            name += f"_{result['image_size']}px_{suffix or 'baselines'}"
        else:
            if result.get("input", {}).get("kind") == "features":
                name += f"_{result['image_size']}px_features"
            elif suffix:
                name += f"_{result['image_size']}px"
            if suffix:
                name += f"_{suffix}"
    else:
        name = f"speed_size_{result['profile']}_{result['image_size']}px"
    path = Path(out_dir) / f"{name}.json"
    write_json(result, path)
    return path

"""Stage ``prepare``: read, validate, resize and split the dataset once; cache the DWT
entropies and the label-free validation split (:mod:`pvqae.data.prepared`)."""

from __future__ import annotations

from pvqae.data.prepared import prepare
from pvqae.settings import Params
from pvqae.stages import PATHS, Stage, out_path

STAGE = Stage("prepare", "01_prepare_data.py", params=("seed", "data"),
              deps=("pvqae/data", "pvqae/entropy.py", "pvqae/plots.py", "${data.source}"),
              outs=(PATHS["prepared"], f"{PATHS['figures']}/prepare"))


def run(cfg: Params, paths: dict = PATHS, progress: bool = True) -> dict:
    """Write ``arrays.npz`` and ``manifest.json``; return the manifest."""
    return prepare(cfg.data, out_path(paths, "prepared"), cfg.seed, progress=progress)

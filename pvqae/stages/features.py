"""Stage ``features``: PVQAE-F's input, the frozen backbone's feature map of every prepared
image, cached once (:mod:`pvqae.features`); with ``input.kind: pixels`` only its manifest."""

from __future__ import annotations

from pvqae.features import build_cache
from pvqae.settings import Params
from pvqae.stages import PATHS, Stage, out_path

STAGE = Stage("features", "01b_features.py", params=("data", "input"),
              deps=("pvqae/features.py", "pvqae/entropy.py", "pvqae/backbones", PATHS["prepared"]),
              outs=(PATHS["features"],))


def run(cfg: Params, paths: dict = PATHS, progress: bool = True) -> dict:
    """Write ``reports/features/{features.npy,features.npz,manifest.json}``; return the manifest."""
    return build_cache(cfg.input, cfg.data.entropy, out_path(paths, "prepared"), out_path(paths, "features"),
                       progress=progress)

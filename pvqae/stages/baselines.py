"""Stage ``baselines``: the Table I baselines in one harness (:mod:`pvqae.baselines.harness`):
same data, splits, resolution, post-processing and metrics as PVQAE."""

from __future__ import annotations

from pvqae.backbones import load_backbone
from pvqae.baselines import NEEDS_BACKBONE, harness
from pvqae.data.prepared import load_prepared
from pvqae.records import write_json
from pvqae.settings import Params
from pvqae.stages import PATHS, SCORING_DEPS, TRAINING_DEPS, Stage, out_path

STAGE = Stage("baselines", "06_baselines.py", params=("seed", "seeds", "data", "evaluate", "baselines"),
              deps=("pvqae/baselines", "pvqae/backbones", *TRAINING_DEPS, *SCORING_DEPS, "pvqae/quantizer.py", PATHS["prepared"]),
              outs=(PATHS["baseline_models"],), metrics=(f"{PATHS['metrics']}/baselines.json",))


def run(cfg: Params, paths: dict = PATHS, progress: bool = True) -> dict:
    """Every method for every seed; writes ``baselines.json`` and returns its record."""
    bp = cfg.baselines
    train = load_prepared(paths["prepared"], "train")
    test = load_prepared(paths["prepared"], "test")
    backbone, status = (load_backbone(bp.backbone, bp.backbone_weights, bp.download_weights)
                        if set(bp.methods) & set(NEEDS_BACKBONE) else (None, "not needed"))
    out_dir = out_path(paths, "baseline_models")
    run = harness.run_all(list(bp.methods), bp, cfg.data, train, test, cfg.evaluate, list(cfg.seeds), out_dir,
                          backbone, status, progress)
    record = {"seeds": list(cfg.seeds), "backbone": bp.backbone, "backbone_status": status, **run}
    write_json(record, out_path(paths, "metrics") / "baselines.json")
    out_dir.mkdir(parents=True, exist_ok=True)
    return record

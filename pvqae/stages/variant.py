"""Stage ``variant``: one budget-learning ablation setting (Table II, Fig. 5; Sec. IV-D1) or
one same-network static VQ (the core claim).

dvc.yaml runs it once per setting of ``ablations.lambda_schedules``, ``ablations.lambda_max``
and ``ablations.static_levels`` (foreach stages ``lambda_schedule@<x>``, ``lambda_max@<x>``,
``static_level@<level>``): budget learning from the same pre-trained autoencoder with one
param changed, then the prior and the evaluation, per seed, through the same functions as
the main stages. A static level is PVQAE's network with budget learning's routing fixed to
that level (same pre-training, same steps, no prior: S = its reconstruction error). A
setting equal to the main run's is not trained again: its record says so and the tables
reuse the main run.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np

from pvqae.config import get_dotted, set_dotted
from pvqae.evaluation import aggregate_seeds
from pvqae.records import write_json
from pvqae.settings import Params
from pvqae.stages import AUTOENCODER_DEPS, PATHS, SCORING_DEPS, Stage, load_split, out_path, seed_dir
from pvqae.stages.budget import learn_budget
from pvqae.stages.evaluate import evaluate_model
from pvqae.stages.prior import learn_prior

STAGE = Stage("variant", "07_budget_variant.py", params=("seed", "seeds", "pretrain", "budget", "prior", "evaluate"),
              deps=(*AUTOENCODER_DEPS, *SCORING_DEPS, "pvqae/stages/budget.py",
                    "pvqae/stages/prior.py", "pvqae/stages/evaluate.py", PATHS["prepared"], PATHS["pretrain_models"]),
              outs=(), foreach=(("lambda_schedule", "ablations.lambda_schedules", "budget.lambda_schedule"),
                                ("lambda_max", "ablations.lambda_max", "budget.lambda_max"),
                                ("static_level", "ablations.static_levels", "budget.routing")))


def apply_overrides(params: dict, overrides: dict) -> dict:
    """A copy of ``params`` with dotted ``overrides`` (e.g. ``{"budget.lambda_max": 0.5}``) set."""
    out = copy.deepcopy(params)
    for k, v in overrides.items():
        set_dotted(out, k, v)
    return out


def is_main_setting(params: dict, overrides: dict) -> bool:
    """True when the overrides change nothing: that variant *is* the main run."""
    def same(a, b) -> bool:
        try:
            return bool(np.isclose(float(a), float(b)))
        except (TypeError, ValueError):
            return a == b

    return all(same(get_dotted(params, k), v) for k, v in overrides.items())


def variant_name(kind: str, value) -> str:
    """Folder name of an ablation setting, as dvc.yaml's foreach writes it: ``lambda_max-0.5``."""
    return f"{kind}-{value}"


def variant_result(variants_dir: str | Path, kind: str, value, main_metrics: dict) -> dict:
    """Aggregated metrics of one setting; the main run's PVQAE metrics when it is the main run's."""
    path = Path(variants_dir) / variant_name(kind, value) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro {kind}@{value}` (the ablation lists are "
                                f"params `ablations.lambda_schedules` / `ablations.lambda_max`)")
    with open(path) as f:
        rec = json.load(f)
    if rec["same_as_main"]:
        return {**main_metrics["pvqae"], "same_as_main": True}
    return rec


def run(params: dict, name: str, overrides: dict, paths: dict = PATHS, progress: bool = True) -> dict:
    """Train, score and record the setting ``overrides`` of the stage's ``params`` sections;
    writes ``reports/variants/<name>/metrics.json``."""
    cfg = Params.from_dict(params)
    out_dir = out_path(paths, "variants") / name
    same_as_main = is_main_setting(params, overrides)
    record = {"name": name, "overrides": overrides, "seeds": list(cfg.seeds), "same_as_main": same_as_main}
    if not same_as_main:
        vcfg = Params.from_dict(apply_overrides(params, overrides))
        t0 = time.perf_counter()
        train, val, test = (load_split(paths, s) for s in ("train", "val", "test"))
        per_seed, summaries = {}, {}
        for s in vcfg.seeds:
            sd = seed_dir(out_dir, s)
            model, summ = learn_budget(vcfg, train, val, seed_dir(out_path(paths, "pretrain_models"), s)
                                       / "pvqae_pretrain.pt", sd, s, progress)
            prior, psumm = (None, {"mode": "none: routing fixed"}) if vcfg.budget.fixed_level is not None else \
                learn_prior(model, train, val, vcfg.prior, sd / "prior.pt", s, progress)
            _, per_seed[s] = evaluate_model(model, prior, test, vcfg.evaluate, progress, desc=f"{name} {s}")
            summaries[f"seed{s}"] = {"budget": summ, "prior": {k: v for k, v in psumm.items() if k != "history"}}
        record.update(aggregate_seeds(list(per_seed.values())))
        record["per_seed"] = {f"seed{s}": r for s, r in per_seed.items()}
        record["training"] = summaries
        record["seconds"] = time.perf_counter() - t0
    write_json(record, out_dir / "metrics.json")
    return record

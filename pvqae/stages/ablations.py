"""Stage ``ablations`` (Sec. IV-D): Table II (lambda schedule) and Fig. 5 (lambda_max sweep)
from the variant stages; Table III (normal budget priors: none / universal / per-class on the
same trained autoencoder, only the prior differs, Sec. IV-D2); static VQ vs PVQAE, and the
same-network static VQ at each level beside the lambda_max sweep (detection vs codes per
image: the paper's expressiveness / compactness trade-off)."""

from __future__ import annotations

import json

from pvqae import report
from pvqae.evaluation import aggregate_seeds
from pvqae.model import PVQAE
from pvqae.records import write_json, write_table
from pvqae.settings import Params
from pvqae.stages import AUTOENCODER_DEPS, PATHS, SCORING_DEPS, Stage, load_split, out_path, seed_dir
from pvqae.stages.evaluate import evaluate_model
from pvqae.stages.prior import learn_prior
from pvqae.stages.variant import variant_result

STAGE = Stage("ablations", "08_ablations.py", params=("seed", "seeds", "budget", "prior", "evaluate", "ablations"),
              deps=(*AUTOENCODER_DEPS, *SCORING_DEPS, "pvqae/report.py", "pvqae/stages/variant.py",
                    "pvqae/stages/evaluate.py", "pvqae/stages/prior.py", "pvqae/plots.py", PATHS["prepared"],
                    PATHS["budget_models"], PATHS["variants"], f"{PATHS['metrics']}/evaluate.json"),
              outs=(PATHS["ablation_models"], f"{PATHS['tables']}/ablations", f"{PATHS['figures']}/ablations"),
              metrics=(f"{PATHS['metrics']}/ablations.json",))


def _brief(r: dict) -> dict:
    return {k: r[k] for k in ("mean", "std", "per_class", "per_class_std", "n_seeds", "codes_per_image") if k in r}


def run(cfg: Params, paths: dict = PATHS, progress: bool = True) -> dict:
    """Collect and compute every ablation; write its tables and ``ablations.json``. Returns
    ``schedules``, ``sweep`` (float keys), ``priors``, ``core`` and the markdown ``tables``."""
    ab, seeds = cfg.ablations, list(cfg.seeds)
    tables = out_path(paths, "tables") / "ablations"
    with open(out_path(paths, "metrics") / "evaluate.json") as f:
        ev_metrics = json.load(f)
    variants = out_path(paths, "variants")
    md = {}
    bud = cfg.budget

    def result(kind: str, x, main) -> dict:
        # the run's own setting is the main run, a row of its table whether or not the list names it
        # (listed, its variant stage only records that it is the main run)
        return ({**ev_metrics["pvqae"], "same_as_main": True} if x == main
                else variant_result(variants, kind, x, ev_metrics))

    schedules = {x: result("lambda_schedule", x, bud.lambda_schedule)
                 for x in dict.fromkeys([*ab.lambda_schedules, bud.lambda_schedule])}
    md["table2"] = write_table(report.ablation_rows("lambda schedule", schedules), tables / "table2_lambda_schedule",
                               "Table II: lambda schedule (mean over classes, %)",
                               note=f"lambda_max = {cfg.budget.lambda_max} for every schedule; seeds {seeds}.")
    sweep = {x: result("lambda_max", x, float(bud.lambda_max))
             for x in sorted({float(v) for v in ab.lambda_max} | {float(bud.lambda_max)})}
    md["fig5"] = write_table(report.ablation_rows("lambda_max", {f"{k:g}": v for k, v in sweep.items()}),
                             tables / "fig5_lambda_max", "Fig. 5: lambda_max sweep, linear schedule (mean over classes, %)",
                             note=f"schedule {cfg.budget.lambda_schedule}; seeds {seeds}.")

    # Table III: the main mode was trained (prior stage) and scored (evaluate stage) already
    train, val, test = (load_split(paths, s) for s in ("train", "val", "test"))
    main_mode = cfg.prior.mode
    other_modes = [m for m in ab.priors if m != main_mode]
    per_seed = {m: [] for m in other_modes}
    for s in seeds:
        model = PVQAE.from_checkpoint(seed_dir(out_path(paths, "budget_models"), s) / "pvqae.pt")
        for mode in other_modes:
            prior, _ = learn_prior(model, train, val, cfg.prior.replace(mode=mode),
                                   seed_dir(out_path(paths, "ablation_models"), s) / f"prior_{mode}.pt", s,
                                   progress=False)
            per_seed[mode].append(evaluate_model(model, prior, test, cfg.evaluate, progress,
                                                 desc=f"prior {mode} seed {s}")[1])
    priors = {m: ev_metrics["pvqae"] if m == main_mode else aggregate_seeds(per_seed[m]) for m in ab.priors}
    md["table3"] = write_table(report.ablation_rows("prior", priors), tables / "table3_priors",
                               "Table III: normal budget priors (mean over classes, %)", note=f"seeds {seeds}.")
    statics = {x: variant_result(variants, "static_level", x, ev_metrics) for x in ab.static_levels}
    tradeoff = {**{f"static {x}": v for x, v in statics.items()},
                **{f"PVQAE lambda_max {k:g}": v for k, v in sweep.items()}}
    md["same_network"] = write_table(report.tradeoff_rows(tradeoff), tables / "same_network_static",
                                     "Same-network static VQ vs PVQAE: detection and codes per image",
                                     note="static: PVQAE's network and pre-training, budget learning with the routing "
                                          "fixed to one level, no prior (S = its L2 error); PVQAE: the lambda_max "
                                          f"sweep; same steps; seeds {seeds}.")
    core = {m: ev_metrics[m] for m in ("static_vq", "pvqae")}
    md["core"] = write_table(report.ablation_rows("method", core), tables / "static_vs_pvqae",
                             "Static VQ vs PVQAE (mean over classes, %)",
                             note=f"same autoencoder, same number of training steps; seeds {seeds}.")
    write_json({"seeds": seeds,
                "lambda_schedule": {k: _brief(v) for k, v in schedules.items()},
                "lambda_max": {str(k): _brief(v) for k, v in sweep.items()},
                "priors": {k: _brief(v) for k, v in priors.items()},
                "static_vs_pvqae": {k: _brief(v) for k, v in core.items()},
                "same_network_static": {k: _brief(v) for k, v in statics.items()}},
               out_path(paths, "metrics") / "ablations.json")
    return {"schedules": schedules, "sweep": sweep, "priors": priors, "core": core, "statics": statics,
            "tables": md}

"""Time-budgeted runs of PVQAE and the static VQ: the GPU study and the CPU scaling study.

The pipeline trains for a fixed number of steps; here a run gets a wall-clock budget
instead (``budgeted`` section of params.yaml). The steps that fit are planned from the
measured steps per second of each model (:func:`calibrate`), and every schedule of the
profile (lambda ramp and Gumbel temperature of budget learning, the discriminator's start)
is compressed to them, so a short run is a whole schedule, not a cut one. A deadline of
1.25 x the budget stops a training loop that runs slower than planned.

Everything else is the pipeline's own code: :func:`pvqae.train.train_autoencoder` (with its
objective, bf16 autocast and TF32 on CUDA), :func:`pvqae.train.train_prior`,
:func:`pvqae.evaluation.score_split` and the metrics. Nothing here imports dvc, papermill
or jupytext, so the GPU machine needs only torch, numpy, scipy, scikit-learn, Pillow, PyYAML,
tqdm and the two wheels ``scripts/gpu_study.sh`` installs offline (PyWavelets, ruamel.yaml).

Commands (``python -m pvqae.benchmark.budgeted --help``):

- ``prepare``: the prepare stage for a profile, without DVC;
- ``pack``: a prepared folder as one lossless file to carry (:mod:`pvqae.data.pack`);
- ``run``: one budgeted run -> an accuracy JSON (``scripts/gpu_study.sh`` calls it);
- ``scaling``: the CPU scaling study (schedule fractions, image size / width at a fixed wall
  time) -> ``reports/benchmarks/scaling_<dataset>_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pvqae import distributed
from pvqae.batches import train_stream
from pvqae.data.prepared import load_prepared
from pvqae.evaluation import code_allocation, evaluate_scores, heldout_error, score_split
from pvqae.model import PVQAE, routed_levels
from pvqae.records import machine_info, write_json
from pvqae.settings import NOT_PARAMS, Params
from pvqae.train import train_autoencoder, train_prior

UNTIMED_STEPS = 3  # first steps carry start-up costs (CUDA context, cuDNN autotuning, allocator)
OVERRUN = 1.25  # a loop still running at this multiple of its budget is stopped


def scaled(value: int, old_steps: int, new_steps: int) -> int:
    """A step index of a schedule of ``old_steps`` moved to one of ``new_steps``."""
    return int(round(value * new_steps / max(old_steps, 1)))


def params_for(names: list[str], sets: list[str] | None = None) -> Params:
    """params.yaml with the profiles ``names`` and ``--set`` overrides applied in memory."""
    from pvqae.benchmark.speed import profile_params
    from pvqae.config import parse_overrides, profile_path, set_dotted

    p = profile_params(names)
    size = [n for n in names if profile_path(n).parent.name == "size"]
    p["profile"] = size[-1] if size else p.get("profile", "default")
    for k, v in parse_overrides(sets).items():
        set_dotted(p, k, v)
    return Params.from_dict(p)


def _rate(fn, n: int) -> float:
    """Steps per second of ``fn(steps) -> seconds`` from the difference of a run of
    ``UNTIMED_STEPS`` and one of ``UNTIMED_STEPS + n`` (start-up costs cancel), at most twice
    the longer run's average rate: with steps of milliseconds the difference is noise."""
    t0 = fn(UNTIMED_STEPS)
    t1 = fn(UNTIMED_STEPS + n)
    average = (UNTIMED_STEPS + n) / max(t1, 1e-6)
    return min(n / (t1 - t0), 2 * average) if t1 > t0 else average


def calibrate(params: Params, train: dict, work: Path) -> dict:
    """Measured steps per second of PVQAE's pre-training, its budget learning, the static VQ
    and the prior on this machine (weights discarded)."""
    pre, bud, seed, n = params.pretrain, params.budget, params.budgeted.seed, params.budgeted.calibration_steps
    shape = (train["image"].shape[1], train["image"].shape[-1])
    scratch = work / "calibration"

    def autoencoder(levels, cfg, budget):
        def timed(steps: int) -> float:
            torch.manual_seed(seed)
            model = PVQAE(params.model_config(levels=levels, input_shape=shape))
            c = cfg.replace(steps=steps, ckpt_every=10**9, log_every=10**9, disc_start=0)  # time the GAN step too
            b = budget.replace(steps=steps) if budget else None
            s = train_autoencoder(model, train_stream(train, c.batch_size, seed, c.augment_jitter), c, scratch,
                                  f"calibrate{steps}", seed, budget=b, progress=False)
            return s["train_seconds"]
        return _rate(timed, n)

    def prior(steps: int) -> float:
        levels = torch.randint(0, 3, (len(train["image"]), params.data.coarse_grid, params.data.coarse_grid))
        cfg = params.prior.replace(steps=steps)
        t0 = time.perf_counter()
        train_prior(levels[:cfg.batch_size], train["class_index"][:cfg.batch_size], len(train["classes"]), cfg,
                    scratch / "prior.pt", seed, progress=False)
        return time.perf_counter() - t0

    rates = {"pvqae_pretrain": autoencoder((0, 1, 2), pre, None),
             "pvqae_budget": autoencoder((0, 1, 2), pre.for_budget(bud), bud),
             "static_vq": autoencoder((params.static_vq.level,), pre, None),
             "prior": _rate(prior, 5 * n)}
    shutil.rmtree(scratch, ignore_errors=True)
    return rates


def plan_from_rates(params: Params, rates: dict) -> dict:
    """Steps of each model that fit the ``budgeted`` wall-clock budget at ``rates``."""
    bc = params.budgeted
    secs = {"pvqae_pretrain": bc.seconds * bc.pretrain_share, "pvqae_budget": bc.seconds * (1 - bc.pretrain_share),
            "static_vq": bc.seconds, "prior": bc.prior_seconds}
    return {k: max(1, int(rates[k] * secs[k])) for k in secs} | {"seconds": secs}


def plan_from_fraction(params: Params, fraction: float) -> dict:
    """Steps of each model at ``fraction`` of the profile's schedule (the prior keeps its own)."""
    return {"pvqae_pretrain": max(1, round(fraction * params.pretrain.steps)),
            "pvqae_budget": max(1, round(fraction * params.budget.steps)),
            "static_vq": max(1, round(fraction * params.static_vq.steps)), "prior": params.prior.steps,
            "seconds": None, "fraction": fraction}


def _train(model: PVQAE, train: dict, cfg, name: str, out: Path, seed: int, seconds: float | None, progress: bool,
           **kw) -> dict:
    deadline = time.perf_counter() + OVERRUN * seconds + 5.0 if seconds else None  # None: run every planned step
    stream = train_stream(train, cfg.batch_size, seed + (1 if kw.get("budget") else 0), cfg.augment_jitter)
    return train_autoencoder(model, stream, cfg, out, name, seed, progress=progress, deadline=deadline, **kw)


def train_and_score(params: Params, data: dict, plan: dict, out: Path, progress: bool = True,
                    cap: bool = True) -> dict:
    """Train PVQAE (pre-training, budget learning, prior) and the static VQ with ``plan``'s
    steps, score the test split; the part of the record for each method. ``cap``: stop a loop
    at :data:`OVERRUN` x its planned seconds (a GPU lease ends); without it every planned step
    runs, whatever else loads the machine (the scaling study's steps are its variable)."""
    from pvqae.checkpoint import load_checkpoint
    from pvqae.stages.evaluate import codes_per_image

    pre, bud, seed = params.pretrain, params.budget, params.budgeted.seed
    train, val, test = data["train"], data["val"], data["test"]
    shape = (train["image"].shape[1], train["image"].shape[-1])
    secs = (plan.get("seconds") or {}) if cap else {}
    n_pre, n_bud, n_st = plan["pvqae_pretrain"], plan["pvqae_budget"], plan["static_vq"]
    pre_cfg = pre.replace(steps=n_pre, disc_start=scaled(pre.disc_start, pre.steps, n_pre),
                          ckpt_every=max(1, scaled(pre.ckpt_every, pre.steps, n_pre)))
    bud_set = bud.replace(steps=n_bud, disc_start=scaled(bud.disc_start, bud.steps, n_bud),
                          lambda_warmup=scaled(bud.lambda_warmup, bud.steps, n_bud))
    st_cfg = pre.replace(steps=n_st, disc_start=scaled(pre.disc_start, params.static_vq.steps, n_st),
                         ckpt_every=max(1, scaled(pre.ckpt_every, params.static_vq.steps, n_st)))
    torch.manual_seed(seed)
    model = PVQAE(params.model_config(input_shape=shape))
    s_pre = _train(model, train, pre_cfg, "pvqae_pretrain", out, seed, secs.get("pvqae_pretrain"), progress)
    s_bud = _train(model, train, pre_cfg.for_budget(bud_set), "pvqae", out, seed, secs.get("pvqae_budget"), progress,
                   budget=bud_set, disc_state=load_checkpoint(out / "pvqae_pretrain.pt").get("disc"))
    levels = routed_levels(model, train["image"])
    prior, s_prior = train_prior(levels, train["class_index"], len(train["classes"]),
                                 params.prior.replace(steps=plan["prior"]), out / "prior.pt", seed, progress=progress)
    torch.manual_seed(seed)
    static = PVQAE(params.model_config(levels=(params.static_vq.level,), input_shape=shape))
    s_st = _train(static, train, st_cfg, "static_vq", out, seed, secs.get("static_vq"), progress)

    ev = params.evaluate
    rec: dict = {}
    for name, m, p, summaries in (("pvqae", model, prior, (s_pre, s_bud)), ("static_vq", static, None, (s_st,))):
        sc = score_split(m, test, p, ev.score, ev.batch_size, progress=progress, desc=f"score {name}")
        res = evaluate_scores(test, sc, ev.fpr_limit)
        train_s = sum(s["train_seconds"] for s in summaries) + (s_prior.get("train_seconds", 0.0) if p else 0.0)
        rec[name] = {
            "mean": res["mean"], "per_class": res["per_class"],
            "steps": {s["name"]: s["steps"] for s in summaries}, "planned_steps": {s["name"]: s["planned_steps"]
                                                                                   for s in summaries},
            "train_seconds": train_s,
            "train_steps_per_second": {s["name"]: s["steps"] / s["train_seconds"] for s in summaries
                                       if s["train_seconds"]},
            "train_images_per_second": {s["name"]: s["train_images_per_second"] for s in summaries},
            "inference_images_per_second": sc["images_per_second"],
            "heldout_l1": heldout_error(m, val["image"], mode="dynamic") if m.dynamic else heldout_error(m, val["image"]),
        }
        rec[name]["codes_per_image"] = codes_per_image(m, sc["routed"])
        if sc["routed"] is not None:
            rec[name]["code_allocation"] = code_allocation(test, sc["routed"], "routed")
            if sc["prior"] is not None:
                rec[name]["code_allocation"] += code_allocation(test, sc["prior"], "prior")
    rec["prior"] = {"steps": plan["prior"], "train_seconds": s_prior.get("train_seconds"),
                    "heldout_accuracy": _prior_accuracy(model, prior, val)}
    return rec


def _prior_accuracy(model: PVQAE, prior, val: dict) -> float | None:
    """The prior's accuracy on the held-out normal images' routed budgets."""
    if prior is None or not len(val["image"]):
        return None
    levels = routed_levels(model, val["image"])
    with torch.no_grad():
        return float((prior.predict_all(levels, val["class_index"]).argmax(1) == levels).float().mean())


def load_data(prepared: Path, params: Params) -> dict:
    """Train / val / test splits of a prepared folder, checked against the profile."""
    from pvqae.errors import DataError

    if not (Path(prepared) / "manifest.json").is_file():
        raise DataError(f"{prepared} is not a prepared dataset (no manifest.json): make it with "
                        f"`python -m pvqae.benchmark.budgeted prepare --profile ... --out {prepared}`")
    data = {sp: load_prepared(prepared, sp) for sp in ("train", "val", "test")}
    m = data["train"]["manifest"]
    want = {"image_size": params.data.image_size, "channels": params.data.channels,
            "coarse_grid": params.data.coarse_grid}
    got = {k: m.get(k) for k in want}
    if got != want:
        raise DataError(f"{prepared}: prepared with {got}, the profile wants {want}; prepare (or pack) the data "
                        f"again with the same profile")
    return data


def full_schedule_estimate(params: Params, rates: dict) -> dict:
    """Hours the profile's full schedule would take at the measured rates (an extrapolation)."""
    h = {"pvqae": (params.pretrain.steps / rates["pvqae_pretrain"] + params.budget.steps / rates["pvqae_budget"]
                   + params.prior.steps / rates["prior"]) / 3600,
         "static_vq": params.static_vq.steps / rates["static_vq"] / 3600}
    return {"steps": {"pretrain": params.pretrain.steps, "budget": params.budget.steps,
                      "static_vq": params.static_vq.steps, "prior": params.prior.steps},
            "hours": h, "note": "extrapolated from the measured steps per second of this machine"}


def run(params: Params, prepared: Path, work: Path, *, plan: dict | None = None, rates: dict | None = None,
        progress: bool = True, cap: bool = True) -> dict:
    """One budgeted run: calibrate (unless ``rates`` or a fixed-step ``plan`` is given), plan,
    train, score; returns the record. ``cap``: see :func:`train_and_score`."""
    from pvqae.report import paper_table1

    t0 = time.perf_counter()
    dev = distributed.device()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    data = load_data(prepared, params)
    work.mkdir(parents=True, exist_ok=True)
    if plan is None:
        rates = rates or calibrate(params, data["train"], work)
        plan = plan_from_rates(params, rates)
    res = train_and_score(params, data, plan, work / "models", progress, cap)
    man = data["test"]["manifest"]
    paper = {c: v["pvqae"] for c, v in paper_table1(man["dataset"]).items() if c in man["classes"] and "pvqae" in v}
    return {
        "benchmark": "accuracy_budgeted", "dataset": man["dataset"], "classes": man["classes"],
        "counts": man["counts"], "image_size": params.data.image_size, "profile": params.profile,
        "model": {k: v for k, v in params.model.to_dict().items() if k in ("ch", "ch_mult", "num_res_blocks",
                                                                          "embed_dim", "num_codes")},
        "budgeted": params.budgeted.to_dict(), "plan": plan, "rates_steps_per_second": rates,
        "precision": {"autocast": params.pretrain.autocast if dev.type in distributed.AUTOCAST_DEVICES else "none",
                      "tf32": bool(params.pretrain.tf32 and dev.type == "cuda")},
        **res,
        "full_schedule_estimate": full_schedule_estimate(params, rates) if rates else None,
        "paper_percent": paper, "machine": machine_info(), **distributed.accelerator_info(dev),
        "wall_seconds": time.perf_counter() - t0,
    }


# --- the CPU scaling study ------------------------------------------------------------------

def scaling_settings(params: Params, fractions: tuple[float, ...], sizes: tuple[tuple[int, int], ...]) -> list[dict]:
    """The runs of the scaling study: the profile at ``fractions`` of its schedule, and each
    (image_size, ch) of ``sizes`` at the wall time of one of those runs."""
    rows = [{"series": "schedule", "image_size": params.data.image_size, "ch": params.model.ch, "fraction": f}
            for f in fractions]
    rows += [{"series": "size", "image_size": s, "ch": c, "fraction": None} for s, c in sizes]
    return rows


def resized(params: Params, image_size: int, ch: int) -> Params:
    """The profile's model at another image size (same coarse grid, see
    :func:`pvqae.benchmark.speed.resize_profile`) and width."""
    from pvqae.benchmark.speed import resize_profile

    d = params.to_dict()
    d["data"], d["model"] = resize_profile(d["data"], d["model"], image_size)
    d["model"]["ch"] = ch
    for k in NOT_PARAMS:
        d["model"].pop(k, None)
    return Params.from_dict(d)


def log_fit(x: list[float], values: list[float]) -> dict | None:
    """Least-squares ``value = a + b log10(x)``; None with fewer than two points."""
    if len(x) < 2:
        return None
    b, a = np.polyfit(np.log10(x), values, 1)
    return {"a": float(a), "b_per_decade": float(b)}


def x_to_reach(fit: dict | None, target: float) -> float | None:
    """The ``x`` at which the log fit reaches ``target`` (an extrapolation); None when the
    fit does not rise."""
    if not fit or fit["b_per_decade"] <= 0:
        return None
    return float(10 ** ((target - fit["a"]) / fit["b_per_decade"]))


def summarise_scaling(rows: list[dict], targets: dict) -> dict:
    """Per method, a log fit of image AUROC vs the fraction of the profile's schedule (steps:
    unlike seconds, not changed by other load on the machine), the fraction each target
    (name -> AUROC in [0, 1]) would need and, at the seconds per step of the smallest-fraction
    run, the training hours that is (extrapolations, labelled so)."""
    out = {}
    sched = sorted((r for r in rows if r["series"] == "schedule"), key=lambda r: r["fraction"])
    for m in ("pvqae", "static_vq"):
        fit = log_fit([r["fraction"] for r in sched], [r[m]["mean"]["image_auroc"] for r in sched])
        full_hours = None
        if sched:
            ref = sched[0]
            full_hours = ref[m]["train_seconds"] / ref["fraction"] / 3600
        reach = {k: x_to_reach(fit, v) for k, v in targets.items()}
        out[m] = {"fit_vs_fraction": fit, "fraction_to_reach": reach,
                  "full_schedule_hours": full_hours,
                  "hours_to_reach": {k: (f * full_hours if f is not None and full_hours else None)
                                     for k, f in reach.items()},
                  "note": "extrapolation of a log-linear fit; not a measurement"}
    return out


def scaling(params: Params, prepared_for: dict[int, Path], work: Path, fractions: tuple[float, ...],
            sizes: tuple[tuple[int, int], ...], reference: float, *, done: list[dict] | None = None,
            on_row=None, progress: bool = True, log=print) -> dict:
    """The scaling study: each schedule fraction (fixed steps, so CPU load from elsewhere
    changes times, not results) and each (size, width) at the measured wall time of the
    ``reference`` fraction's PVQAE and static VQ (steps from calibration). Rows of ``done``
    (an interrupted study's) are kept, not rerun; ``on_row(rows)`` after each new row."""
    if reference not in fractions:
        raise ValueError(f"the reference fraction {reference} is not one of {fractions}")
    settings = scaling_settings(params, fractions, sizes)
    # the sizes need the reference's times: run the fractions up to it first, the longer ones last
    settings.sort(key=lambda st: 0 if st["series"] == "schedule" and st["fraction"] <= reference else
                  1 if st["series"] == "size" else 2)
    key = ("series", "image_size", "ch", "fraction")
    rows = [r for r in (done or []) if any(all(r[k] == st[k] for k in key) for st in settings)]
    for st in settings:
        if any(all(r[k] == st[k] for k in key) for r in rows):
            log(f"[scaling] {st}: done earlier, kept")
            continue
        p = resized(params, st["image_size"], st["ch"])
        rates = None
        if st["series"] == "schedule":
            plan = plan_from_fraction(p, st["fraction"])
            folder = work / f"f{st['fraction']:.4f}"
        else:
            ref = next(r for r in rows if r["fraction"] == reference)
            prior_s = ref["prior"]["train_seconds"] or 0.0
            p = p.replace(budgeted=p.budgeted.replace(seconds=ref["pvqae"]["train_seconds"] - prior_s,
                                                      prior_seconds=max(prior_s, 1.0)))
            rates = calibrate(p, load_data(prepared_for[st["image_size"]], p)["train"], work)
            plan = plan_from_rates(p, rates)
            plan["static_vq"] = max(1, int(rates["static_vq"] * ref["static_vq"]["train_seconds"]))
            plan["seconds"]["static_vq"] = ref["static_vq"]["train_seconds"]
            plan["prior"] = p.prior.steps  # the prior is not what scales: as in the schedule runs
            folder = work / f"s{st['image_size']}_c{st['ch']}"
        rec = run(p, prepared_for[st["image_size"]], folder, plan=plan, progress=progress, cap=False)
        row = {**st, **{k: rec[k] for k in ("pvqae", "static_vq", "prior", "plan", "model", "wall_seconds")},
               "rates_steps_per_second": rates}
        rows.append(row)
        shutil.rmtree(folder, ignore_errors=True)  # checkpoints: the row has what the study reports
        log(f"[scaling] {st}: PVQAE {row['pvqae']['mean']['image_auroc']:.3f} "
            f"static {row['static_vq']['mean']['image_auroc']:.3f} ({row['wall_seconds']:.0f} s)")
        if on_row:
            on_row(rows)
    return {"rows": rows}


# --- command line ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pvqae.benchmark.budgeted", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def profiled(p):
        p.add_argument("--profile", action="append", default=[], help="profiles in order, e.g. paper, mtsd")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")

    pr = sub.add_parser("prepare", help="the prepare stage for a profile, without DVC")
    profiled(pr)
    pr.add_argument("--out", required=True, help="prepared folder to write")
    pr.add_argument("--image-size", type=int, default=None, help="the profile resized (same coarse grid)")
    pk = sub.add_parser("pack", help="a prepared folder as one lossless file")
    pk.add_argument("--prepared", required=True)
    pk.add_argument("--out", required=True)
    r = sub.add_parser("run", help="one time-budgeted run of PVQAE and the static VQ -> an accuracy JSON")
    profiled(r)
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--prepared", help="a prepared folder")
    src.add_argument("--pack", help="a packed prepared dataset (unpacked into --work)")
    r.add_argument("--work", default="build/budgeted", help="models and scratch (deleted at the start)")
    r.add_argument("--out", required=True, help="the JSON to write")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    sc = sub.add_parser("scaling", help="the CPU scaling study -> a scaling JSON")
    profiled(sc)
    sc.add_argument("--prepared", action="append", required=True, metavar="SIZE=DIR",
                    help="prepared folder per image size, e.g. 128=build/mtsd128")
    sc.add_argument("--fractions", default="0.0625,0.125,0.25")
    sc.add_argument("--sizes", default="64x16,128x32", help="image_size x ch at the reference fraction's wall time")
    sc.add_argument("--reference", type=float, default=0.125, help="the fraction whose wall time the sizes get")
    sc.add_argument("--work", default="build/scaling")
    sc.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    if args.cmd == "pack":
        from pvqae.data.pack import pack

        print(pack(Path(args.prepared), Path(args.out)))
        return 0
    params = params_for(args.profile, args.sets)
    if args.cmd == "prepare":
        from pvqae.data.prepared import prepare

        if args.image_size:
            params = resized(params, args.image_size, params.model.ch)
        m = prepare(params.data, Path(args.out), params.seed)
        print(f"prepared {m['dataset']} at {m['image_size']} px: {m['counts']} -> {args.out}")
        return 0
    work = Path(args.work)
    if args.cmd == "run":
        shutil.rmtree(work, ignore_errors=True)
        prepared = Path(args.prepared) if args.prepared else None
        if args.pack:
            from pvqae.data.pack import unpack

            prepared = unpack(Path(args.pack), work / "prepared")
        rec = run(params, prepared, work, progress=not args.quiet)
        write_json(rec, Path(args.out))
        brief = {m: {k: round(rec[m]["mean"][k], 4) for k in ("image_auroc", "pixel_auroc", "aupro")}
                 for m in ("pvqae", "static_vq")}
        print(f"wrote {args.out}: {brief}, steps {rec['plan']}, {rec['wall_seconds']:.0f} s")
        return 0
    prepared_for = {int(k): Path(v) for k, v in (s.split("=", 1) for s in args.prepared)}
    fractions = tuple(float(f) for f in args.fractions.split(","))
    sizes = tuple(tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",") if s)
    from pvqae.report import paper_table1

    man = load_prepared(next(iter(prepared_for.values())), "test")["manifest"]
    paper = [v["pvqae"][0] / 100 for c, v in paper_table1(man["dataset"]).items() if c in man["classes"]
             and "pvqae" in v]
    targets = {"paper_pvqae_image_auroc": float(np.mean(paper))} if paper else {}
    out_path = Path(args.out)
    done = json.loads(out_path.read_text())["rows"] if out_path.is_file() else []
    t0 = time.perf_counter()

    def record(rows: list[dict], complete: bool = False) -> None:
        write_json({"benchmark": "scaling", "dataset": man["dataset"], "profile": params.profile,
                    "complete": complete, "fractions_of": {"pretrain": params.pretrain.steps,
                                                           "budget": params.budget.steps,
                                                           "static_vq": params.static_vq.steps},
                    "reference_fraction": args.reference, "rows": rows,
                    "fit": summarise_scaling(rows, targets), "targets": targets, "machine": machine_info(),
                    "wall_seconds_this_call": time.perf_counter() - t0}, out_path)

    res = scaling(params, prepared_for, work, fractions, sizes, args.reference, done=done, on_row=record)
    record(res["rows"], complete=True)
    from pvqae.plots import save_fig, scaling_figure

    full = out_path.parent / f"accuracy_{man['dataset']}_{params.profile}.json"  # the whole schedule, if recorded
    fig = save_fig(scaling_figure(json.loads(out_path.read_text()), json.loads(full.read_text()) if full.is_file()
                                  else None), out_path.with_suffix(""))
    print(f"wrote {args.out} and {fig[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

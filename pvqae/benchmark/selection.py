"""Choosing a baseline's settings without test labels: every candidate is trained on the
normal training images and scored on the label-free validation split (the held-out normal
images and their synthetically defective copies, :func:`pvqae.data.prepared.load_validation`),
through the same harness as the baselines stage (:func:`pvqae.baselines.harness.run_method`).
The test split is never loaded.

The record names the candidates, each one's validation figures and training seconds, the rule
and the choice; ``reports/benchmarks/selection_<dataset>_<size>px_<method>.json`` keeps it.
Run from a checkout whose ``reports/prepared`` holds the dataset (``dvc repro prepare`` with
its profile)::

    python -m pvqae.benchmark.selection patch_ae \\
        --grid baselines.patch_ae.finetune_backbone=true,false --out reports/benchmarks

A grid key is a dotted params key; its comma-separated values are YAML-parsed (``[8, 16]``
stays a list: commas inside brackets do not split). Candidates are the grid's product.

``pvqae`` as the method selects PVQAE's settings (sections ``pretrain``, ``model``,
``budget``, ``prior``, ``evaluate``). Without a ``pretrain`` / ``model`` key every candidate
learns its budget and prior from the same pre-trained autoencoder of the seed
(``reports/models/pretrain``, so run ``dvc repro pretrain`` first); with one, each candidate
pre-trains its own. Every candidate is scored with its ``evaluate.score.combine`` (the paper's
product unless the grid names a labelled variant) on the validation split as the model reads
it (pixels, or PVQAE-F's cached features)::

    python -m pvqae.benchmark.selection pvqae --grid budget.budget_scale=0.001,0.005,0.02
    python -m pvqae.benchmark.selection pvqae --grid pretrain.feature_jitter=0.0,0.5,1.2
    python -m pvqae.benchmark.selection pvqae --grid evaluate.score.prior_smoothing=0,0.1,1

For PVQAE-F a candidate may also change the cached features (``input.strides``,
``input.backbone``, ``input.weights``): it extracts its own from the same prepared images into
the run's temporary folder and pre-trains on them; the other candidates read the features
stage's cache, which must match the params (checked)::

    python -m pvqae.benchmark.selection pvqae --grid 'input.strides=[8, 16],[8, 16, 32]'

A later round (``--round N``) should name the record it tries to beat with ``--against``: that
record's choice joins the round's candidates with its recorded validation figures (it is not
retrained: same method, dataset, image size, seed and validation-split size, checked), so the
round's ``chosen`` is the rule's choice over both rounds, not just the best of the new grid. A
record from older code may not reproduce (MTSD's Patch AE: 94.1 recorded, 92.8 rerun); rerun
the incumbent as a one-candidate round and point ``--against`` at that::

    python -m pvqae.benchmark.selection patch_ae --round 4 --against \
        reports/benchmarks/selection_mtsd_128px_patch_ae.json --grid baselines.patch_ae.coreset_ratio=0.25,1.0
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import tempfile
import time
from pathlib import Path

from pvqae.baselines import METHODS, NEEDS_BACKBONE
from pvqae.config import get_dotted, load_params, parse_value, set_dotted
from pvqae.settings import Params

PRETRAIN_SECTIONS = ("pretrain", "model")  # a candidate changing these pre-trains its own autoencoder
PVQAE_SECTIONS = (*PRETRAIN_SECTIONS, "budget", "prior", "evaluate")  # what a PVQAE candidate may change
# PVQAE-F's autoencoder size lives in `input`; a candidate changing it pre-trains its own autoencoder
FEATURE_AE_KEYS = ("input.ch", "input.ch_mult", "input.embed_dim", "input.num_codes")
# the keys that define PVQAE-F's cached features: a candidate changing them extracts its own
# features (into the selection's temporary folder) and pre-trains on them
FEATURE_CACHE_KEYS = ("input.backbone", "input.weights", "input.strides")
RULE = "highest validation image AUROC, then pixel AUROC (the first listed candidate wins a tie)"
FIGURES = ("image_auroc", "pixel_auroc", "aupro")


def split_values(text: str) -> list:
    """``"true,false"`` -> ``[True, False]``; ``"[8, 16],[8]"`` -> ``[[8, 16], [8]]``: commas
    split values only outside brackets; each value is YAML-parsed (``1e-4`` is a float)."""
    values, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            values.append(cur)
            cur = ""
        else:
            cur += ch
    values.append(cur)
    if any(not v.strip() for v in values):
        raise ValueError(f"empty value in grid {text!r}")
    return [parse_value(v) for v in values]


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["a.b=1,2", "c=x"]`` -> ``{"a.b": [1, 2], "c": ["x"]}``."""
    grid = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--grid expects key=v1,v2,..., got {item!r}")
        key, text = item.split("=", 1)
        grid[key.strip()] = split_values(text)
    return grid


def candidates(params: dict, grid: dict[str, list]) -> list[dict]:
    """The grid's product as ``{key: value}`` settings; every key must exist in ``params``
    (a typo is an error naming it, before anything trains)."""
    for key in grid:
        try:
            get_dotted(params, key)
        except KeyError:
            raise KeyError(f"--grid {key}: params.yaml has no such key") from None
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def _with(params: dict, setting: dict) -> dict:
    """A copy of ``params`` with the dotted keys of ``setting`` set."""
    p = copy.deepcopy(params)
    for k, v in setting.items():
        set_dotted(p, k, v)
    return p


def choose(rows: list[dict]) -> dict:
    """The :data:`RULE`'s candidate among ``rows`` (each with a ``validation`` mapping)."""
    return max(rows, key=lambda r: (r["validation"]["image_auroc"], r["validation"]["pixel_auroc"]))


def select(method: str, grid: dict[str, list], params: dict, prepared_dir: Path = Path("reports/prepared"),
           seed: int = 0, progress: bool = True) -> dict:
    """Train and validate every candidate of ``grid`` for ``method``; the selection record."""
    from pvqae.backbones import load_backbone
    from pvqae.baselines import harness
    from pvqae.data.prepared import load_prepared, load_validation

    if method not in METHODS:
        raise ValueError(f"unknown baseline {method!r}; baselines are {', '.join(METHODS)}")
    settings = candidates(params, grid)
    configs = [Params.from_dict(_with(params, setting)) for setting in settings]  # every candidate read before any trains
    train = load_prepared(prepared_dir, "train")
    val = load_validation(prepared_dir)
    base = Params.from_dict(params)
    backbone = None
    if method in NEEDS_BACKBONE:
        bb = base.baselines
        backbone, status = load_backbone(bb.backbone, bb.backbone_weights, bb.download_weights)
        if backbone is None:
            raise RuntimeError(f"{method} needs the pretrained backbone: {status}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (setting, cfg) in enumerate(zip(settings, configs)):
            t0 = time.perf_counter()
            _, res, summary = harness.run_method(method, cfg.baselines, cfg.data, train, val, cfg.evaluate, seed,
                                                 Path(tmp) / f"c{i}", backbone, progress)
            rows.append({"setting": setting, "seconds": time.perf_counter() - t0,
                         "train_seconds": summary.get("seconds", summary.get("train_seconds")),
                         "validation": {k: res["mean"][k] for k in FIGURES},
                         "validation_by_kind": res["image_auroc_by_kind"]})  # per synthetic defect kind
            if progress:
                print(json.dumps(rows[-1]), flush=True)
    return _record(method, grid, rows, params, base, val, Path(prepared_dir), seed)


def _record(method: str, grid: dict, rows: list[dict], params: dict, base: Params, val: dict, prepared_dir: Path,
            seed: int, **extra) -> dict:
    """The selection record of ``rows`` (one per candidate), the :data:`RULE`'s choice included."""
    manifest = json.loads((Path(prepared_dir) / "manifest.json").read_text())
    best = choose(rows)
    return {"benchmark": "selection", "method": method, **extra, "dataset": manifest["dataset"],
            "classes": val["classes"], "image_size": base.data.image_size, "profile": params.get("profile"),
            "seed": seed,
            "split": "label-free validation (synthetic defects on held-out normal training images); no test image read",
            "n_validation": {"normal": int((val["label"] == 0).sum()), "defective": int((val["label"] == 1).sum())},
            "grid": grid, "rule": RULE, "candidates": rows, "chosen": best["setting"],
            "chosen_validation": best["validation"]}


def select_pvqae(grid: dict[str, list], params: dict, paths: dict | None = None, seed: int = 0,
                 progress: bool = True) -> dict:
    """Budget learning, prior and scoring of every candidate of ``grid`` (keys of
    :data:`PVQAE_SECTIONS`, :data:`FEATURE_AE_KEYS`, :data:`FEATURE_CACHE_KEYS`), scored on the
    label-free validation split with its own ``evaluate.score.combine`` (the paper's product by
    default). Without a :data:`PRETRAIN_SECTIONS`, autoencoder-size or feature key every
    candidate starts from the seed's one pre-trained autoencoder; with one, each pre-trains its
    own first (same seed).
    Candidates that differ only in ``evaluate`` share one trained model and prior. The
    selection record, as :func:`select`'s, with each candidate's codes per image and routed
    level fractions on the validation images."""
    import torch

    from pvqae.evaluation import auroc_by_kind, code_allocation
    from pvqae.model import LEVEL_NAMES
    from pvqae.stages import PATHS, load_split, load_validation_split, out_path, seed_dir
    from pvqae.stages.budget import learn_budget
    from pvqae.stages.evaluate import evaluate_model
    from pvqae.stages.pretrain import pretrain_pvqae
    from pvqae.stages.prior import learn_prior

    paths = dict(paths or PATHS)
    bad = [k for k in grid if k.split(".", 1)[0] not in PVQAE_SECTIONS and k not in FEATURE_AE_KEYS + FEATURE_CACHE_KEYS]
    if bad:
        raise KeyError(f"--grid {', '.join(bad)}: a PVQAE candidate may change only the sections "
                       f"{', '.join(PVQAE_SECTIONS)}, the feature autoencoder's {', '.join(FEATURE_AE_KEYS)} "
                       f"and the cached features' {', '.join(FEATURE_CACHE_KEYS)}")
    base = Params.from_dict(params)
    cache_keys = [k for k in grid if k in FEATURE_CACHE_KEYS]
    if cache_keys and base.input.kind != "features":
        raise KeyError(f"--grid {', '.join(cache_keys)}: these define PVQAE-F's cached features; the params have "
                       f"input.kind: {base.input.kind} (set `input.kind: features`, e.g. the `features` profile)")
    settings = candidates(params, grid)
    configs = [Params.from_dict(_with(params, setting)) for setting in settings]  # every candidate read before any trains
    own_pretraining = any(k.split(".", 1)[0] in PRETRAIN_SECTIONS or k in FEATURE_AE_KEYS + FEATURE_CACHE_KEYS
                          for k in grid)
    pretrained = seed_dir(out_path(paths, "pretrain_models"), seed) / "pvqae_pretrain.pt"
    if not own_pretraining and not pretrained.is_file():
        raise FileNotFoundError(f"{pretrained} is missing: run `dvc repro pretrain` (or `python -m pvqae run pretrain`) "
                                f"with seed {seed} in params `seeds` first")
    from pvqae.features import build_cache, read_manifest

    def cache_of(cfg: Params) -> str:
        return json.dumps([cfg.input.backbone, cfg.input.weights, list(cfg.input.strides)])

    inputs = {}  # a feature cache's settings -> (train, held-out, validation, pooled validation, defect kinds)

    def splits_for(cfg: Params, tmp: Path) -> tuple:
        key = cache_of(cfg)
        if key not in inputs:
            split_paths = paths
            if key == cache_of(base) and base.input.kind == "features":  # the features stage's cache must be base's
                made = read_manifest(out_path(paths, "features"))
                if made.get("backbone") != base.input.backbone or made.get("strides") != list(base.input.strides):
                    raise ValueError(f"{out_path(paths, 'features')} holds {made.get('backbone')} features at strides "
                                     f"{made.get('strides')}, the params say {base.input.backbone} at "
                                     f"{list(base.input.strides)}: run `python -m pvqae run features` first")
            if key != cache_of(base):  # a candidate with other features: its own cache, from the same images
                split_paths = {**paths, "features": str(tmp / f"features{len(inputs)}")}
                build_cache(cfg.input, cfg.data.entropy, out_path(paths, "prepared"),
                            Path(split_paths["features"]), progress)
            inputs.clear()  # one cache in memory at a time: candidates are grouped by cache below
            val = load_validation_split(split_paths)
            # the evaluate stage's allocation table with every class pooled into one: normal vs defective
            pooled = {**val, "class_index": torch.zeros_like(val["class_index"]), "classes": ["all"]}
            inputs[key] = (load_split(split_paths, "train"), load_split(split_paths, "val"), val, pooled,
                           [m.get("defect") or "" for m in val["meta"]])
        return inputs[key]

    # candidates with the same features run one after the other (each cache is built and read once),
    # rows keep the grid's order
    order = sorted(range(len(settings)), key=lambda j: [cache_of(c) for c in configs].index(cache_of(configs[j])))
    trained = {}  # the non-evaluate part of a setting -> (model, prior, summary): evaluate-only candidates share
    rows = [None] * len(settings)
    with tempfile.TemporaryDirectory() as tmp:
        for i in order:
            setting, cfg = settings[i], configs[i]
            t0 = time.perf_counter()
            train, heldout, val, pooled, kinds = splits_for(cfg, Path(tmp))
            key = json.dumps({k: v for k, v in setting.items() if not k.startswith("evaluate.")}, sort_keys=True)
            if key not in trained:
                folder = Path(tmp) / f"c{i}"
                pre_summary = {}
                if own_pretraining:
                    pre_summary = pretrain_pvqae(cfg, train, heldout, folder, seed, progress)
                model, summ = learn_budget(cfg, train, heldout, folder / "pvqae_pretrain.pt" if own_pretraining
                                           else pretrained, folder, seed, progress)
                summ = {**summ, "train_seconds": (summ.get("train_seconds") or 0.0)
                        + (pre_summary.get("train_seconds") or 0.0)}
                prior = None
                if cfg.budget.fixed_level is None:
                    prior, _ = learn_prior(model, train, heldout, cfg.prior, folder / "prior.pt", seed, progress)
                trained[key] = (model, prior, summ)
            model, prior, summ = trained[key]
            sc, res = evaluate_model(model, prior, val, cfg.evaluate, progress, desc=f"candidate {i}")
            fractions = None  # a single-level model routes nothing
            if sc["routed"] is not None:
                fractions = {r["images"]: [r[ln] for ln in LEVEL_NAMES]
                             for r in code_allocation(pooled, sc["routed"], "routed")}
            rows[i] = {"setting": setting, "seconds": time.perf_counter() - t0,
                       "train_seconds": summ.get("train_seconds"),
                       "validation": {k: res["mean"][k] for k in FIGURES},
                       "validation_by_kind": auroc_by_kind(val["label"].numpy(), val["class_index"].numpy(), kinds,
                                                           val["classes"], sc["image"]),
                       "codes_per_image": res["codes_per_image"],
                       "level_fractions": fractions, "heldout_l1": summ.get("heldout_l1")}
            if progress:
                print(json.dumps(rows[i]), flush=True)
    return _record("pvqae-f" if base.input.kind == "features" else "pvqae", grid, rows, params, base,
                   val, out_path(paths, "prepared"), seed, input=base.input.kind, score=base.evaluate.score.label())


def _mean_tree(values: list):
    """The element-wise mean of equally shaped numbers / lists / dicts (``None`` stays)."""
    first = values[0]
    if isinstance(first, dict):
        return {k: _mean_tree([v[k] for v in values]) for k in first}
    if isinstance(first, list):
        return [_mean_tree(list(items)) for items in zip(*values)]
    if first is None or isinstance(first, (bool, str)):
        return first
    return float(sum(values) / len(values))


def merge_seeds(records: list[dict]) -> dict:
    """One selection record from the records of the same grid trained with different seeds:
    each candidate's figures are the mean over seeds, with ``validation_std`` (population std)
    and ``validation_by_seed``; seconds add up; ``seed`` becomes the list of seeds and the
    :data:`RULE` chooses on the means."""
    import numpy as np

    if len(records) == 1:
        return records[0]
    seeds = [r["seed"] for r in records]
    first = records[0]
    rows = []
    for i, row in enumerate(first["candidates"]):
        per_seed = [r["candidates"][i] for r in records]
        if any(c["setting"] != row["setting"] for c in per_seed):
            raise ValueError(f"candidate {i}: the seeds' records list different settings")
        merged = {k: _mean_tree([c.get(k) for c in per_seed]) for k in row if k not in ("setting", "seconds",
                                                                                        "train_seconds")}
        merged.update(setting=row["setting"], seconds=sum(c["seconds"] for c in per_seed),
                      train_seconds=sum(c.get("train_seconds") or 0.0 for c in per_seed),
                      validation_std={k: float(np.std([c["validation"][k] for c in per_seed])) for k in FIGURES},
                      validation_by_seed={str(s): c["validation"] for s, c in zip(seeds, per_seed)})
        rows.append(merged)
    best = choose(rows)
    return {**first, "seed": seeds, "candidates": rows, "chosen": best["setting"], "chosen_validation": best["validation"]}


COMPARABLE = ("method", "dataset", "image_size", "seed", "n_validation")  # what two rounds must share


def with_incumbent(record: dict, earlier: dict, name: str) -> dict:
    """``record`` with ``earlier``'s chosen candidate as one more candidate, marked
    ``incumbent: name`` (its validation figures as recorded, not retrained), and ``chosen``
    re-taken by the :data:`RULE` over all of them. The incumbent's setting is its chosen
    setting with the earlier round's ``fixed`` keys. Raises ``ValueError`` naming the field
    where the two records were not measured alike (their figures could not be compared)."""
    differ = [k for k in COMPARABLE if record.get(k) != earlier.get(k)]
    if differ:
        raise ValueError(f"--against {name}: not comparable with this round ("
                         + "; ".join(f"{k}: {earlier.get(k)!r} there, {record.get(k)!r} here" for k in differ) + ")")
    row = next((r for r in earlier["candidates"] if r["setting"] == earlier["chosen"]), None)
    if row is None:
        raise ValueError(f"--against {name}: its chosen setting {earlier['chosen']} is not among its candidates")
    incumbent = {**row, "setting": {**earlier.get("fixed", {}), **row["setting"]}, "incumbent": name,
                 "incumbent_round": earlier.get("round", 1)}
    rows = [*record["candidates"], incumbent]
    best = choose(rows)
    return {**record, "candidates": rows, "chosen": best["setting"], "chosen_validation": best["validation"],
            "against": name}


def record_path(record: dict, out_dir: Path) -> Path:
    """``<out_dir>/selection_<dataset>_<size>px_<method>.json``."""
    from pvqae.benchmark.accuracy_record import dataset_tag

    suffix = f"_round{record['round']}" if record.get("round") else ""
    return Path(out_dir) / f"selection_{dataset_tag(record)}_{record['image_size']}px_{record['method']}{suffix}.json"


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("method", choices=(*METHODS, "pvqae"), help="a baseline, or pvqae (pretrain / model / budget / prior / evaluate keys)")
    ap.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                    help="a dotted params key and its candidate values (repeatable; candidates = product)")
    ap.add_argument("--seed", type=int, action="append", default=None,
                    help="training seed (repeatable: every candidate is trained per seed and ranked on the mean)")
    ap.add_argument("--prepared", type=Path, default=Path("reports/prepared"))
    ap.add_argument("--round", type=int, default=None,
                    help="a later round of the same selection (its record gets _round<N>; the table lists rounds)")
    ap.add_argument("--against", type=Path, default=None, metavar="RECORD",
                    help="an earlier round's selection record: its choice competes in this round's rule")
    ap.add_argument("--out", type=Path, default=Path("reports/benchmarks"), help="folder of the record")
    args = ap.parse_args(argv)
    if not args.grid:
        ap.error("give at least one --grid KEY=V1,V2")
    earlier = None
    if args.against is not None:  # read before anything trains: a wrong path fails in a second, not an hour
        if not args.against.is_file():
            ap.error(f"--against {args.against}: no such record")
        earlier = json.loads(args.against.read_text())
    grid, params, records = parse_grid(args.grid), load_params(), []
    for seed in args.seed or [0]:
        if args.method == "pvqae":
            from pvqae.stages import PATHS

            records.append(select_pvqae(grid, params, {**PATHS, "prepared": str(args.prepared)}, seed=seed))
        else:
            records.append(select(args.method, grid, params, args.prepared, seed))
    record = merge_seeds(records)
    if args.round is not None:
        record["round"] = args.round
    if earlier is not None:
        record = with_incumbent(record, earlier, args.against.name)
    from pvqae.records import write_json

    path = record_path(record, args.out)
    write_json(record, path)
    print("chosen", record["chosen"], "->", path)
    return path


if __name__ == "__main__":
    main()

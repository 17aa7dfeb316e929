"""The stage modules' building blocks: training seeds, ablation overrides, aggregation over
seeds, percent cells, ablation-variant results, one small run of the prior + evaluation steps."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from pvqae import evaluation, records, stages
from pvqae.data import prepared
from pvqae.metrics import METRIC_NAMES
from pvqae.stages import evaluate as evaluate_stage
from pvqae.stages import prior as prior_stage
from pvqae.stages import variant as variant_stage


def _res(image, pixel=0.5, aupro=0.4, per_class=None, ips=None) -> dict:
    """A hand-made :func:`pvqae.metrics.evaluate`-like result."""
    mean = {"image_auroc": image, "pixel_auroc": pixel, "aupro": aupro, "image_f1_max": 0.6, "pixel_f1_max": 0.3}
    r = {"mean": mean, "per_class": per_class or {}}
    if ips is not None:
        r["inference_images_per_second"] = ips
    return r


# ----------------------------------------------------------------------------- seeds

def test_training_seeds_are_a_typed_list_of_distinct_ints():
    from pvqae.settings import Params
    from pvqae.strict_config import ConfigError

    assert Params.from_dict({"seeds": [0, 1, 2]}).seeds == (0, 1, 2)
    for bad in ([0, 0], [1, 2, 1], []):
        with pytest.raises(ConfigError, match=r"seeds: must be a non-empty list of distinct integers"):
            Params.from_dict({"seeds": bad})
    with pytest.raises(ConfigError, match=r"seeds: null is not allowed"):
        Params.from_dict({"seeds": None})
    with pytest.raises(ConfigError, match=r"seeds\[1\]: expected int, got str '1'"):
        Params.from_dict({"seeds": [0, "1"]})


def test_seed_dir(tmp_path):
    assert stages.seed_dir(tmp_path, 2) == tmp_path / "seed2"
    assert stages.seed_dir("reports/models/budget", 0).as_posix() == "reports/models/budget/seed0"
    assert stages.seed_dir("x", np.int64(10)).name == "seed10"


# ----------------------------------------------------------------------------- overrides

PARAMS = {"budget": {"lambda_max": 1.25, "lambda_schedule": "linear", "steps": 200},
          "prior": {"mode": "per-class"}, "seed": 0}


def test_apply_overrides_is_a_deep_copy_with_dotted_keys():
    before = json.dumps(PARAMS, sort_keys=True)
    out = variant_stage.apply_overrides(PARAMS, {"budget.lambda_max": 0.5, "prior.mode": "none", "new.deep.key": 1})
    assert out["budget"] == {"lambda_max": 0.5, "lambda_schedule": "linear", "steps": 200}
    assert out["prior"]["mode"] == "none" and out["new"] == {"deep": {"key": 1}}
    assert json.dumps(PARAMS, sort_keys=True) == before  # the original is untouched
    assert out["budget"] is not PARAMS["budget"]
    out["budget"]["steps"] = 1  # and shares no nested dict with it
    assert PARAMS["budget"]["steps"] == 200
    assert variant_stage.apply_overrides(PARAMS, {}) == PARAMS


def test_is_main_setting():
    parsed = yaml.safe_load("1.25")  # what `--set budget.lambda_max=1.25` / dvc's foreach gives
    assert variant_stage.is_main_setting(PARAMS, {"budget.lambda_max": parsed})
    assert variant_stage.is_main_setting(PARAMS, {"budget.lambda_max": 1.25 + 1e-12})  # float tolerance
    assert variant_stage.is_main_setting(PARAMS, {"budget.lambda_max": "1.25"})  # a string number
    assert variant_stage.is_main_setting(PARAMS, {"budget.lambda_schedule": "linear", "budget.steps": 200})
    assert variant_stage.is_main_setting(PARAMS, {})
    assert not variant_stage.is_main_setting(PARAMS, {"budget.lambda_max": 0.5})
    assert not variant_stage.is_main_setting(PARAMS, {"budget.lambda_schedule": "cosine"})
    assert not variant_stage.is_main_setting(PARAMS, {"budget.lambda_max": 1.25, "prior.mode": "none"})
    with pytest.raises(KeyError, match=r"params have no key 'budget\.nope'"):
        variant_stage.is_main_setting(PARAMS, {"budget.nope": 1})
    with pytest.raises(KeyError, match="seed.x"):
        variant_stage.is_main_setting(PARAMS, {"seed.x": 1})  # through a non-dict


# ----------------------------------------------------------------------------- aggregation

def test_aggregate_seeds_means_and_population_std():
    per_seed = [
        _res(0.7, 0.6, per_class={"a": {"image_auroc": 0.5, "pixel_auroc": 0.9}, "b": {"image_auroc": 1.0}}, ips=10.0),
        _res(0.8, 0.6, per_class={"a": {"image_auroc": 0.7, "pixel_auroc": 0.7}, "b": {"image_auroc": 0.8}}, ips=30.0),
        _res(0.9, 0.6, per_class={"a": {"image_auroc": 0.9, "pixel_auroc": 0.8}, "b": {"image_auroc": 0.9}}),
    ]
    agg = evaluation.aggregate_seeds(per_seed)
    assert agg["n_seeds"] == 3
    assert set(agg["mean"]) == set(agg["std"]) == set(METRIC_NAMES)
    assert agg["mean"]["image_auroc"] == pytest.approx(0.8)
    assert agg["std"]["image_auroc"] == pytest.approx(np.sqrt(2 / 3) * 0.1)  # population std (ddof 0)
    assert agg["std"]["image_auroc"] == pytest.approx(float(np.std([0.7, 0.8, 0.9])))
    assert agg["mean"]["pixel_auroc"] == pytest.approx(0.6) and agg["std"]["pixel_auroc"] == pytest.approx(0.0)
    assert list(agg["per_class"]) == ["a", "b"]
    assert agg["per_class"]["a"]["image_auroc"] == pytest.approx(0.7)
    assert agg["per_class_std"]["a"]["image_auroc"] == pytest.approx(float(np.std([0.5, 0.7, 0.9])))
    assert agg["per_class"]["a"]["pixel_auroc"] == pytest.approx(0.8)
    assert agg["per_class"]["b"]["image_auroc"] == pytest.approx(0.9)
    assert math.isnan(agg["per_class"]["b"]["pixel_auroc"])  # reported by no seed
    assert math.isnan(agg["per_class_std"]["b"]["aupro"])
    assert agg["inference_images_per_second"] == pytest.approx(20.0)  # mean of the seeds that have it


def test_aggregate_one_seed_has_zero_std():
    r = _res(0.75, per_class={"a": {"image_auroc": 0.75}})
    agg = evaluation.aggregate_seeds([r])
    assert agg["n_seeds"] == 1 and agg["mean"]["image_auroc"] == 0.75 and agg["std"]["image_auroc"] == 0.0
    assert agg["per_class"]["a"]["image_auroc"] == 0.75 and agg["per_class_std"]["a"]["image_auroc"] == 0.0
    assert "inference_images_per_second" not in agg


def test_aggregate_seeds_nan_handling():
    nan = float("nan")
    per_seed = [_res(nan, pixel=nan, aupro=None), _res(0.6, pixel=nan), _res(0.8, pixel=nan)]
    agg = evaluation.aggregate_seeds(per_seed)
    assert agg["mean"]["image_auroc"] == pytest.approx(0.7)  # nanmean of the other seeds
    assert agg["std"]["image_auroc"] == pytest.approx(0.1)
    assert agg["mean"]["aupro"] == pytest.approx(0.4)  # None counts as NaN
    assert math.isnan(agg["mean"]["pixel_auroc"]) and math.isnan(agg["std"]["pixel_auroc"])  # all NaN -> NaN


def test_aggregate_seeds_restricts_to_metrics_and_rejects_empty():
    agg = evaluation.aggregate_seeds([_res(0.5), _res(0.7)], metrics=("image_auroc",))
    assert set(agg["mean"]) == {"image_auroc"} and agg["mean"]["image_auroc"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="no per-seed results"):
        evaluation.aggregate_seeds([])


# ----------------------------------------------------------------------------- percent cells

def test_pm_formatting():
    assert records.pm(0.781) == "78.1"
    assert records.pm(0.781, 0.012, 1) == "78.1"  # one seed: no std shown
    assert records.pm(0.781, 0.012, 3) == "78.1 ± 1.2"
    assert records.pm(1.0, 0.0, 2) == "100.0 ± 0.0"
    assert records.pm(0.781, float("nan"), 3) == "78.1"
    assert records.pm(0.781, None, 3) == "78.1"
    assert records.pm(float("nan"), 0.01, 3) == "n/a"
    assert records.pm(None) == "n/a"


# ----------------------------------------------------------------------------- variants

MAIN = {"pvqae": {"mean": {"image_auroc": 0.9}, "per_class": {}, "n_seeds": 1}, "static_vq": {"mean": {}}}


def _write_variant(root, name, rec):
    (root / name).mkdir(parents=True)
    (root / name / "metrics.json").write_text(json.dumps(rec))


def test_variant_name():
    assert variant_stage.variant_name("lambda_max", 0.5) == "lambda_max-0.5"
    assert variant_stage.variant_name("lambda_schedule", "cosine") == "lambda_schedule-cosine"


def test_variant_result_same_as_main_returns_main_metrics(tmp_path):
    _write_variant(tmp_path, "lambda_max-1.25", {"same_as_main": True})
    out = variant_stage.variant_result(tmp_path, "lambda_max", 1.25, MAIN)
    assert out == {**MAIN["pvqae"], "same_as_main": True}
    assert "same_as_main" not in MAIN["pvqae"]  # the main metrics are not modified


def test_variant_result_reads_its_own_metrics(tmp_path):
    rec = {"same_as_main": False, "mean": {"image_auroc": 0.7}, "per_class": {}, "n_seeds": 2}
    _write_variant(tmp_path, "lambda_max-0.5", rec)
    assert variant_stage.variant_result(tmp_path, "lambda_max", 0.5, MAIN) == rec


def test_variant_result_missing_names_the_dvc_stage(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r"lambda_max-0\.5.metrics\.json is missing.*`dvc repro lambda_max@0\.5`"):
        variant_stage.variant_result(tmp_path, "lambda_max", 0.5, MAIN)


# ----------------------------------------------------------------------------- prior + evaluation

@pytest.mark.usefixtures("one_thread")
def test_learn_prior_and_evaluate_model_on_tiny_data(tiny_reports, tmp_path):
    from pvqae.model import PVQAE
    from pvqae.prior import PriorConfig
    from pvqae.settings import EvaluateConfig

    prep = tiny_reports / "prepared"
    train, test = prepared.load_prepared(prep, "train"), prepared.load_prepared(prep, "test")
    model = PVQAE.from_checkpoint(tiny_reports / "models" / "budget" / "pvqae.pt")
    prior_params = PriorConfig(mode="per-class", steps=3, batch_size=4, dim=16, heads=2)
    prior, summary = prior_stage.learn_prior(model, train, train, prior_params, tmp_path / "prior.pt", seed=0,
                                             progress=False)
    assert prior is not None and (tmp_path / "prior.pt").is_file()
    assert summary["mode"] == "per-class" and 0 <= summary["heldout_accuracy"] <= 1
    ev = EvaluateConfig.from_dict({"batch_size": 4, "fpr_limit": 0.3, "score": {"image_score": "max", "combine": "product"}})
    scores, res = evaluate_stage.evaluate_model(model, prior, test, ev, progress=False)
    n = len(test["image"])
    assert scores["maps"].shape == (n, 32, 32) and scores["image"].shape == (n,)
    assert set(res["per_class"]) == {"printed", "texture"}
    for cls, m in res["per_class"].items():
        assert set(m) == set(METRIC_NAMES), cls
        for k, v in m.items():
            assert 0 <= v <= 1, (cls, k, v)
    for k in METRIC_NAMES:
        assert res["mean"][k] == pytest.approx(np.mean([res["per_class"][c][k] for c in res["per_class"]]))
    assert res["inference_images_per_second"] > 0

    # no prior ("none" mode): nothing learned, the routed reconstruction error still scores
    none_prior, none_summary = prior_stage.learn_prior(model, train, train, PriorConfig(mode="none"), tmp_path / "none.pt",
                                                       seed=0, progress=False)
    assert none_prior is None and none_summary == {"mode": "none"}
    _, res_none = evaluate_stage.evaluate_model(model, None, test, ev, progress=False)
    assert set(res_none["per_class"]) == {"printed", "texture"}


def test_defect_samples_cycle_through_the_defect_kinds():
    import torch

    from pvqae.evaluation import defect_samples

    kinds = [None, "crack", "crack", "crack", "stain", None, "scratch", "stain"]
    split = {"class_index": torch.tensor([0, 0, 0, 0, 0, 1, 0, 0]),
             "label": torch.tensor([0 if k is None else 1 for k in kinds]),
             "meta": [{"defect": k} for k in kinds]}
    # kinds in name order: crack [1, 2, 3], scratch [6], stain [4, 7]
    assert defect_samples(split, 0, 3) == [1, 6, 4]
    assert defect_samples(split, 0, 5) == [1, 6, 4, 2, 7]
    assert defect_samples(split, 0, 99) == [1, 6, 4, 2, 7, 3]
    assert defect_samples(split, 1, 3) == []


def test_the_stage_runner_skips_jsonschemas_iri_grammar_and_notebooks_still_validate():
    """Every stage's runner imports jupytext and papermill (nbformat -> jsonschema), whose optional
    IRI format checker compiles a Lark grammar at import (about 3 s of CPU per stage); the runner
    keeps that module out, and nbformat still validates a stage notebook."""
    import subprocess
    import sys

    code = ("import sys; from pvqae.runner import _skip_iri_grammar, notebook_source; _skip_iri_grammar(); "
            "import jupytext, papermill, nbformat; nbformat.validate(jupytext.read(notebook_source('prepare'))); "
            "print(sys.modules.get('rfc3987_syntax') is None, 'lark' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"], out.stderr


def test_a_stage_reading_a_section_it_does_not_declare_is_an_error_naming_the_fix():
    import copy

    from pvqae.config import load_params

    params = load_params()
    params["prior"]["steps"] = 7
    cfg, _ = stages.configure("prior", stages.stage_params("prior", params))
    assert cfg.prior.steps == 7 and cfg.seeds == tuple(params["seeds"])  # declared: params.yaml's values
    for read in (lambda: cfg.data.image_size, lambda: cfg.evaluate.score, lambda: list(cfg.baselines)):
        with pytest.raises(stages.UndeclaredParamsError, match=r"stage 'prior' reads params section '\w+'.*"
                                                               r"pvqae/stages/prior.py"):
            read()
    with pytest.raises(stages.UndeclaredParamsError, match="stage 'features' reads params section 'seed'"):
        int(stages.configure("features", stages.stage_params("features", params))[0].seed)  # a top-level key too
    copy.deepcopy(cfg)  # copying a stage's params reads no section
    assert "not declared" in repr(cfg.data) and not hasattr(cfg.data, "__deepcopy__")
    # every stage's own declared sections are readable
    for name, st in stages.stages().items():
        c, _ = stages.configure(name, stages.stage_params(name, params))
        for section in st.params:
            assert not isinstance(getattr(c, section), stages.Undeclared), (name, section)

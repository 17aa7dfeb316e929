"""Selection of a baseline's settings on the label-free validation split (no test labels)."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_data_params

from pvqae.benchmark import selection
from pvqae.config import load_params
from pvqae.strict_config import ConfigError


def spy_splits(monkeypatch) -> list[str]:
    """The names of the prepared splits read from now on (``load_prepared`` is wrapped)."""
    from pvqae.data import prepared

    splits_read = []
    real = prepared.load_prepared

    def spy(d, split):
        splits_read.append(split)
        return real(d, split)

    monkeypatch.setattr(prepared, "load_prepared", spy)
    return splits_read


def test_grid_values_split_outside_brackets_and_parse_as_yaml():
    assert selection.split_values("true,false") == [True, False]
    assert selection.split_values("[8, 16],[8]") == [[8, 16], [8]]
    assert selection.split_values("0.001,1e-4") == [0.001, 1e-4]
    assert selection.parse_grid(["a.b=1,2", "c=x"]) == {"a.b": [1, 2], "c": ["x"]}
    with pytest.raises(ValueError, match="key=v1"):
        selection.parse_grid(["no_equals"])
    with pytest.raises(ValueError, match="empty value"):
        selection.split_values("1,,2")


def test_candidates_are_the_product_and_an_unknown_key_is_named():
    params = load_params()
    grid = {"baselines.patch_ae.finetune_backbone": [True, False], "baselines.patch_ae.steps": [10, 20, 30]}
    rows = selection.candidates(params, grid)
    assert len(rows) == 6 and rows[0] == {"baselines.patch_ae.finetune_backbone": True, "baselines.patch_ae.steps": 10}
    with pytest.raises(KeyError, match="baselines.patch_ae.stepz"):
        selection.candidates(params, {"baselines.patch_ae.stepz": [1]})


def test_choose_takes_image_then_pixel_auroc():
    rows = [{"setting": {"k": 1}, "validation": {"image_auroc": 0.9, "pixel_auroc": 0.5}},
            {"setting": {"k": 2}, "validation": {"image_auroc": 0.9, "pixel_auroc": 0.7}},
            {"setting": {"k": 3}, "validation": {"image_auroc": 0.8, "pixel_auroc": 0.99}}]
    assert selection.choose(rows)["setting"] == {"k": 2}


def test_select_scores_validation_only_and_records_the_choice(tmp_path, monkeypatch, isolated_training):
    from pvqae.data import prepared

    data = tiny_data_params()
    data.update(image_size=32, patch_size=8, val_fraction=0.5)  # the default model: a 4 x 4 coarse grid
    data["synthetic"].update(n_train=6)
    prep = tmp_path / "prepared"
    prepared.prepare(data, prep, seed=0, progress=False)
    params = load_params()
    params["data"] = data
    splits_read = spy_splits(monkeypatch)
    record = selection.select("median_filter", {"baselines.median_filter.kernel": [3, 9]}, params, prep,
                              progress=False)
    assert "test" not in splits_read and set(splits_read) == {"train", "val"}
    assert [r["setting"] for r in record["candidates"]] == [{"baselines.median_filter.kernel": 3},
                                                            {"baselines.median_filter.kernel": 9}]
    assert record["chosen"] == selection.choose(record["candidates"])["setting"]
    n = record["n_validation"]
    assert n["normal"] == n["defective"] > 0
    # the two kernels give different maps, so different validation figures
    a, b = (r["validation"] for r in record["candidates"])
    assert a != b
    # each candidate's image AUROC per synthetic defect kind, every kind of the split present
    from pvqae.data.prepared import load_validation

    kinds = {m["defect"] for m in load_validation(prep)["meta"] if m.get("label") == 1}
    by_kind = record["candidates"][0]["validation_by_kind"]
    assert {k for per_class in by_kind.values() for k in per_class} == kinds
    assert all(0 <= v <= 1 for per_class in by_kind.values() for v in per_class.values())
    from pvqae.baselines import harness

    def never(*a, **k):
        raise AssertionError("a candidate trained before every candidate was read")

    monkeypatch.setattr(harness, "run_method", never)
    with pytest.raises(ConfigError, match="bank_features"):  # the second candidate is bad: nothing trains
        selection.select("median_filter", {"baselines.patch_ae.bank_features": ["encoder", "pixels"]}, params, prep,
                         progress=False)
    path = selection.record_path(record, tmp_path)
    assert path.name == "selection_synthetic_32px_median_filter.json"
    json.dumps(record)  # serialisable as it is


def test_selection_table_lists_every_candidate_and_marks_the_choice(tmp_path):
    from pvqae.benchmark import selection_table

    rows = [{"setting": {"baselines.vq_flow.steps": s}, "seconds": 10.0,
             "validation": {"image_auroc": a, "pixel_auroc": 0.5, "aupro": 0.4}} for s, a in ((600, 0.9), (2000, 0.95))]
    rec = {"benchmark": "selection", "method": "vq_flow", "dataset": "mtsd", "classes": ["mtsd"], "image_size": 128,
           "candidates": rows, "chosen": selection.choose(rows)["setting"]}
    (tmp_path / "selection_mtsd_128px_vq_flow.json").write_text(json.dumps(rec))
    text = selection_table(tmp_path)
    assert "| mtsd | 128 px | vq_flow | 1 | steps=600 | 90.0 / 50.0 | 40.0 | 10 | - |" in text
    assert "**steps=2000** (chosen)" in text
    # a diagnostic selection whose choice was not applied is not marked chosen
    (tmp_path / "selection_mtsd_128px_median_filter.json").write_text(json.dumps(
        {**rec, "method": "median_filter", "applied": False}))
    assert "| median_filter | 1 | steps=2000 (ranks first; not applied: the record's note says why) |" \
        in selection_table(tmp_path)
    (tmp_path / "selection_mtsd_128px_median_filter.json").unlink()
    assert selection_table(tmp_path / "none") == ""
    pv = {**rows[0], "setting": {"budget.budget_scale": 0.001}, "codes_per_image": 120.4,
          "level_fractions": {"normal": [0.7, 0.3, 0.0], "defective": [0.5, 0.45, 0.05]}}
    (tmp_path / "selection_mtsd_256px_pvqae-f.json").write_text(json.dumps(
        {**rec, "method": "pvqae-f", "image_size": 256, "candidates": [pv], "chosen": pv["setting"]}))
    assert "| **budget_scale=0.001** (chosen) | 90.0 / 50.0 | 40.0 | 10 | 120, 70-30-0 / 50-45-5 |" in selection_table(tmp_path)


def _round(round_, rows, chosen=None, **extra):
    return {"benchmark": "selection", "method": "patch_ae", "dataset": "mtsd", "classes": ["mtsd"], "image_size": 128,
            "seed": 0, "n_validation": {"normal": 76, "defective": 76}, "round": round_, "candidates": rows,
            "chosen": chosen or selection.choose(rows)["setting"], **extra}


def test_a_later_round_against_an_earlier_record_keeps_the_earlier_choice_when_it_validates_higher(tmp_path):
    from pvqae.benchmark import selection_table

    def row(setting, image):
        return {"setting": setting, "seconds": 5.0, "validation": {"image_auroc": image, "pixel_auroc": 0.9,
                                                                      "aupro": 0.8}}

    earlier = _round(2, [row({"a.n": 1}, 0.93), row({"a.n": 3}, 0.94)], fixed={"a.steps": 500})
    new = _round(4, [row({"a.ratio": 0.25}, 0.92), row({"a.ratio": 1.0}, 0.935)])
    merged = selection.with_incumbent(new, earlier, "selection_round2.json")
    assert len(merged["candidates"]) == 3 and merged["against"] == "selection_round2.json"
    # the incumbent: round 2's choice with its fixed keys and recorded figures, not retrained
    assert merged["chosen"] == {"a.steps": 500, "a.n": 3} and merged["chosen_validation"]["image_auroc"] == 0.94
    assert merged["candidates"][-1]["incumbent_round"] == 2
    # a new candidate that validates higher wins
    better = _round(4, [row({"a.ratio": 1.0}, 0.95)])
    assert selection.with_incumbent(better, earlier, "r2.json")["chosen"] == {"a.ratio": 1.0}
    (tmp_path / "selection_mtsd_128px_patch_ae_round4.json").write_text(json.dumps(merged))
    text = selection_table(tmp_path)
    assert "| 4 | ratio=0.25 | 92.0 / 90.0 |" in text
    assert "**steps=500, n=3** (chosen) (round 2's choice, not retrained) | 94.0 / 90.0 |" in text
    # figures measured on another split (or seed, size, dataset) cannot compete: the field is named
    with pytest.raises(ValueError, match="n_validation"):
        selection.with_incumbent(new, {**earlier, "n_validation": {"normal": 21, "defective": 21}}, "b.json")
    with pytest.raises(ValueError, match="seed: 1 there, 0 here"):
        selection.with_incumbent(new, {**earlier, "seed": 1}, "b.json")


def test_against_a_missing_record_fails_before_anything_trains(tmp_path, capsys):
    with pytest.raises(SystemExit):
        selection.main(["median_filter", "--grid", "baselines.median_filter.kernel=3",
                        "--against", str(tmp_path / "nope.json"), "--out", str(tmp_path)])
    assert "nope.json: no such record" in capsys.readouterr().err
    assert not list(tmp_path.glob("selection_*"))


def _pvqae_setup(tmp_path):
    """A tiny prepared set with a validation split, its (pixels) features manifest and a
    pre-trained autoencoder of seed 0, laid out like the pipeline's reports/."""
    from pvqae.checkpoint import save_checkpoint
    from pvqae.data import prepared
    from pvqae.settings import Params
    from pvqae.stages import PATHS
    from pvqae.stages import features as features_stage

    data = tiny_data_params()
    data.update(image_size=32, patch_size=8, val_fraction=0.5)
    data["synthetic"].update(n_train=6)
    paths = {k: str(tmp_path / v.removeprefix("reports/")) for k, v in PATHS.items()}
    prepared.prepare(data, paths["prepared"], seed=0, progress=False)
    params = load_params()
    params["data"] = data
    params["budget"].update(steps=12, router_lr=0.05)
    params["prior"].update(steps=4)
    cfg = Params.from_dict(params)
    features_stage.run(cfg, paths, progress=False)
    import torch

    from pvqae.model import PVQAE

    torch.manual_seed(0)
    model_cfg = cfg.model_config(input_shape=(3, 32))
    model = PVQAE(model_cfg)
    save_checkpoint(tmp_path / "models" / "pretrain" / "seed0" / "pvqae_pretrain.pt",
                    {"model": model.state_dict(), "config": model_cfg.to_dict(), "train": {}, "steps": 0, "seed": 0})
    return params, paths


def test_select_pvqae_learns_each_budget_from_the_shared_pretraining_on_validation_only(tmp_path, monkeypatch,
                                                                                      isolated_training):
    params, paths = _pvqae_setup(tmp_path)
    splits_read = spy_splits(monkeypatch)
    record = selection.select_pvqae({"budget.budget_scale": [0.0, 50.0]}, params, paths, progress=False)
    assert "test" not in splits_read
    assert record["method"] == "pvqae" and record["input"] == "pixels" and record["score"] == "product"
    assert all(r["train_seconds"] > 0 for r in record["candidates"])
    free, costly = record["candidates"]
    # a large budget weight routes to cheaper (coarser) codes than no budget at all
    assert costly["codes_per_image"] < free["codes_per_image"]
    assert costly["level_fractions"]["normal"][0] > free["level_fractions"]["normal"][0]
    assert record["chosen"] == selection.choose(record["candidates"])["setting"]
    assert selection.record_path({**record, "round": 2}, tmp_path).name == "selection_synthetic_32px_pvqae_round2.json"
    # the same-network static VQ as a candidate: routing fixed coarse, no prior, the 4 x 4 coarse grid's codes
    (static,) = selection.select_pvqae({"budget.routing": ["coarse"]}, params, paths, progress=False)["candidates"]
    assert static["codes_per_image"] == 16
    assert static["level_fractions"] == {"normal": [1.0, 0.0, 0.0], "defective": [1.0, 0.0, 0.0]}


def test_select_pvqae_pretrains_each_candidate_that_changes_pretraining_and_refuses_other_sections(
        tmp_path, isolated_training):
    params, paths = _pvqae_setup(tmp_path)
    params["pretrain"].update(steps=4, disc_weight=0.0)
    with pytest.raises(KeyError, match="data.image_size.*may change only"):  # the prepared data
        selection.select_pvqae({"data.image_size": [16]}, params, paths, progress=False)
    with pytest.raises(KeyError, match="input.strides.*input.kind: pixels"):  # features, of a pixel model
        selection.select_pvqae({"input.strides": [[8]]}, params, paths, progress=False)
    (tmp_path / "models" / "pretrain" / "seed0" / "pvqae_pretrain.pt").unlink()
    with pytest.raises(FileNotFoundError, match="dvc repro pretrain"):
        selection.select_pvqae({"budget.budget_scale": [0.001]}, params, paths, progress=False)
    # a pretrain key: every candidate pre-trains its own autoencoder, so the shared one is not needed
    record = selection.select_pvqae({"pretrain.feature_jitter": [0.0, 1.0]}, params, paths, progress=False)
    clean, jittered = record["candidates"]
    assert clean["setting"] == {"pretrain.feature_jitter": 0.0}
    assert clean["train_seconds"] > 0 and jittered["train_seconds"] > 0
    assert clean["heldout_l1"] != jittered["heldout_l1"]  # two different pre-trainings
    assert set(clean["validation_by_kind"]) == set(record["classes"])


def test_a_pvqae_f_candidate_with_other_strides_extracts_its_own_features_and_leaves_the_cache(
        tmp_path, monkeypatch, isolated_training, lite0):
    from pvqae.settings import Params
    from pvqae.stages import features as features_stage
    from pvqae.stages import pretrain

    params, paths = _pvqae_setup(tmp_path)
    params["input"].update(kind="features", strides=[4, 8], ch=16, embed_dim=8, num_codes=16)
    params["data"].update(patch_size=16)  # 32 px, stride 4: an 8 x 8 grid, coarse 2 x 2
    params["pretrain"].update(steps=4, disc_weight=0.0, ssim_weight=0.0)
    features_stage.run(Params.from_dict(params), paths, progress=False)
    cache = tmp_path / "features"
    before = {f.name: f.read_bytes() for f in cache.iterdir()}
    channels, real = [], pretrain.pretrain_pvqae

    def spy(cfg, train, *args, **kwargs):
        channels.append(train["image"].shape[1])
        return real(cfg, train, *args, **kwargs)

    monkeypatch.setattr(pretrain, "pretrain_pvqae", spy)
    grid = {"pretrain.feature_jitter": [0.0, 1.0], "input.strides": [[4, 8], [4]]}
    record = selection.select_pvqae(grid, params, paths, progress=False)
    # candidates run grouped by features (each cache built and read once): the stage's cache for
    # both jitters, then the candidates' own stride-4 features; the rows keep the grid's order
    assert channels == [24 + 40, 24 + 40, 24, 24]
    assert [r["setting"] for r in record["candidates"]] == [
        {"pretrain.feature_jitter": j, "input.strides": s} for j in (0.0, 1.0) for s in ([4, 8], [4])]
    assert all(r["train_seconds"] > 0 and 0 < r["validation"]["image_auroc"] <= 1 for r in record["candidates"])
    assert {f.name: f.read_bytes() for f in cache.iterdir()} == before  # the stage's cache untouched
    # params that no longer match the stage's cache are refused before anything trains
    params["input"]["strides"] = [8]
    channels.clear()
    with pytest.raises(ValueError, match=r"strides \[4, 8\], the params say .* \[8\]: run `python -m pvqae run features`"):
        selection.select_pvqae({"pretrain.feature_jitter": [0.0]}, params, paths, progress=False)
    assert channels == []


def test_select_pvqae_candidates_differing_only_in_evaluate_share_one_training(tmp_path, monkeypatch,
                                                                               isolated_training):
    from pvqae.stages import budget

    params, paths = _pvqae_setup(tmp_path)
    calls = []
    real = budget.learn_budget

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(budget, "learn_budget", counting)
    record = selection.select_pvqae({"evaluate.score.border_margin": [0, 8]}, params, paths, progress=False)
    assert len(calls) == 1
    a, b = record["candidates"]
    assert a["train_seconds"] == b["train_seconds"] and a["codes_per_image"] == b["codes_per_image"]
    assert a["validation"]["pixel_auroc"] == b["validation"]["pixel_auroc"]  # the margin moves the image score only


def test_seeds_merge_into_one_record_ranked_on_the_mean_with_the_spread(tmp_path):
    from pvqae.benchmark.tables import selection_table

    def rec(seed, a, b):
        rows = [{"setting": {"x.y": v}, "seconds": 10.0, "train_seconds": 8.0,
                 "validation": {"image_auroc": img, "pixel_auroc": 0.5, "aupro": 0.4},
                 "validation_by_kind": {"c": {"crack": img}}, "codes_per_image": None}
                for v, img in ((1, a), (2, b))]
        return {"benchmark": "selection", "method": "median_filter", "dataset": "mtsd", "classes": ["c"],
                "image_size": 64, "seed": seed, "n_validation": {"normal": 4, "defective": 4}, "grid": {"x.y": [1, 2]},
                "rule": selection.RULE, "candidates": rows, "chosen": selection.choose(rows)["setting"]}

    # seed 0 prefers candidate 1, seed 1 prefers candidate 2 by more: the mean prefers 2
    merged = selection.merge_seeds([rec(0, 0.9, 0.8), rec(1, 0.7, 0.95)])
    assert merged["seed"] == [0, 1] and merged["chosen"] == {"x.y": 2}
    one, two = merged["candidates"]
    assert one["validation"]["image_auroc"] == pytest.approx(0.8) and one["validation_std"]["image_auroc"] == pytest.approx(0.1)
    assert one["validation_by_seed"]["1"]["image_auroc"] == 0.7 and one["seconds"] == 20.0
    assert two["validation_by_kind"] == {"c": {"crack": pytest.approx(0.875)}}
    assert selection.merge_seeds([rec(3, 0.9, 0.8)])["seed"] == 3  # one seed: the record as it is
    with pytest.raises(ValueError, match="different settings"):
        other = rec(1, 0.7, 0.95)
        other["candidates"][0]["setting"] = {"x.y": 5}
        selection.merge_seeds([rec(0, 0.9, 0.8), other])
    (tmp_path / "selection_mtsd_64px_median_filter.json").write_text(json.dumps(merged))
    table = selection_table(tmp_path)
    assert "| 1 (2 seeds) | y=1 | 80.0 ± 10.0 / 50.0 ± 0.0 |" in table

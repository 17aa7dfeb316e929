"""The speed/size benchmark records what the issue asks for, with sane values."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pvqae import benchmark


def test_patchcore_bank_size_from_the_architecture():
    b = benchmark.PatchCore.memory_bank_mb(761, 256, coreset_ratio=0.1)
    assert b["positions_per_image"] == 32 * 32
    assert abs(b["full_mb"] - 761 * 1024 * 1024 * 4 / 1e6) < 1e-6
    assert b["bank_size"] == -(-761 * 1024 // 10)  # ceil: the coreset keeps whole vectors
    assert abs(b["coreset_mb"] - b["full_mb"] / 10) < 0.01


def test_peak_memory_reading_is_reset_between_measurements():
    """Each batch size's peak memory is its own, not the process's peak from earlier work.
    Run in a fresh interpreter: in the test process, memory freed by earlier tests can be
    reused without raising the resident set."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc")
    script = """
import torch
from pvqae.benchmark import speed
big = torch.ones(50_000_000).add_(1.0)  # 200 MB, freed below
del big
before = speed._peak_rss_mb()
speed._reset_peak_rss()
after = speed._peak_rss_mb()
held = torch.ones(25_000_000).add_(1.0)  # 100 MB, held: the next reading sees it
print(before, after, speed._peak_rss_mb())
"""
    root = Path(benchmark.__file__).resolve().parents[2]  # pvqae/benchmark/__init__.py
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env=env).stdout
    before, after, held = map(float, out.split())
    assert before - after > 150, (before, after)
    assert held - after > 80, (after, held)


def test_tiny_benchmark_writes_every_field(tmp_path, monkeypatch):
    resets = []
    reset = benchmark.speed._reset_peak_rss
    monkeypatch.setattr(benchmark.speed, "_reset_peak_rss", lambda: (resets.append(1), reset()))
    res = benchmark.run("tiny", batch_sizes=(2, 1), repeats=1, n_train=10, train_batch_size=2)
    assert len(resets) == 2  # each batch size's peak memory is its own
    path = benchmark.write(res, tmp_path)
    data = json.loads(path.read_text())
    for key in ("machine", "profile", "seed", "wall_seconds", "image_size", "inference_images_per_second",
                "inference_peak_rss_mb", "train_images_per_second", "model_mb", "prior_mb", "patchcore_wrn50_bank"):
        assert key in data, key
    assert data["profile"] == "tiny" and data["image_size"] == 32
    assert data["inference_images_per_second"] > 0 and data["train_images_per_second"] > 0
    # the fastest batch size is the headline; every timed size is kept, in ascending order
    by_batch = data["inference_images_per_second_by_batch_size"]
    assert list(by_batch) == ["1", "2"] and list(data["peak_rss_mb_by_batch_size"]) == ["1", "2"]
    assert data["inference_images_per_second"] == max(by_batch.values())
    assert by_batch[str(data["batch_size"])] == data["inference_images_per_second"]
    assert data["inference_peak_rss_mb"] == data["peak_rss_mb_by_batch_size"][str(data["batch_size"])]
    assert data["train_batch_size"] == 2
    b = data["baselines"]  # the feature-based baselines on EfficientNet-Lite0, timed the same way
    assert b["backbone"] == "efficientnet-lite0"
    for m in ("patchcore", "padim", "patch_ae", "vq_flow"):
        assert b[m]["inference_images_per_second"] > 0 and b[m]["mb"] > 0, m
    # PatchCore's bank: 10 % of 10 images x (32 / 8)^2 positions, 1024-d float32
    assert b["patchcore"]["mb"] == pytest.approx(16 * 1024 * 4 / 1e6)
    assert b["patch_ae"]["bank_features"] == "encoder" and b["patch_ae"]["bank_dim"] == 128  # the params' bank
    from pvqae.benchmark.tables import table

    assert "| encoder, 128-d |" in table(tmp_path)  # the speed table names the bank that was timed
    assert 0 < data["model_mb"] < 10 and data["model_mb"] == benchmark.state_dict_mb(
        benchmark.PVQAE(benchmark.Params.from_dict(benchmark.profile_params(["tiny"])).model_config()))


def _fake_run(reports, dataset="mtsd", classes=("mtsd",), pv=(0.96, 0.94), st=(0.93, 0.90), secs=(1000, 1500, 60)):
    """The files `dvc repro evaluate` leaves that the accuracy benchmark reads, with known values."""
    from pvqae.records import write_json

    def res(img, pix, std=0.0):
        m = {"image_auroc": img, "pixel_auroc": pix, "aupro": 0.5}
        return {"mean": m, "std": {k: std for k in m}, "per_class": {c: m for c in classes}, "n_seeds": 2}

    import numpy as np

    # test split: 2 normal + 2 "hole" + 1 "crack" images of the first class, scored per seed
    kinds = ["good", "hole", "good", "crack", "hole"]
    samples = [{"split": "train", "defect": "good"}] + [{"split": "test", "defect": k} for k in kinds]
    write_json({"dataset": dataset, "root": "/data", "classes": list(classes), "counts": {"train": 3},
                "image_size": 128, "coarse_grid": 8, "samples": samples}, reports / "prepared" / "manifest.json")
    (reports / "tables" / "evaluate").mkdir(parents=True)
    (reports / "tables" / "evaluate" / "code_allocation.csv").write_text(
        "class,images,budget,n,coarse,median,fine,codes_per_image\n"
        f"{classes[0]},normal,routed,2,0.5,0.5,0.0,100.0\n{classes[0]},normal,prior,2,1.0,0.0,0.0,64.0\n")
    label = np.array([k != "good" for k in kinds], dtype=np.int64)
    for s, image in ((0, [0.1, 0.9, 0.2, 0.15, 0.05]), (1, [0.1, 0.9, 0.2, 0.3, 0.8])):
        (reports / "scores" / f"seed{s}").mkdir(parents=True, exist_ok=True)
        np.savez(reports / "scores" / f"seed{s}" / "pvqae.npz", image=np.array(image), label=label,
                 class_index=np.zeros(5, dtype=np.int64))
    write_json({"seeds": [0, 1], "pvqae": res(*pv), "static_vq": res(*st)}, reports / "metrics" / "evaluate.json")
    write_json({f"seed{s}": {"pvqae_pretrain": {"train_seconds": secs[0]}, "static_vq": {"train_seconds": secs[1]}}
                for s in (0, 1)}, reports / "models" / "pretrain" / "summary.json")
    write_json({f"seed{s}": {"train_seconds": secs[2] * (s + 1)} for s in (0, 1)},
               reports / "models" / "budget" / "summary.json")
    write_json({f"seed{s}": {"train_seconds": 10} for s in (0, 1)}, reports / "models" / "prior" / "summary.json")


def _params(profile="cpu"):
    return {"profile": profile, **{k: {"steps": 5} for k in ("pretrain", "budget", "prior")},
            "static_vq": {"steps": 5, "level": 1}}


def test_accuracy_benchmark_reads_the_run_and_checks_the_targets(tmp_path):
    _fake_run(tmp_path)
    r = benchmark.accuracy(tmp_path, params=_params())
    assert r["dataset"] == "mtsd" and r["profile"] == "cpu" and r["seeds"] == [0, 1]
    # pretrain + budget + prior, mean over the two seeds: (1000+60+10 + 1000+120+10) / 2
    assert r["training_seconds"]["pvqae_pretrain_budget_prior"] == 1100
    assert r["training_seconds"]["static_vq"] == 1500
    assert r["wall_seconds"] is None  # no executed notebooks in this fake run
    assert abs(r["pvqae_minus_static_image_auroc"] - 0.03) < 1e-9
    assert r["met"] == {"image_auroc": True, "pixel_auroc": True, "training_seconds": True,
                        "pvqae_minus_static_image_auroc": True}
    assert r["paper_percent"] == {"mtsd": {"vq_e": [96.6, 94.2], "pvqae": [99.2, 96.5]}}
    # hole: seed 0 {0.9, 0.05} vs normal {0.1, 0.2} -> 0.5, seed 1 {0.9, 0.8} -> 1.0; crack: 0.5, 1.0
    # (the static VQ has no scores file here: left out)
    assert r["image_auroc_by_defect"] == {"pvqae": {"mtsd": {"crack": 0.75, "hole": 0.75}}}
    # static VQ at level 1 on an 8 x 8 coarse grid: 16 x 16 codes; PVQAE's from the allocation table
    assert r["codes_per_image"] == {"static_vq": 256, "pvqae_routed_normal": 100.0, "pvqae_prior_normal": 64.0}
    path = benchmark.write(r, tmp_path / "bench")
    assert path.name == "accuracy_mtsd_cpu.json"
    table = benchmark.accuracy_table(tmp_path / "bench")
    row = r"\| mtsd \| cpu \| 128 px \| pixels \| 5 \+ 5 / 5 \| \[0, 1\] \| 96\.0 ± [\d.]+ / 94\.0 ± [\d.]+ \| 93\.0 ± [\d.]+ / 90\.0 ± [\d.]+ \| 1100 \|"
    assert re.search(row, table), table
    assert "| 100 / 256 |" in table
    assert "| mtsd | cpu | pvqae | mtsd | crack 75.0, hole 75.0 |" in table


def test_accuracy_benchmark_reports_missed_targets_and_missing_runs(tmp_path):
    import pytest

    _fake_run(tmp_path, dataset="synthetic", classes=("a", "b"), pv=(0.80, 0.95), st=(0.81, 0.90),
              secs=(4000, 10, 60))
    r = benchmark.accuracy(tmp_path, params=_params("default"))
    assert r["met"] == {"image_auroc": False, "pixel_auroc": True, "training_seconds": False,
                        "pvqae_minus_static_image_auroc": False}
    assert r["paper_percent"] == {}
    assert r["score"] == "product"  # the paper's, unless evaluate.score.combine names a variant
    scored = benchmark.accuracy(tmp_path, params={**_params("default"), "evaluate": {"score": {"combine": "rec"}}})
    assert scored["score"] == "rec"
    calibrated = benchmark.accuracy(tmp_path, params={**_params("default"), "evaluate": {"score": {"prior_smoothing": 0.1}}})
    assert calibrated["score"] == "product, prior smoothing 0.1"  # a calibrated prior is not the paper's score
    assert benchmark.write(r, tmp_path / "bench").name == "accuracy_synthetic_default.json"
    # a second PVQAE run with a suffix is kept beside the first, not written over it
    assert benchmark.write(r, tmp_path / "bench", suffix="ablations").name == "accuracy_synthetic_default_128px_ablations.json"
    assert len(list((tmp_path / "bench").glob("accuracy_*.json"))) == 2
    features = {**r, "input": {"kind": "features"}}
    assert benchmark.write(features, tmp_path / "bench").name == "accuracy_synthetic_default_128px_features.json"
    assert (benchmark.write(features, tmp_path / "bench", suffix="ablations").name
            == "accuracy_synthetic_default_128px_features_ablations.json")
    assert benchmark.dataset_tag({"dataset": "mvtec", "classes": ["bottle"]}) == "mvtec-bottle"
    assert benchmark.dataset_tag({"dataset": "mtsd", "classes": ["mtsd"]}) == "mtsd"
    with pytest.raises(FileNotFoundError, match="manifest.json is missing: run `dvc repro evaluate`"):
        benchmark.accuracy(tmp_path / "nothing", params=_params())


def test_resizing_a_profile_keeps_the_coarse_grid():
    import pytest

    data = {"image_size": 128, "patch_size": 16}
    model = {"ch": 16, "ch_mult": [1, 1, 2, 2, 4]}
    d, m = benchmark.resize_profile(data, model, 256)
    assert d == {"image_size": 256, "patch_size": 32} and m["ch_mult"] == [1, 1, 2, 2, 4, 4]
    d, m = benchmark.resize_profile(data, model, 64)
    assert d["patch_size"] == 8 and m["ch_mult"] == [1, 1, 2, 2]
    assert benchmark.DataConfig.from_dict(d).coarse_grid == 8 and model["ch_mult"] == [1, 1, 2, 2, 4]  # input untouched
    with pytest.raises(ValueError, match="not the coarse grid 8 times a power of two"):
        benchmark.resize_profile(data, model, 96)


def _fake_baselines(reports, floor=(0.55, 0.60), patchcore=(0.95, 0.91)):
    """The files `dvc repro baselines` leaves, with known values (two seeds)."""
    from pvqae.records import write_json

    def res(img, pix, d=0.0):
        m = {"image_auroc": img, "pixel_auroc": pix, "aupro": 0.5}
        return {"mean": m, "std": {k: d for k in m}, "per_class": {"mtsd": m}, "n_seeds": 2,
                "inference_images_per_second": 40.0}

    write_json({"seeds": [0, 1], "backbone": "efficientnet-lite0", "backbone_status": "weights: x.pth",
                "status": {"median_filter": "ran", "patchcore": "ran (weights: x.pth)"},
                "results": {"median_filter": res(*floor),
                            "patchcore": {**res(*patchcore, d=0.01),
                                          "image_auroc_by_kind": {"mtsd": {"crack": 0.9, "hole": 0.85}}}},
                "per_seed": {"median_filter": {f"seed{s}": {"scoring_seconds": 2.0} for s in (0, 1)},
                             "patchcore": {f"seed{s}": {"scoring_seconds": 10.0 + s} for s in (0, 1)}},
                "training": {"median_filter": {f"seed{s}": {"seconds": 0.0} for s in (0, 1)},
                             "patchcore": {f"seed{s}": {"seconds": 100.0 * (s + 1), "bank_mb": 72.0,
                                                        "bank_size": 17_500} for s in (0, 1)}}},
               reports / "metrics" / "baselines.json")


def test_accuracy_benchmark_of_a_baselines_only_run(tmp_path):
    from pvqae.records import write_json

    write_json({"dataset": "mtsd", "root": "/data", "classes": ["mtsd"], "counts": {"train": 3},
                "image_size": 256, "coarse_grid": 8, "samples": []}, tmp_path / "prepared" / "manifest.json")
    _fake_baselines(tmp_path)
    r = benchmark.accuracy(tmp_path, params={"profile": "cpu", "evaluate": {"score": {"smooth_sigma": 4.0}}})
    assert "pvqae" not in r and r["seeds"] == [0, 1]
    b = r["baselines"]
    pc = b["methods"]["patchcore"]
    assert pc["fit_seconds"] == 150.0 and pc["scoring_seconds"] == 10.5 and pc["bank_mb"] == 72.0
    assert pc["margin_over_floor"] == pytest.approx({"image_auroc": 0.40, "pixel_auroc": 0.31})
    assert b["met"] == {"patchcore_image_auroc": True, "patchcore_pixel_auroc": True}
    assert b["postprocess"] == {"smooth_sigma": 4.0, "image_score": None}
    path = benchmark.write(r, tmp_path / "bench")
    assert path.name == "accuracy_mtsd_cpu_256px_baselines.json"
    table = benchmark.accuracy_table(tmp_path / "bench")
    assert ("| mtsd | cpu | 256 px | patchcore | EfficientNet-Lite0 | [0, 1] | 95.0 ± 1.0 / 91.0 ± 1.0 | 50.0 "
            "| +40.0 / +31.0 | 150 | 40.0 | 72 | image_auroc yes, pixel_auroc yes |") in table
    assert "| mtsd | cpu | 256 px | median_filter | - | [0, 1] | 55.0 ± 0.0 / 60.0 ± 0.0 | 50.0 | - |" in table
    # each row names the settings it ran with that are not the code's defaults
    from pvqae.benchmark.tables import _settings

    assert _settings("vq_flow", {"steps": 2000, "subnet": "conv", "log_every": 5, "strides": [8, 16]}) \
        == "subnet=conv, steps=2000"  # in the config's field order
    assert _settings("patch_ae", {}) == "defaults" and _settings("patch_ae", None) == "?"
    assert _settings("vq_flow", {"old_knob": 1}) == "old_knob=1 (a key the code no longer has)"
    # the per-kind AUROC the baselines stage kept (older records have none: no row)
    assert pc["image_auroc_by_defect"] == {"mtsd": {"crack": 0.9, "hole": 0.85}}
    assert "image_auroc_by_defect" not in b["methods"]["median_filter"]
    assert "| mtsd | cpu | patchcore | mtsd | crack 90.0, hole 85.0 |" in table
    _fake_baselines(tmp_path, patchcore=(0.92, 0.91))
    assert benchmark.accuracy(tmp_path, params={"profile": "cpu"})["baselines"]["met"]["patchcore_image_auroc"] is False

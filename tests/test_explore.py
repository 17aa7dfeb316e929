"""The code-allocation explorer: ``pvqae.explore`` and ``notebooks/explore_code_allocation.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pvqae import explore
from pvqae.data import prepared
from pvqae.model import LEVEL_NAMES
from pvqae.paths import REPO_ROOT
from pvqae.score_cli import load_bundle
from pvqae.scoring import ScoreConfig, inference_layout, score_batch

pytestmark = pytest.mark.usefixtures("one_thread")

NOTEBOOK = REPO_ROOT / "notebooks" / "explore_code_allocation.py"


@pytest.fixture(scope="module")
def loaded(tiny_reports):
    b = load_bundle(tiny_reports / "models")
    test = prepared.load_prepared(tiny_reports / "prepared", "test")
    i = explore.select_images(test, "texture", "defective")[0]
    return b.model, b.prior, test, test["image"][i], test["classes"].index("texture")


def test_explain_image_shapes_and_matches_score_batch(loaded):
    model, prior, _, x, ci = loaded
    res = explore.explain_image(model, prior, x, ci)
    for k in ("image", "recon", "recon_routed", "recon_prior"):
        assert res[k].shape == (3, 32, 32), k
    for k in ("argmax_levels", "routed_levels", "prior_levels", "budget_ce", "recon_levels"):
        assert res[k].shape == (8, 8), k
    assert res["routing_probs"].shape == res["prior_probs"].shape == (3, 8, 8)
    np.testing.assert_allclose(res["routing_probs"].sum(0), 1, atol=1e-5)
    assert (res["budget_ce"] >= 0).all() and (res["score_map"] >= 0).all() and (res["rec_map"] >= 0).all()
    np.testing.assert_array_equal(res["routed_levels"], res["argmax_levels"])
    np.testing.assert_array_equal(res["prior_levels"], res["prior_probs"].argmax(0))
    np.testing.assert_array_equal(res["recon_levels"], res["prior_levels"])
    with torch.no_grad():
        given = model(inference_layout(x[None]), mode="given", level_map=torch.from_numpy(res["prior_levels"])[None]).recon[0]
        ref = score_batch(model, x[None], torch.tensor([ci]), prior, ScoreConfig())
    np.testing.assert_allclose(res["recon_prior"], given.numpy(), atol=1e-6)
    np.testing.assert_allclose(res["score_map"], ref.score_map[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(res["routed_levels"], ref.routed_levels[0].numpy())
    np.testing.assert_allclose(res["budget_ce"], ref.budget_map[0].numpy(), rtol=1e-5)
    assert res["image_score"] == pytest.approx(float(ref.image_score[0]), rel=1e-5)
    assert sum(res["fractions"]["routed"]) == pytest.approx(1)
    smoothed = ScoreConfig(prior_smoothing=0.3)  # a calibrated prior: the explorer's CE is the scored one
    res = explore.explain_image(model, prior, x, ci, score_cfg=smoothed)
    with torch.no_grad():
        ref = score_batch(model, x[None], torch.tensor([ci]), prior, smoothed)
    np.testing.assert_allclose(res["budget_ce"], ref.budget_map[0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(res["score_map"], ref.score_map[0].numpy(), rtol=1e-5, atol=1e-6)
    assert res["budget_ce"].max() <= -np.log(0.1) + 1e-5


@pytest.mark.parametrize("level", [*LEVEL_NAMES, 2])
def test_force_level_reconstructs_with_an_all_level_map(loaded, level):
    model, prior, _, x, ci = loaded
    raw = ScoreConfig(smooth_sigma=0.0)  # compare with the unsmoothed product
    base = explore.explain_image(model, prior, x, ci, score_cfg=raw)
    res = explore.explain_image(model, prior, x, ci, force_level=level, score_cfg=raw)
    k = LEVEL_NAMES.index(level) if isinstance(level, str) else level
    assert res["force_level"] == k and (res["recon_levels"] == k).all()
    with torch.no_grad():
        recon = model(inference_layout(x[None]), mode="given", level_map=torch.full((1, 8, 8), k)).recon[0].numpy()
    np.testing.assert_allclose(res["recon"], recon, atol=1e-6)
    # the routed budget, the prior and the budget CE do not change; only the scored reconstruction
    np.testing.assert_array_equal(res["routed_levels"], base["routed_levels"])
    np.testing.assert_allclose(res["budget_ce"], base["budget_ce"])
    np.testing.assert_allclose(res["score_map"], res["rec_map"] * np.kron(res["budget_ce"], np.ones((4, 4))),
                               rtol=1e-5, atol=1e-7)
    assert res["fractions"]["recon"][k] == 1.0


def test_routing_temperature_sampling_is_seeded(loaded):
    model, prior, _, x, ci = loaded
    a = explore.explain_image(model, prior, x, ci, tau=1.0, seed=3)
    b = explore.explain_image(model, prior, x, ci, tau=1.0, seed=3)
    np.testing.assert_array_equal(a["routed_levels"], b["routed_levels"])
    np.testing.assert_array_equal(a["score_map"], b["score_map"])
    with torch.no_grad():
        recon = model(inference_layout(x[None]), mode="given", level_map=torch.from_numpy(a["routed_levels"])[None]).recon[0]
    np.testing.assert_allclose(a["recon_routed"], recon.numpy(), atol=1e-6)
    # a low temperature gives the argmax routing whatever the seed; tau 0/None is the argmax
    for seed in (0, 1, 2):
        low = explore.explain_image(model, prior, x, ci, tau=1e-6, seed=seed)
        np.testing.assert_array_equal(low["routed_levels"], low["argmax_levels"])
    zero = explore.explain_image(model, prior, x, ci, tau=0.0)
    np.testing.assert_array_equal(zero["routed_levels"], zero["argmax_levels"])
    # a high temperature departs from the argmax somewhere on the 64 patches
    hot = [explore.explain_image(model, prior, x, ci, tau=50.0, seed=s)["routed_levels"] for s in range(3)]
    assert any((h != a["argmax_levels"]).any() for h in hot)


def test_without_prior_the_routed_reconstruction_is_scored(loaded):
    model, _, _, x, _ = loaded
    res = explore.explain_image(model, None, x, score_cfg=ScoreConfig(smooth_sigma=0.0))
    assert res["prior_levels"] is None and res["budget_ce"] is None and res["recon_prior"] is None
    np.testing.assert_array_equal(res["recon"], res["recon_routed"])
    np.testing.assert_allclose(res["score_map"], res["rec_map"])


def test_bad_arguments_and_selection(loaded):
    model, prior, test, x, ci = loaded
    with pytest.raises(ValueError, match="force_level must be one of"):
        explore.explain_image(model, prior, x, ci, force_level="ultra")
    with pytest.raises(ValueError, match="tau must be > 0"):
        explore.explain_image(model, prior, x, ci, tau=-1)
    with pytest.raises(ValueError, match="unknown class 'nope'; classes: printed, texture"):
        explore.select_images(test, "nope")
    all_ = explore.select_images(test, "printed")
    normal, defective = explore.select_images(test, "printed", "normal"), explore.select_images(test, "printed",
                                                                                                "defective")
    assert sorted(normal + defective) == all_ and len(normal) == len(defective) == 2


def test_allocation_stats_rows(loaded):
    model, prior, test, _, _ = loaded
    rows = explore.allocation_stats(model, prior, test, batch_size=3)
    assert {(r["class"], r["images"], r["budget"]) for r in rows} == {
        (c, k, b) for c in ("printed", "texture") for k in ("normal", "defective") for b in ("routed", "prior")}
    for r in rows:
        assert r["coarse"] + r["median"] + r["fine"] == pytest.approx(1) and r["n"] == 2


def test_notebook_runs_headless_and_saves_its_figures(tiny_reports, tmp_path):
    import jupytext
    import papermill as pm

    nb = jupytext.read(NOTEBOOK)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for name in ("models_dir", "prepared_dir", "class_name", "image_index", "headless", "out_dir"):
        assert f"{name} =" in params[0].source
    src = tmp_path / "explore.ipynb"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jupytext.write(nb, src, fmt="ipynb")
    out = tmp_path / "figs"
    pm.execute_notebook(str(src), str(tmp_path / "executed.ipynb"), kernel_name="python3", progress_bar=False,
                        cwd=str(REPO_ROOT / "notebooks"),  # as JupyterLab runs it
                        parameters={"models_dir": str(tiny_reports / "models"),
                                    "prepared_dir": str(tiny_reports / "prepared"), "class_name": "texture",
                                    "image_kind": "defective", "image_index": 1, "tau": 0.5,
                                    "force_level": "fine", "headless": True, "out_dir": str(out)})
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["code_allocation.png", "explain_texture_defective_1.png",
                     "forced_levels_texture_defective_1.png"]
    assert all((out / n).stat().st_size > 5000 for n in names)

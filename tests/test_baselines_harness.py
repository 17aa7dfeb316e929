"""``pvqae.baselines.harness``: the Table I baselines built from the ``baselines`` params,
trained/fitted on the prepared training split and scored like PVQAE on the test split.

PatchCore and PaDiM run on a randomly initialised WideResNet-50-2 (``random_backbone``):
these tests check the harness's plumbing (params -> model, checkpoint, scores, metrics, the
shared post-processing), not the accuracy the papers report with ImageNet weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pvqae.resumable as resumable
from pvqae import evaluation
from pvqae.backbones.wide_resnet import random_backbone
from pvqae.baselines import harness
from pvqae.baselines.ae_ssim import AESSIM, load_ae_ssim
from pvqae.baselines.common import BaselineOutput
from pvqae.baselines.median_filter import MedianFilterResidual
from pvqae.baselines.padim import PaDiM
from pvqae.baselines.patchcore import PatchCore
from pvqae.checkpoint import load_checkpoint
from pvqae.data import prepared
from pvqae.metrics import METRIC_NAMES, image_auroc_by_kind
from pvqae.model import PVQAE
from pvqae.scoring import ScoreConfig, gaussian_blur, postprocess
from pvqae.settings import BaselinesConfig, DataConfig, EvaluateConfig

pytestmark = pytest.mark.usefixtures("one_thread")

S = 32
# the params.yaml `baselines` section, shrunk for 32 px and a few images
BPARAMS = BaselinesConfig.from_dict({
    "methods": ["median_filter", "ae_ssim", "patchcore", "padim", "patch_ae", "vq_flow"],
    "median_filter": {"kernel": 5},
    "ae_ssim": {"ch": 8, "latent_dim": 16, "steps": 3, "batch_size": 4, "lr": 1e-3, "weight_decay": 1e-5,
                "ssim_window": 11, "augment_jitter": 0.1, "ckpt_every": 100, "log_every": 1},
    "backbone": "wide_resnet50_2", "backbone_weights": None, "download_weights": False,
    "patchcore": {"strides": [8, 16], "coreset_ratio": 0.5, "projection_dim": 16, "feature_dim": 64},
    "padim": {"strides": [4, 8, 16], "dims": 20},
    "patch_ae": {"strides": [8, 16], "hidden": 16, "feature_dim": 8, "decoder_hidden": 16, "steps": 2,
                 "batch_size": 4, "coreset_ratio": 0.5, "ckpt_every": 100, "log_every": 1},
    "vq_flow": {"num_concepts": 2, "num_patterns": 4, "dim": 8, "pos_dim": 8, "blocks": 2, "subnet_hidden": 16,
                "steps": 2, "batch_size": 4, "ckpt_every": 100, "log_every": 1},
})
DATA = DataConfig(image_size=S, channels=3, patch_size=4)
EV = EvaluateConfig.from_dict({"batch_size": 4, "fpr_limit": 0.3, "score": {"smooth_sigma": 4.0, "image_score": "max"}})
POST = ScoreConfig(smooth_sigma=4.0)


@pytest.fixture(autouse=True)
def _resume_in_tmp(monkeypatch, tmp_path):
    monkeypatch.setattr(resumable, "RESUME_ROOT", tmp_path / "resume")  # AE-SSIM's resumable run


@pytest.fixture(scope="module")
def splits(tiny_reports):
    prep = tiny_reports / "prepared"
    return prepared.load_prepared(prep, "train"), prepared.load_prepared(prep, "test")


@pytest.fixture(scope="module")
def bb():
    return random_backbone(0)


def _check_results(results: dict, scores: dict, test: dict):
    n = len(test["image"])
    assert set(results["per_class"]) == set(test["classes"]) == {"printed", "texture"}
    for cls, m in results["per_class"].items():
        assert set(m) == set(METRIC_NAMES), cls
        for k, v in m.items():
            assert np.isfinite(v) and 0 <= v <= 1, (cls, k, v)
    assert set(results["mean"]) == set(METRIC_NAMES)
    assert results["inference_images_per_second"] > 0
    assert scores["maps"].shape == (n, S, S) and scores["maps"].dtype == np.float32
    assert scores["image"].shape == (n,) and np.isfinite(scores["maps"]).all()


# ----------------------------------------------------------------------------- build

@pytest.mark.parametrize("method", ["patchcore", "padim", "patch_ae", "vq_flow"])
def test_build_needs_a_backbone(method):
    with pytest.raises(ValueError, match=rf"{method} needs an ImageNet-pretrained backbone "
                                         r"\(baselines\.backbone, baselines\.backbone_weights\)"):
        harness.build(method, BPARAMS, DATA, seed=0)
    with pytest.raises(ValueError, match="needs an ImageNet-pretrained"):  # run_method fails before training
        harness.run_method(method, BPARAMS, DATA, {}, {}, EV, 0, "unused")


def test_build_unknown_method_lists_the_baselines():
    with pytest.raises(ValueError, match=r"unknown baseline 'stpm'; baselines are median_filter, ae_ssim, "
                                         r"patchcore, padim, patch_ae, vq_flow"):
        harness.build("stpm", BPARAMS, DATA, seed=0)


def test_build_from_params(bb):
    a, b = (harness.build("ae_ssim", BPARAMS, DATA, seed=3) for _ in range(2))
    assert isinstance(a, AESSIM) and a.config()["ch"] == 8 and a.config()["latent_dim"] == 16
    assert a.config()["image_size"] == S and a.config()["in_channels"] == 3
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # seeded
    c = harness.build("ae_ssim", BPARAMS, DATA, seed=4)
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    pc = harness.build("patchcore", BPARAMS, DATA, seed=0, backbone=bb)
    assert isinstance(pc, PatchCore) and pc.coreset_ratio == 0.5 and pc.projection_dim == 16
    assert pc.feature_dim == 64 and pc.strides == (8, 16)
    pd = harness.build("padim", BPARAMS, DATA, seed=0, backbone=bb)
    assert isinstance(pd, PaDiM) and len(pd.channel_index) == 20 and pd.strides == (4, 8, 16)
    mf = harness.build("median_filter", BPARAMS, DATA, seed=0)
    assert isinstance(mf, MedianFilterResidual) and mf.kernel == 5


# ----------------------------------------------------------------------------- run_method

def test_run_method_ae_ssim(splits, tmp_path):
    train, test = splits
    scores, results, summary = harness.run_method("ae_ssim", BPARAMS, DATA, train, test, EV, 0, tmp_path / "seed0",
                                                  progress=False)
    assert (tmp_path / "seed0" / "ae_ssim.pt").is_file()
    assert summary["steps"] == 3
    _check_results(results, scores, test)
    assert scores["rec"] is None and scores["routed"] is None and scores["prior"] is None
    # the checkpoint is the trained model: reloaded, it gives the same scores
    model = load_ae_ssim(tmp_path / "seed0" / "ae_ssim.pt")
    _, image_score = postprocess(model.score(test["image"]).score_map, POST)
    np.testing.assert_allclose(image_score.numpy(), scores["image"], rtol=1e-5, atol=1e-6)
    assert evaluation.evaluate_scores(test, scores, EV.fpr_limit)["mean"] == results["mean"]


@pytest.mark.parametrize("method", ["patchcore", "padim"])
def test_run_method_memory_baselines(method, splits, bb, tmp_path):
    train, test = splits
    scores, results, summary = harness.run_method(method, BPARAMS, DATA, train, test, EV, 0, tmp_path,
                                                  backbone=bb, progress=False)
    _check_results(results, scores, test)
    assert summary["n_train_images"] == len(train["image"])
    if method == "patchcore":
        assert summary["bank_size"] == summary["bank_size_full"] // 2  # coreset_ratio 0.5 (even size here)
    else:
        assert summary["feature_dim"] == 20 and summary["positions"] == (S // 4) ** 2
    ckpt = load_checkpoint(tmp_path / f"{method}.pt")
    assert ckpt["method"] == method and ckpt["seed"] == 0
    assert not any(k.startswith("backbone.") for k in ckpt["model"])  # the fitted state only
    # the fitted state reloads into a fresh model and scores the test split the same way
    fresh = harness.build(method, BPARAMS, DATA, 0, backbone=bb)
    fresh.load_state_dict(ckpt["model"])
    again = harness.score_split(fresh.eval(), test, POST, batch_size=3, progress=False)
    np.testing.assert_allclose(again["image"], scores["image"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(again["maps"], scores["maps"], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- score_split

def test_score_split_matches_the_pipelines_keys_and_shapes(tiny_reports, splits):

    _, test = splits
    n = len(test["image"])
    calls = []

    def fake(x: torch.Tensor) -> BaselineOutput:  # score = mean intensity, map = per-pixel channel mean
        calls.append(len(x))
        m = x.mean(1)
        return BaselineOutput(score_map=m.double(), image_score=m.flatten(1).mean(1))

    ours = harness.score_split(fake, test, ScoreConfig(smooth_sigma=0.0), batch_size=3, progress=False)
    ref = evaluation.score_split(PVQAE.from_checkpoint(tiny_reports / "models" / "budget" / "pvqae.pt"), test, batch_size=4,
                               progress=False)
    assert set(ours) == set(ref)
    assert calls == [3, 3, n - 6]  # batched, in order
    assert ours["maps"].shape == ref["maps"].shape == (n, S, S) and ours["maps"].dtype == np.float32
    assert ours["image"].shape == ref["image"].shape == (n,)
    np.testing.assert_allclose(ours["image"], test["image"].mean(1).flatten(1).amax(1).numpy(), rtol=1e-6)
    assert ours["seconds"] >= 0 and ours["images_per_second"] > 0


def test_run_all_skips_backbone_methods_without_weights_and_aggregates_seeds(splits, tmp_path):
    train, test = splits
    run = harness.run_all(list(BPARAMS.methods), BPARAMS, DATA, train, test, EV, [0, 1], tmp_path, None,
                          "not run: no pretrained weights", progress=False)
    assert run["status"] == {"median_filter": "ran", "ae_ssim": "ran", "patchcore": "not run: no pretrained weights",
                             "padim": "not run: no pretrained weights", "patch_ae": "not run: no pretrained weights",
                             "vq_flow": "not run: no pretrained weights"}
    assert set(run["results"]) == set(run["per_seed"]) == {"median_filter", "ae_ssim"}
    assert set(run["per_seed"]["ae_ssim"]) == {"seed0", "seed1"}
    assert (tmp_path / "seed0" / "ae_ssim.pt").is_file() and (tmp_path / "seed1" / "ae_ssim.pt").is_file()
    agg = run["results"]["ae_ssim"]
    assert agg["n_seeds"] == 2
    seeds = [run["per_seed"]["ae_ssim"][f"seed{s}"]["mean"]["image_auroc"] for s in (0, 1)]
    assert agg["mean"]["image_auroc"] == pytest.approx(np.mean(seeds))
    assert agg["std"]["image_auroc"] == pytest.approx(np.std(seeds))
    # per defect kind: each kind of each class against that class's normal test images, mean over seeds
    rows = list(zip(test["meta"], test["class_index"].tolist(), test["label"].tolist()))
    kinds = {cls: sorted({m["defect"] for m, c, y in rows if c == k and y}) for k, cls in enumerate(test["classes"])}
    for s in (0, 1):
        by_kind = run["per_seed"]["ae_ssim"][f"seed{s}"]["image_auroc_by_kind"]
        assert {c: sorted(v) for c, v in by_kind.items()} == kinds
    scores, _, _ = harness.run_method("ae_ssim", BPARAMS, DATA, train, test, EV, 1, tmp_path / "again", progress=False)
    sel = (test["class_index"] == 0).numpy()
    direct = image_auroc_by_kind(test["label"].numpy()[sel], scores["image"][sel],
                                 [m["defect"] or "" for m, keep in zip(test["meta"], sel) if keep])
    assert run["per_seed"]["ae_ssim"]["seed1"]["image_auroc_by_kind"][test["classes"][0]] == pytest.approx(direct)
    cls, kind = test["classes"][0], kinds[test["classes"][0]][0]
    assert agg["image_auroc_by_kind"][cls][kind] == pytest.approx(np.nanmean(
        [run["per_seed"]["ae_ssim"][f"seed{s}"]["image_auroc_by_kind"][cls][kind] for s in (0, 1)]))


def test_every_method_gets_the_same_post_processing(splits):
    """The harness smooths every raw map with sigma 4 at 256 px scaled to the map size (here
    32 px: 0.5) and takes the max of the smoothed map, as PVQAE's scoring does."""
    _, test = splits

    def raw(x: torch.Tensor) -> BaselineOutput:
        m = (x.mean(1) - 0.5).abs()
        return BaselineOutput(score_map=m, image_score=m.flatten(1).amax(1))

    out = harness.score_split(raw, test, POST, batch_size=4, progress=False)
    want = gaussian_blur(raw(test["image"]).score_map, 4.0 * S / 256)
    np.testing.assert_allclose(out["maps"], want.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["image"], want.flatten(1).amax(1).numpy(), rtol=1e-5, atol=1e-6)
    assert POST.sigma_at(S) == 0.5 and POST.sigma_at(256) == 4.0


def test_median_filter_floor_scores_local_outliers_only():
    """The floor: zero on flat and smoothly varying images (no training, nothing learned), high
    on a thin bright line, and deterministic."""
    mf = MedianFilterResidual(kernel=9)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    smooth = (0.3 + 0.4 * xx).expand(1, 3, -1, -1).clone()
    out = mf(smooth)
    inner = (slice(None), slice(4, -4), slice(4, -4))  # away from the reflected border
    assert out.score_map.shape == (1, 64, 64) and out.score_map[inner].abs().max() < 1e-6
    scratch = smooth.clone()
    scratch[:, :, 30, 10:50] = 1.0
    out = mf(scratch)
    assert out.score_map[0, 30, 10:50].min() > 0.3 and out.score_map[0, 4:25, 4:-4].max() < 1e-6
    assert torch.equal(mf(scratch).score_map, out.score_map)
    with pytest.raises(ValueError, match="odd integer >= 3, got 4"):
        MedianFilterResidual(kernel=4)


@pytest.mark.parametrize("method", ["patch_ae", "vq_flow"])
def test_run_method_trained_feature_baselines_reload(method, splits, tmp_path):
    from pvqae.backbones import load_backbone

    lite0 = load_backbone("efficientnet-lite0")[0]
    train, test = splits
    scores, results, summary = harness.run_method(method, BPARAMS, DATA, train, test, EV, 0, tmp_path,
                                                  backbone=lite0, progress=False)
    _check_results(results, scores, test)
    assert summary["steps"] == 2
    if method == "patch_ae":
        assert summary["bank_size"] == summary["bank_size_full"] // 2
    ckpt = load_checkpoint(tmp_path / f"{method}.pt")
    fresh = harness.build(method, BPARAMS, DATA, 0, backbone=lite0)
    fresh.load_state_dict(ckpt["model"])  # everything trained (Patch AE: the fine-tuned backbone and the bank)
    again = harness.score_split(fresh.eval(), test, POST, batch_size=3, progress=False)
    np.testing.assert_allclose(again["image"], scores["image"], rtol=1e-4, atol=1e-5)

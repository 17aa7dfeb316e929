"""PVQAE-F (``input.kind: features``): the same PVQAE on a frozen backbone's feature map.

The cache equals a fresh extraction, the autoencoder's three grids are the feature grid and its
halvings, scores come back at image resolution, and the routing, budget, prior and scoring
code is the pixel model's (no second copy)."""

from __future__ import annotations

import ast
import copy
import inspect

import numpy as np
import pytest
import torch

from pvqae import features, scoring
from pvqae.config import load_params
from pvqae.data import prepared
from pvqae.entropy import EntropyConfig, batch_patch_entropies
from pvqae.features import InputConfig, as_model_input, build_cache, extract
from pvqae.model import PVQAE
from pvqae.routing import DynamicRouter
from pvqae.settings import Params
from pvqae.strict_config import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

STRIDES = (4, 8)  # 32 px tiny images: an 8 x 8 feature grid, coarse grid 2


@pytest.fixture(scope="module")
def cache(tiny_reports, lite0, tmp_path_factory):
    out = tmp_path_factory.mktemp("features")
    cfg = InputConfig(kind="features", strides=STRIDES, batch_size=5)
    manifest = build_cache(cfg, EntropyConfig(), tiny_reports / "prepared", out, progress=False)
    return out, manifest, cfg


def test_cached_features_equal_a_fresh_extraction(cache, tiny_reports, lite0):
    out, manifest, cfg = cache
    arr = np.load(tiny_reports / "prepared" / "arrays.npz")
    stored = {**np.load(out / "features.npz"), "features": np.load(out / "features.npy")}
    assert manifest["channels"] == 24 + 40 and manifest["grid"] == 8 and manifest["coarse_grid"] == 2
    assert stored["features"].shape == (len(arr["images"]), 64, 8, 8) and stored["features"].dtype == np.float16
    fresh = extract(lite0, arr["images"][:5], STRIDES, batch_size=5, progress=False)  # the cache's first batch
    np.testing.assert_array_equal(stored["features"][:5], fresh)
    # the float16 cache is the float32 network output (another batch size: other float rounding)
    x = torch.from_numpy(arr["images"][:3].astype(np.float32) / 255.0)
    maps = lite0.features(x, STRIDES)
    np.testing.assert_allclose(stored["features"][:3, :24].astype(np.float32), maps[4].numpy(), rtol=5e-3, atol=5e-3)
    # the entropy is the image patch's under each coarse code (32 px / 2 = 16 px patches)
    ent = batch_patch_entropies(arr["images"].astype(np.float32) / 255.0, 2)
    np.testing.assert_allclose(stored["entropy"], ent, rtol=1e-6)
    assert stored["val_defect_features"].shape[0] == len(arr["val_defect_images"])


def test_model_input_is_standardised_features_with_images_kept(cache, tiny_reports):
    out, _, _ = cache
    train = as_model_input(prepared.load_prepared(tiny_reports / "prepared", "train"), out)
    assert train["image"].shape[1:] == (64, 8, 8) and train["entropy"].shape[1:] == (2, 2)
    assert train["pixels"].shape[1:] == (3, 32, 32) and train["mask"].shape[1:] == (32, 32)
    mean, std = train["image"].mean((0, 2, 3)), train["image"].std((0, 2, 3))
    assert mean.abs().max() < 1e-2 and (std - 1).abs().max() < 2e-2  # standardised on this split
    val = as_model_input(prepared.load_validation(tiny_reports / "prepared"), out, validation=True)
    assert len(val["image"]) == len(val["label"]) == len(val["pixels"])
    # pixels: unchanged
    pix = tiny_reports / "pix"
    build_cache(InputConfig(kind="pixels"), EntropyConfig(), tiny_reports / "prepared", pix, progress=False)
    split = prepared.load_prepared(tiny_reports / "prepared", "test")
    assert as_model_input(split, pix) is split


def test_the_autoencoder_grids_are_the_feature_grid_and_its_halvings():
    p = copy.deepcopy(load_params())
    p["input"].update(kind="features", strides=[8, 16], ch_mult=[1, 2, 2])
    p["data"].update(image_size=256, patch_size=32)
    cfg = Params.from_dict(p).model_config(input_shape=(152, 32))
    model = PVQAE(cfg).eval()
    assert cfg.grids == (8, 16, 32) and cfg.in_channels == 152 and cfg.ch == p["input"]["ch"]
    x = torch.randn(2, 152, 32, 32)
    feats = model.encoder(x)
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 8), (16, 16), (32, 32)]  # coarse, median, fine
    out = model(x, mode="dynamic")
    assert out.recon.shape == x.shape and out.routing.levels.shape == (2, 8, 8)
    with pytest.raises(ValueError, match="input_shape"):
        Params.from_dict(p).model_config()


def test_feature_settings_are_checked():
    p = copy.deepcopy(load_params())
    p["input"].update(kind="features")
    p["data"].update(image_size=72, patch_size=8)  # 72 / 8 = 9: not halvable twice
    with pytest.raises(ConfigError, match=r"input: data.image_size 72 / stride 8 must be a whole grid divisible by 4"):
        Params.from_dict(p)
    with pytest.raises(ConfigError, match=r"input.kind must be one of pixels, features"):
        InputConfig(kind="feature")


def test_scores_come_back_at_image_resolution():
    torch.manual_seed(0)
    p = copy.deepcopy(load_params())
    p["input"].update(kind="features", strides=[4, 8], ch=16, embed_dim=8, num_codes=16)
    p["data"].update(image_size=32, patch_size=16)
    model = PVQAE(Params.from_dict(p).model_config(input_shape=(64, 8))).eval()
    out = scoring.score_batch(model, torch.randn(2, 64, 8, 8), out_size=32)
    assert out.score_map.shape == (2, 32, 32) and out.rec_map.shape == (2, 8, 8)
    assert torch.equal(out.image_score, out.score_map.flatten(1).amax(1))


def test_no_second_copy_of_routing_budget_prior_or_scoring():
    """PVQAE-F is the pixel PVQAE class fed a feature map: the features module defines no model
    and computes neither routing, budget, prior nor scores."""
    tree = ast.parse(inspect.getsource(features))
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes == ["InputConfig"]
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for name in ("gumbel_softmax", "DynamicRouter", "budget_loss", "level_costs", "BudgetPriorTransformer",
                 "score_batch", "combine_score_map", "log", "softmax"):
        assert name not in used, name
    p = copy.deepcopy(load_params())
    p["input"].update(kind="features", strides=[4, 8])
    p["data"].update(image_size=32, patch_size=16)
    model = PVQAE(Params.from_dict(p).model_config(input_shape=(64, 8)))
    assert type(model) is PVQAE and isinstance(model.router, DynamicRouter)

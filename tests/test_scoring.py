"""Tests of defect scoring (paper Sec. III-C2): S = S_budget * S_rec, image scores, smoothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pvqae.model import PVQAE, ModelConfig, ModelOutput
from pvqae.routing import RoutingOutput
from pvqae.scoring import (
    ScoreConfig,
    gaussian_blur,
    image_scores,
    inference_layout,
    postprocess,
    reconstruction_error,
    score_batch,
)
from pvqae.strict_config import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32
RAW = ScoreConfig(smooth_sigma=0.0)  # maps as computed, without the shared smoothing
G = 8  # coarse grid of the tiny config
ROWS, COLS = slice(8, 16), slice(4, 12)  # the badly reconstructed square




def _cfg(**kw) -> ModelConfig:
    base = dict(image_size=SIZE, ch=8, ch_mult=(1, 1, 2), embed_dim=8, num_codes=16, router_hidden=16, groups=8)
    base.update(kw)
    return ModelConfig(**base)


def _x(b: int = 2, seed: int = 1) -> torch.Tensor:
    # in score_batch's layout, so direct model calls give the same floats
    return inference_layout(torch.rand(b, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)))


def _one_hot(levels: torch.Tensor) -> torch.Tensor:
    return F.one_hot(levels, 3).permute(0, 3, 1, 2).float()


class _IdentityEncoder(torch.nn.Module):
    def forward(self, x):
        return [x]


class StubModel(PVQAE):
    """A PVQAE whose reconstruction equals the input except on one square; the routed
    budget is fixed. The "given" reconstruction errs by ``given_delta``, the routed one by
    ``routed_delta`` (so the tests can tell which one was scored). It plugs into the real
    ``forward``/scoring path through ``encoder`` (identity), ``route`` and ``decode``."""

    def __init__(self, routed: torch.Tensor, given_delta: float = 0.5, routed_delta: float = 0.25,
                 static: bool = False):
        torch.manual_seed(0)
        super().__init__(_cfg(levels=(0,)) if static else _cfg())
        self.encoder = _IdentityEncoder()
        self.routed = routed
        self.given_delta = given_delta
        self.routed_delta = routed_delta
        self.calls: list[tuple[str, torch.Tensor | None]] = []

    def route(self, feats, *, mode, level_map=None, tau=1.0, generator=None):
        self.calls.append((mode, level_map))
        levels = self.routed if mode == "dynamic" else level_map
        gate = _one_hot(levels)
        return RoutingOutput(gate, gate, levels)

    def decode(self, feats, routing):
        x = feats[0]
        recon = x.clone()
        given = bool(self.calls) and self.calls[-1][0] == "given"
        recon[:, :, ROWS, COLS] += self.given_delta if given else self.routed_delta
        if routing is None:
            return ModelOutput(recon, x.new_zeros(()), None, [], [], torch.ones(1))
        return ModelOutput(recon, x.new_zeros(()), routing, [], [], routing.gate.mean((0, 2, 3)))


class StubPrior:
    """Prior whose predict_all returns fixed probabilities."""

    def __init__(self, probs: torch.Tensor):
        self.probs = probs
        self.calls: list[tuple[torch.Tensor, object]] = []

    def predict_all(self, levels, class_index=None):
        self.calls.append((levels, class_index))
        return self.probs


def _routed(b: int = 2) -> torch.Tensor:
    return torch.randint(0, 3, (b, G, G), generator=torch.Generator().manual_seed(11))


def _probs(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, G, G, generator=torch.Generator().manual_seed(12)).mul(2).softmax(1)


def _manual_budget_px(probs: torch.Tensor, routed: torch.Tensor) -> torch.Tensor:
    budget = -torch.log(probs.gather(1, routed[:, None])[:, 0])
    f = SIZE // G
    ys = torch.arange(SIZE) // f
    return budget[:, ys][:, :, ys]  # budget_px[b, y, x] = budget[b, y // f, x // f]


# ------------------------------------------------------------------ pieces


def test_reconstruction_error_values():
    x = _x()
    assert torch.equal(reconstruction_error(x, x), torch.zeros(2, SIZE, SIZE))
    err = reconstruction_error(torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4))
    assert torch.equal(err, torch.full((1, 4, 4), 3.0))  # squared error summed over channels
    y = torch.zeros(1, 3, 2, 2)
    y[0, :, 0, 1] = torch.tensor([1.0, 2.0, 0.5])
    assert torch.equal(reconstruction_error(y, torch.zeros_like(y)), torch.tensor([[[0.0, 5.25], [0.0, 0.0]]]))


def test_image_scores_max_and_topk():
    m = torch.arange(100.0).view(1, 10, 10).repeat(2, 1, 1)
    m[1] = m[1].flip(-1) * 2
    assert torch.equal(image_scores(m, ScoreConfig(image_score="max")), torch.tensor([99.0, 198.0]))
    s = image_scores(m, ScoreConfig(image_score="topk", topk_fraction=0.05))  # top 5 values
    torch.testing.assert_close(s, torch.tensor([97.0, 194.0]))
    s1 = image_scores(m, ScoreConfig(image_score="topk", topk_fraction=1e-9))  # at least one value
    torch.testing.assert_close(s1, torch.tensor([99.0, 198.0]))
    with pytest.raises(ValueError, match="image_score must be 'max' or 'topk', got 'mean'"):
        image_scores(m, ScoreConfig(image_score="mean"))


def test_border_margin_keeps_an_edge_maximum_out_of_the_image_score_only():
    from pvqae.strict_config import ConfigError

    smap = torch.zeros(2, 64, 64)
    smap[0, 0, 10] = 9.0  # an edge artefact
    smap[0, 30, 30] = 2.0  # an inner defect
    smap[1, 3, 3] = 5.0  # 3 px in: inside a 2 px margin, outside a 4 px one
    assert image_scores(smap, ScoreConfig()).tolist() == [9.0, 5.0]
    # 8 px at 256 px is 2 px on a 64 px map: the edge pixel is ignored, the one 3 px in is not
    cfg = ScoreConfig(border_margin=8)
    assert cfg.margin_at(64) == 2 and cfg.margin_at(256) == 8
    assert image_scores(smap, cfg).tolist() == [2.0, 5.0]
    assert image_scores(smap, ScoreConfig(border_margin=16)).tolist() == [2.0, 0.0]
    # postprocess: the smoothed map itself keeps every pixel (pixel metrics see the borders)
    full, _ = postprocess(smap, ScoreConfig(smooth_sigma=0))
    cut, img = postprocess(smap, ScoreConfig(smooth_sigma=0, border_margin=8))
    assert torch.equal(full, cut) and img.tolist() == [2.0, 5.0]
    assert ScoreConfig(border_margin=10_000).margin_at(5) == 2  # never the whole map
    with pytest.raises(ConfigError, match="border_margin must be >= 0"):
        ScoreConfig(border_margin=-1)


def test_gaussian_blur_sigma_zero_is_identity():
    x = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    assert gaussian_blur(x, 0.0) is x
    assert gaussian_blur(x, -1.0) is x


def test_gaussian_blur_preserves_constants_and_mass():
    c = torch.full((2, 16, 16), 3.5)
    torch.testing.assert_close(gaussian_blur(c, 1.5), c)
    d = torch.zeros(1, 32, 32)
    d[0, 16, 16] = 1.0
    b = gaussian_blur(d, 1.5)
    assert b.shape == d.shape
    assert b.sum().item() == pytest.approx(1.0, rel=1e-5)  # far from the border: mass kept
    assert b.max().item() < 0.2 and b[0, 16, 16] == b.max()
    torch.testing.assert_close(b, b.flip(-1).roll(1, -1))  # symmetric about the delta
    torch.testing.assert_close(b[0], b[0].t())


def test_score_config_from_dict():
    assert ScoreConfig.from_dict(None) == ScoreConfig()
    assert ScoreConfig.from_dict({"image_score": "topk"}) == ScoreConfig(image_score="topk")
    with pytest.raises(ValueError, match=r"evaluate\.score\.junk: unknown key"):
        ScoreConfig.from_dict({"image_score": "topk", "junk": 1})


# ------------------------------------------------------------------ score_batch with stubs


def test_score_is_zero_where_reconstruction_is_perfect():
    routed = _routed()
    model = StubModel(routed)
    prior = StubPrior(_probs())
    x = _x()
    out = score_batch(model, x, prior=prior, cfg=RAW)
    outside = torch.ones(SIZE, SIZE, dtype=torch.bool)
    outside[ROWS, COLS] = False
    assert (out.budget_map > 0).all()  # the budget term is non-zero everywhere...
    assert torch.equal(out.rec_map[:, outside], torch.zeros(2, int(outside.sum())))
    assert torch.equal(out.score_map[:, outside], torch.zeros(2, int(outside.sum())))  # ...yet S = 0
    assert (out.score_map[:, ~outside] > 0).all()


def test_score_is_budget_times_rec_with_nearest_upsampling():
    routed = _routed()
    probs = _probs()
    model = StubModel(routed)
    prior = StubPrior(probs)
    x = _x()
    cls = torch.tensor([0, 1])
    out = score_batch(model, x, class_index=cls, prior=prior, cfg=RAW)

    # the prior sees the routed budget and the class index; reconstruction uses argmax p
    assert torch.equal(prior.calls[0][0], routed) and prior.calls[0][1] is cls
    assert [m for m, _ in model.calls] == ["dynamic", "given"]
    assert torch.equal(model.calls[1][1], probs.argmax(1))
    assert torch.equal(out.prior_levels, probs.argmax(1))
    assert torch.equal(out.routed_levels, routed)
    assert out.prior_probs is probs

    budget = -torch.log(probs.gather(1, routed[:, None])[:, 0])
    torch.testing.assert_close(out.budget_map, budget)
    rec = torch.zeros(2, SIZE, SIZE)
    rec[:, ROWS, COLS] = 3 * 0.5 ** 2  # the "given" reconstruction errs by 0.5 on 3 channels
    torch.testing.assert_close(out.rec_map, rec)
    torch.testing.assert_close(out.recon, model(x, mode="given", level_map=out.prior_levels).recon)
    expected = _manual_budget_px(probs, routed) * rec
    torch.testing.assert_close(out.score_map, expected)
    assert out.score_map.shape == (2, SIZE, SIZE)
    torch.testing.assert_close(out.image_score, expected.flatten(1).max(1).values)


def test_score_topk_smoothing_and_combine_options():
    routed, probs, x = _routed(), _probs(), _x()
    expected = _manual_budget_px(probs, routed) * reconstruction_error(
        x, StubModel(routed)(x, mode="given", level_map=probs.argmax(1)).recon)

    out = score_batch(StubModel(routed), x, prior=StubPrior(probs),
                      cfg=ScoreConfig(image_score="topk", topk_fraction=0.05, smooth_sigma=0.0))
    k = round(0.05 * SIZE * SIZE)
    torch.testing.assert_close(out.image_score, expected.flatten(1).topk(k, 1).values.mean(1))

    cfg = ScoreConfig(smooth_sigma=8.0)  # at 256 px; scaled to the map size
    sigma = 8.0 * SIZE / 256
    out = score_batch(StubModel(routed), x, prior=StubPrior(probs), cfg=cfg)
    torch.testing.assert_close(out.score_map, gaussian_blur(expected, sigma))
    torch.testing.assert_close(out.image_score, gaussian_blur(expected, sigma).flatten(1).max(1).values)

    out = score_batch(StubModel(routed), x, prior=StubPrior(probs), cfg=ScoreConfig(combine="rec", smooth_sigma=0.0))
    torch.testing.assert_close(out.score_map, out.rec_map)
    out = score_batch(StubModel(routed), x, prior=StubPrior(probs), cfg=ScoreConfig(combine="budget", smooth_sigma=0.0))
    torch.testing.assert_close(out.score_map, _manual_budget_px(probs, routed))

    out = score_batch(StubModel(routed), x, prior=StubPrior(probs), cfg=ScoreConfig(budget_upsample="bilinear", smooth_sigma=0.0))
    bil = F.interpolate(out.budget_map[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(out.score_map, bil * out.rec_map)

    # (1 + CE) x S_rec: where router and prior agree (CE ~ 0) S_rec survives instead of vanishing
    out = score_batch(StubModel(routed), x, prior=StubPrior(probs), cfg=ScoreConfig(combine="one_plus_ce", smooth_sigma=0.0))
    torch.testing.assert_close(out.score_map, (1 + _manual_budget_px(probs, routed)) * out.rec_map)

    with pytest.raises(ConfigError, match="evaluate.score.combine must be one of product, one_plus_ce, rec, budget, "
                                          "got 'sum'"):
        ScoreConfig(combine="sum")


def test_prior_smoothing_mixes_the_prior_with_uniform_and_bounds_the_ce():
    routed, x = _routed(), _x()
    probs = _probs()
    probs[0, :, 0, 0] = torch.tensor([1 - 2e-6, 1e-6, 1e-6])  # a patch the prior rules out ...
    routed = routed.clone()
    routed[0, 0, 0] = 1  # ... routed to a level it gives 1e-6
    a = 0.3
    paper = score_batch(StubModel(routed), x, prior=StubPrior(probs), cfg=RAW)
    out = score_batch(StubModel(routed), x, prior=StubPrior(probs), cfg=RAW.replace(prior_smoothing=a))
    mixed = (1 - a) * probs + a / 3
    torch.testing.assert_close(out.score_map, _manual_budget_px(mixed, routed) * out.rec_map)
    # the prior's argmax, and so the reconstruction and S_rec, do not move
    assert torch.equal(out.prior_levels, paper.prior_levels) and torch.equal(out.rec_map, paper.rec_map)
    assert torch.equal(out.prior_probs, probs)  # the record keeps the prior as trained
    assert paper.budget_map[0, 0, 0].item() == pytest.approx(-np.log(1e-6), rel=1e-4)
    assert bool((out.budget_map <= -np.log(a / 3) + 1e-5).all())  # bounded: -log(a / K)
    # a = 1: the CE is the constant log K, so S is S_rec up to that factor
    flat = score_batch(StubModel(routed), x, prior=StubPrior(probs), cfg=RAW.replace(prior_smoothing=1.0))
    torch.testing.assert_close(flat.score_map, np.log(3) * flat.rec_map)
    with pytest.raises(ConfigError, match="evaluate.score.prior_smoothing must be in \\[0, 1\\].*got 1.5"):
        ScoreConfig(prior_smoothing=1.5)


def test_score_label_names_every_departure_from_the_papers_product():
    assert ScoreConfig().is_paper and ScoreConfig().label() == "product"
    assert not ScoreConfig(prior_smoothing=0.1).is_paper
    assert ScoreConfig(prior_smoothing=0.1).label() == "product, prior smoothing 0.1"
    assert ScoreConfig(combine="one_plus_ce", prior_smoothing=0.05).label() == "one_plus_ce, prior smoothing 0.05"
    assert ScoreConfig(combine="rec", prior_smoothing=0.1).label() == "rec"  # rec reads no CE
    assert not ScoreConfig(combine="rec").is_paper


def test_no_prior_scores_routed_reconstruction():
    routed = _routed()
    model = StubModel(routed)
    x = _x()
    out = score_batch(model, x, prior=None, cfg=RAW)
    assert [m for m, _ in model.calls] == ["dynamic"]
    assert torch.equal(out.budget_map, torch.ones(2, G, G))
    rec = torch.zeros(2, SIZE, SIZE)
    rec[:, ROWS, COLS] = 3 * 0.25 ** 2  # the routed reconstruction errs by 0.25
    torch.testing.assert_close(out.rec_map, rec)
    torch.testing.assert_close(out.score_map, rec)
    assert out.prior_levels is None and out.prior_probs is None
    assert torch.equal(out.routed_levels, routed)


def test_static_model_scores_rec():
    model = StubModel(_routed(), static=True)
    x = _x()
    out = score_batch(model, x, prior=StubPrior(_probs()), cfg=RAW)
    assert out.routed_levels is None and out.prior_levels is None and out.prior_probs is None
    assert torch.equal(out.budget_map, torch.ones(2, G, G))
    torch.testing.assert_close(out.score_map, out.rec_map)
    assert out.score_map[:, ROWS, COLS].min().item() == pytest.approx(3 * 0.25 ** 2)


# ------------------------------------------------------------------ score_batch with real tiny models


def test_real_model_without_prior_and_static():
    torch.manual_seed(0)
    model = PVQAE(_cfg()).eval()
    x = _x()
    out = score_batch(model, x, cfg=RAW)
    ref = model(x, mode="dynamic")
    torch.testing.assert_close(out.score_map, reconstruction_error(x, ref.recon))
    assert torch.equal(out.routed_levels, ref.routing.levels)
    assert torch.equal(out.budget_map, torch.ones(2, G, G))
    torch.testing.assert_close(out.image_score, out.score_map.flatten(1).max(1).values)

    torch.manual_seed(0)
    static = PVQAE(_cfg(levels=(1,))).eval()
    out = score_batch(static, x, cfg=RAW)
    torch.testing.assert_close(out.score_map, reconstruction_error(x, static(x).recon))
    assert out.routed_levels is None
    assert out.budget_map.shape == (2, G, G)


def test_real_model_with_prior_reconstructs_with_prior_levels():
    torch.manual_seed(0)
    model = PVQAE(_cfg()).eval()
    x = _x()
    probs = _probs()
    out = score_batch(model, x, prior=StubPrior(probs), cfg=RAW)
    ref = model(x, mode="given", level_map=probs.argmax(1))
    torch.testing.assert_close(out.recon, ref.recon)
    routed = model(x, mode="dynamic").routing.levels
    torch.testing.assert_close(out.score_map, _manual_budget_px(probs, routed) * reconstruction_error(x, ref.recon))


@pytest.mark.parametrize("levels", [(0, 1, 2), (1,)])
def test_scoring_runs_encoder_and_decoder_channels_last_and_training_does_not(levels):
    """The CPU speed-up: score_batch feeds the encoder channels-last and the decoder follows it
    (the codes inherit the encoder's layout);
    a plain (training) forward keeps the default layout end to end."""
    torch.manual_seed(0)
    model = PVQAE(_cfg(levels=levels)).eval()
    seen = {}
    model.encoder.conv_in.register_forward_pre_hook(lambda m, a: seen.__setitem__("enc", a[0]))
    model.decoder.conv_in.register_forward_pre_hook(lambda m, a: seen.__setitem__("dec", a[0]))

    def channels_last(t):
        return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()

    x = torch.rand(2, 3, SIZE, SIZE)  # default layout, as the pipeline's splits hold them
    out = score_batch(model, x, cfg=RAW)
    assert channels_last(seen["enc"]) and channels_last(seen["dec"])
    assert out.recon.is_contiguous() and out.rec_map.is_contiguous()  # callers get plain tensors
    model.train()(x)
    assert seen["enc"].is_contiguous() and seen["dec"].is_contiguous()


# --- score variants (issue 13's diagnostic table) -------------------------------------------

def _model_and_prior():
    from pvqae.prior import BudgetPriorTransformer, PriorConfig

    torch.manual_seed(0)
    model = PVQAE(_cfg()).eval()
    prior = BudgetPriorTransformer.from_config(PriorConfig(mode="per-class", dim=16, heads=2), grid=G,
                                               num_classes=2).eval()
    return model, prior


def test_score_variants_agree_with_score_batch():
    from pvqae.scoring import SCORE_VARIANTS, score_variants

    model, prior = _model_and_prior()
    x, c = _x(3), torch.tensor([0, 1, 0])
    cfg = ScoreConfig()
    out = score_variants(model, x, c, prior, cfg)
    assert list(out) == list(SCORE_VARIANTS)
    for name, variant_cfg in (("product", cfg), ("rec", cfg.replace(combine="rec")),
                              ("bilinear", cfg.replace(budget_upsample="bilinear"))):
        ref = score_batch(model, x, c, prior, variant_cfg)
        assert torch.allclose(out[name][0], ref.score_map, atol=1e-6), name
        assert torch.allclose(out[name][1], ref.image_score, atol=1e-6), name
    # (1 + CE) x S_rec >= S_rec everywhere (CE >= 0 and the smoothing is a positive kernel)
    assert bool((out["one_plus_ce"][0] >= out["rec"][0] - 1e-6).all())
    # the variants' product is the paper's (the prior as trained) whatever smoothing the run's S uses
    smoothed = score_variants(model, x, c, prior, cfg.replace(prior_smoothing=0.2))
    for name in ("product", "one_plus_ce", "bilinear"):
        torch.testing.assert_close(smoothed[name][0], out[name][0])
    soft_map, soft_img = out["soft_ce"]
    assert soft_map.shape == (3, SIZE, SIZE) and bool(torch.isfinite(soft_map).all()) and bool((soft_img >= 0).all())


def test_score_split_gives_the_variants_of_its_own_pass():
    """The evaluate stage scores the test split once: ``score_split(..., variants=True)`` returns
    the main scores unchanged and every variant equal to the separate variant pass; the timing
    stays that of the main score."""
    from pvqae.evaluation import score_split, score_variants_split
    from pvqae.scoring import SCORE_VARIANTS, variant_maps

    model, prior = _model_and_prior()
    split = {"image": _x(5), "class_index": torch.tensor([0, 1, 0, 1, 1]), "mask": torch.zeros(5, SIZE, SIZE)}
    plain = score_split(model, split, prior, ScoreConfig(), batch_size=2, progress=False)
    both = score_split(model, split, prior, ScoreConfig(), batch_size=2, progress=False, variants=True)
    assert "variants" not in plain and list(both["variants"]) == list(SCORE_VARIANTS)
    for k in ("maps", "image", "rec", "routed", "prior"):
        np.testing.assert_array_equal(both[k], plain[k])
    ref = score_variants_split(model, split, prior, ScoreConfig(), batch_size=3, progress=False)  # other batches
    for k in SCORE_VARIANTS:
        np.testing.assert_allclose(both["variants"][k]["maps"], ref[k]["maps"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(both["variants"][k]["image"], ref[k]["image"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(both["variants"]["product"]["maps"], both["maps"])  # the paper's score
    with pytest.raises(ValueError, match="need a PVQAE with a prior"):  # no prior: nothing to combine
        variant_maps(score_batch(model, split["image"][:1], None, None))


def test_score_variants_need_a_prior():
    from pvqae.scoring import score_variants

    model, _ = _model_and_prior()
    with pytest.raises(ValueError, match="need a PVQAE with a prior"):
        score_variants(model, _x(1), None, None)

"""Tests of the training loops (paper Sec. III-A, III-B2, III-C1): lambda schedule in the log,
interrupt-and-resume reproducibility, checkpoints, NaN detection, prior training, data stream."""

from __future__ import annotations

import csv
import json
from typing import NamedTuple

import pytest
import torch
from conftest import interrupt_at

import pvqae.resumable as resumable
import pvqae.train as T
from pvqae import budget as budget_mod
from pvqae.batches import BatchStream, flip_augment
from pvqae.errors import TrainingError
from pvqae.model import PVQAE, ModelConfig, routed_levels
from pvqae.prior import BudgetPriorTransformer, PriorConfig, load_prior
from pvqae.settings import BudgetConfig, PretrainConfig
from pvqae.train import train_prior

SIZE = 32
G = 8  # coarse grid of the tiny model


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """One thread (deterministic, fast) and resume checkpoints under tmp_path."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(resumable, "RESUME_ROOT", tmp_path / "resume")
    yield
    torch.set_num_threads(before)


def _model(seed: int = 0, **kw) -> PVQAE:
    base = dict(image_size=SIZE, ch=8, ch_mult=(1, 1, 2), embed_dim=8, num_codes=16, router_hidden=16, groups=8,
                dead_after=2)
    base.update(kw)
    torch.manual_seed(seed)
    return PVQAE(ModelConfig(**base))


def _data(n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(n, 3, SIZE, SIZE, generator=g), "entropy": torch.rand(n, G, G, generator=g)}


def _stream(data=None, batch_size: int = 2, seed: int = 0, augment=flip_augment) -> BatchStream:
    return BatchStream(data if data is not None else _data(), batch_size, seed, augment=augment)


class _Cfg(NamedTuple):
    """What one training stage gets: the autoencoder settings and, for dynamic routing, the budget's."""

    train: PretrainConfig
    budget: BudgetConfig | None


BUDGET_KEYS = set(BudgetConfig.__dataclass_fields__) - {"steps", "lr", "routing", "disc_start"}


def _tcfg(**kw) -> _Cfg:
    """Test settings in one flat namespace (no GAN, budget cost 1 unless set)."""
    base = dict(steps=8, batch_size=2, lr=1e-3, routing="dynamic", lambda_max=1.0, log_every=1, ckpt_every=2,
                tau=1.0, tau_min=0.5, disc_weight=0.0, disc_start=0, budget_scale=1.0, router_lr=0.0)
    base.update(kw)
    budget_kw = {k: base.pop(k) for k in list(base) if k in BUDGET_KEYS}
    train = PretrainConfig(**base)
    if train.routing != "dynamic":
        return _Cfg(train, None)
    return _Cfg(train, BudgetConfig(steps=train.steps, lr=train.lr, routing="dynamic", disc_start=train.disc_start,
                                    **budget_kw))


def _train(model, stream, cfg: _Cfg, out_dir, name, seed, **kw) -> dict:
    return T.train_autoencoder(model, stream, cfg.train, out_dir, name, seed, budget=cfg.budget, **kw)


def _read_log(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ lambda schedule in the log


@pytest.mark.parametrize("schedule,warmup", [("linear", 0), ("cosine", 2)])
def test_logged_lambda_follows_schedule(tmp_path, schedule, warmup):
    cfg = _tcfg(steps=6, lambda_max=1.25, lambda_schedule=schedule, lambda_warmup=warmup, ckpt_every=100)
    summary = _train(_model(), _stream(), cfg, tmp_path / "out", "ae", seed=0, progress=False)
    rows = _read_log(tmp_path / "out" / "ae_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(6))
    for r in rows:
        expected = budget_mod.lambda_schedule(int(r["step"]), 6, 1.25, schedule, warmup)
        assert float(r["lam"]) == pytest.approx(expected, rel=1e-5, abs=1e-12)
        assert float(r["budget"]) > 0
        fr = [float(r[f"frac_{n}"]) for n in ("coarse", "median", "fine")]
        assert sum(fr) == pytest.approx(1.0, abs=1e-5)
    assert float(rows[0]["lam"]) == 0.0
    assert summary["steps"] == 6 and summary["resumed_from"] == 0
    assert len(summary["codes_in_use"]) == 3


def test_no_lambda_column_without_budget_learning(tmp_path):
    cfg = _tcfg(steps=3, routing="random", lambda_max=0.0, ckpt_every=100)
    _train(_model(), _stream(), cfg, tmp_path / "out", "pre", seed=0, progress=False)
    rows = _read_log(tmp_path / "out" / "pre_log.csv")
    assert len(rows) == 3
    assert "lam" not in rows[0] and "budget" not in rows[0]


def test_log_every_keeps_every_kth_row_and_the_last(tmp_path):
    cfg = _tcfg(steps=7, log_every=3, ckpt_every=100)
    _train(_model(), _stream(), cfg, tmp_path / "out", "ae", seed=0, progress=False)
    rows = _read_log(tmp_path / "out" / "ae_log.csv")
    assert [int(r["step"]) for r in rows] == [0, 3, 6]


def test_pretraining_leaves_router_untouched(tmp_path):
    model = _model()
    router_before = {k: v.clone() for k, v in model.router.state_dict().items()}
    enc_before = model.encoder.conv_in.weight.detach().clone()
    cfg = _tcfg(steps=3, routing="random", lambda_max=0.0, ckpt_every=100)
    _train(model, _stream(), cfg, tmp_path / "out", "pre", seed=0, progress=False)
    for k, v in model.router.state_dict().items():
        assert torch.equal(v, router_before[k]), k
    assert not torch.equal(model.encoder.conv_in.weight, enc_before)


# ------------------------------------------------------------------ interrupt and resume


def test_interrupted_training_resumes_to_identical_weights(tmp_path, monkeypatch, capsys):
    data = _data()
    cfg = _tcfg(steps=8, ckpt_every=2)

    # A: uninterrupted
    model_a = _model()
    _train(model_a, _stream(data), cfg, tmp_path / "a", "ae", seed=3, progress=False)
    state_a = model_a.state_dict()
    assert not any((tmp_path / "resume").iterdir()), "resume folder removed after a finished run"

    # B: interrupted at step 5 (last checkpoint at step 4), then resumed
    interrupt_at(monkeypatch, 5, _train, _model(), _stream(data), cfg, tmp_path / "b", "ae", seed=3,
                 progress=False)
    resume_dirs = list((tmp_path / "resume").iterdir())
    assert len(resume_dirs) == 1 and resume_dirs[0].name.startswith("ae-")
    last = resume_dirs[0] / "last.pt"
    assert last.is_file()
    assert torch.load(last, weights_only=True)["step"] == 4
    partial = _read_log(tmp_path / "b" / "ae_log.csv")
    assert [int(r["step"]) for r in partial] == [0, 1, 2, 3]  # log flushed with the checkpoint
    assert not (tmp_path / "b" / "ae.pt").exists()

    capsys.readouterr()
    model_b = _model(seed=123)  # a different init: everything must come from the checkpoint
    summary = _train(model_b, _stream(data), cfg, tmp_path / "b", "ae", seed=3, progress=False)
    assert "resuming from step 4" in capsys.readouterr().out
    assert summary["resumed_from"] == 4
    state_b = model_b.state_dict()

    assert state_a.keys() == state_b.keys()
    for k in state_a:
        if state_a[k].is_floating_point():
            assert torch.allclose(state_a[k], state_b[k], rtol=1e-5, atol=1e-7), k
        else:
            assert torch.equal(state_a[k], state_b[k]), k  # usage / idle counters of the quantizers

    rows_a = _read_log(tmp_path / "a" / "ae_log.csv")
    rows_b = _read_log(tmp_path / "b" / "ae_log.csv")
    assert [int(r["step"]) for r in rows_b] == list(range(8))
    assert len(rows_a) == len(rows_b) == 8
    for ra, rb in zip(rows_a, rows_b):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=1e-4)
        assert ra["lam"] == rb["lam"]
    assert not list((tmp_path / "resume").iterdir())


def test_different_config_does_not_resume(tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 3, _train, _model(), _stream(), _tcfg(steps=4), tmp_path / "o", "ae", seed=0,
                 progress=False)
    # another seed -> another fingerprint -> starts from scratch
    summary = _train(_model(), _stream(), _tcfg(steps=4), tmp_path / "o", "ae", seed=1, progress=False)
    assert summary["resumed_from"] == 0


# ------------------------------------------------------------------ final checkpoint


def test_final_checkpoint_loads_weights_only_and_reproduces_outputs(tmp_path):
    model = _model()
    cfg = _tcfg(steps=3, ckpt_every=100)
    _train(model, _stream(), cfg, tmp_path / "out", "ae", seed=0, progress=False)
    path = tmp_path / "out" / "ae.pt"
    st = torch.load(path, weights_only=True)
    assert st["steps"] == 3 and st["seed"] == 0
    assert ModelConfig.from_dict(st["config"]) == model.cfg
    assert PretrainConfig.from_dict(st["train"]) == cfg.train and BudgetConfig.from_dict(st["budget"]) == cfg.budget
    summary = json.loads((tmp_path / "out" / "ae_summary.json").read_text())
    assert summary["steps"] == 3

    loaded = PVQAE.from_checkpoint(path)
    assert not loaded.training
    model.eval()
    x = _data(2, seed=9)["image"]
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a.recon, b.recon)
    assert torch.equal(a.routing.levels, b.routing.levels)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    # routed_levels: noise-free, batched
    lv = routed_levels(loaded, _data(5, seed=4)["image"], batch_size=2)
    assert lv.shape == (5, G, G)
    assert torch.equal(lv[:2], loaded(_data(5, seed=4)["image"][:2]).routing.levels)


def test_static_model_trains_and_loads(tmp_path):
    model = _model(levels=(1,))
    cfg = _tcfg(steps=2, routing="random", lambda_max=1.0, ckpt_every=100)  # no router: lambda ignored
    _train(model, _stream(), cfg, tmp_path / "out", "vq", seed=0, progress=False)
    rows = _read_log(tmp_path / "out" / "vq_log.csv")
    assert len(rows) == 2 and "lam" not in rows[0] and "frac_coarse" not in rows[0]
    loaded = PVQAE.from_checkpoint(tmp_path / "out" / "vq.pt")
    assert not loaded.dynamic
    x = _data(1, seed=5)["image"]
    assert torch.equal(model.eval()(x).recon, loaded(x).recon)


# ------------------------------------------------------------------ NaN loss


def test_nan_images_raise_training_error_naming_term_and_step(tmp_path):
    data = _data(4)
    data["image"][2, 0, 5, 5] = float("nan")
    stream = _stream(data, batch_size=2, augment=None)
    first = next(s for s in range(10) if torch.isnan(stream.batch(s)["image"]).any())
    cfg = _tcfg(steps=first + 2, ckpt_every=100)
    with pytest.raises(TrainingError, match=rf"loss term 'total loss' is not finite at step {first}\b"):
        _train(_model(), stream, cfg, tmp_path / "out", "ae", seed=0, progress=False)
    assert not (tmp_path / "out" / "ae.pt").exists()


def test_exploding_lr_raises_training_error(tmp_path):
    # no gradient clipping and an absurd learning rate: the loss overflows within a few steps
    cfg = _tcfg(steps=30, lr=1e12, grad_clip=0.0, betas=(0.0, 0.0), ckpt_every=100, lambda_max=0.0,
                routing="random")
    with pytest.raises(TrainingError, match=r"loss term '.+' is not finite at step \d+"):
        _train(_model(), _stream(), cfg, tmp_path / "out", "ae", seed=0, progress=False)


# ------------------------------------------------------------------ prior training


def _level_maps() -> tuple[torch.Tensor, torch.Tensor]:
    i = torch.arange(4)[:, None]
    j = torch.arange(4)[None, :]
    a = (i + j) % 3
    b = (2 * i + j + 1) % 3
    levels = torch.stack([a] * 8 + [b] * 8)
    cls = torch.tensor([0] * 8 + [1] * 8)
    return levels, cls


def test_train_prior_learns_pattern_and_reloads(tmp_path):
    levels, cls = _level_maps()
    cfg = PriorConfig(mode="per-class", steps=150, batch_size=8, lr=3e-3, dim=32, heads=2, dropout=0.0)
    prior, summary = train_prior(levels, cls, 2, cfg, tmp_path / "prior.pt", seed=0, progress=False)
    assert prior is not None and not prior.training
    probs = prior.predict_all(levels, cls)
    assert probs.shape == (16, 3, 4, 4)
    acc = float((probs.argmax(1) == levels).float().mean())
    assert acc > 0.9
    assert summary["train_accuracy_all_positions"] == pytest.approx(acc)
    assert summary["mode"] == "per-class" and summary["steps"] == 150
    assert torch.load(tmp_path / "prior.pt", weights_only=True)["mode"] == "per-class"
    reloaded = load_prior(tmp_path / "prior.pt")
    assert reloaded is not None and not reloaded.training
    assert torch.equal(reloaded.predict_all(levels, cls), probs)


def test_train_prior_is_deterministic(tmp_path):
    levels, cls = _level_maps()
    cfg = PriorConfig(mode="universal", steps=20, batch_size=8, lr=3e-3, dim=16, heads=2, dropout=0.1)
    p1, _ = train_prior(levels, cls, 2, cfg, tmp_path / "p1.pt", seed=4, progress=False)
    p2, _ = train_prior(levels, cls, 2, cfg, tmp_path / "p2.pt", seed=4, progress=False)
    assert torch.equal(p1.predict_all(levels, cls), p2.predict_all(levels, cls))


@pytest.mark.parametrize("steps", [1, 2])
def test_train_prior_with_one_or_two_steps(tmp_path, steps):
    """A time-budgeted plan on a busy machine can leave the prior one step (one-cycle needs two):
    it trains at the constant learning rate, moves the weights and saves a loadable prior."""
    levels, cls = _level_maps()
    cfg = PriorConfig(mode="universal", steps=steps, batch_size=8, lr=3e-3, dim=16, heads=2, dropout=0.0)
    torch.manual_seed(0)
    untrained = BudgetPriorTransformer.from_config(cfg, grid=4, num_classes=2)  # train_prior's init, same seed
    prior, summary = train_prior(levels, cls, 2, cfg, tmp_path / "prior.pt", seed=0, progress=False)
    assert summary["steps"] == steps and len(summary["history"]) >= 1
    moved = [not torch.equal(a, b) for a, b in zip(untrained.state_dict().values(), prior.state_dict().values())]
    assert any(moved)
    assert torch.equal(load_prior(tmp_path / "prior.pt").predict_all(levels, cls), prior.predict_all(levels, cls))


def test_prior_mode_none(tmp_path):
    levels, cls = _level_maps()
    prior, summary = train_prior(levels, cls, 2, PriorConfig(mode="none"), tmp_path / "sub" / "none.pt", seed=0,
                                 progress=False)
    assert prior is None and summary == {"mode": "none"}
    assert (tmp_path / "sub" / "none.pt").is_file()
    assert load_prior(tmp_path / "sub" / "none.pt") is None


# ------------------------------------------------------------------ BatchStream


def test_batch_stream_is_pure_function_of_seed_and_step():
    data = {"i": torch.arange(10), "image": torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(0))}
    s1 = BatchStream(data, 3, seed=5, augment=flip_augment)
    s2 = BatchStream(data, 3, seed=5, augment=flip_augment)
    steps = [7, 0, 3, 3, 12, 1]
    for s in steps:  # any order, repeated calls
        b1, b2 = s1.batch(s), s2.batch(s)
        assert torch.equal(b1["i"], b2["i"]) and torch.equal(b1["image"], b2["image"])
    assert torch.equal(s1.batch(4)["image"], s1.batch(4)["image"])
    other = BatchStream(data, 3, seed=6, augment=flip_augment)
    assert any(not torch.equal(s1.batch(s)["i"], other.batch(s)["i"]) for s in range(6))


def test_batch_stream_epochs_cover_every_index_once():
    n, bs = 12, 4
    s = BatchStream({"i": torch.arange(n)}, bs, seed=1)
    assert s.per_epoch == 3
    for epoch in range(3):
        seen = torch.cat([s.batch(epoch * 3 + k)["i"] for k in range(3)])
        assert sorted(seen.tolist()) == list(range(n))
    # epochs are shuffled differently
    assert not torch.equal(torch.cat([s.batch(k)["i"] for k in range(3)]),
                           torch.cat([s.batch(3 + k)["i"] for k in range(3)]))
    # drop-last: 10 images, batches of 3 -> 3 batches of distinct indices, one image dropped
    s = BatchStream({"i": torch.arange(10)}, 3, seed=2)
    assert s.per_epoch == 3
    for epoch in range(2):
        seen = torch.cat([s.batch(epoch * 3 + k)["i"] for k in range(3)]).tolist()
        assert len(seen) == 9 and len(set(seen)) == 9


def test_batch_stream_clamps_batch_and_rejects_empty():
    s = BatchStream({"i": torch.arange(3)}, 8, seed=0)
    assert s.batch_size == 3 and sorted(s.batch(0)["i"].tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match="no training images"):
        BatchStream({"i": torch.zeros(0)}, 2, seed=0)


def test_flip_augment_flips_image_and_entropy_together():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4) / 96
    e = torch.arange(2 * 2 * 2, dtype=torch.float32).view(2, 2, 2)
    for seed in range(8):
        out = flip_augment({"image": x, "entropy": e}, torch.Generator().manual_seed(seed), jitter=0.0)
        for n in range(2):
            flipped = torch.equal(out["image"][n], x[n].flip(-1))
            assert flipped or torch.equal(out["image"][n], x[n])
            assert torch.equal(out["entropy"][n], e[n].flip(-1) if flipped else e[n])
    out = flip_augment({"image": x}, torch.Generator().manual_seed(0), jitter=0.5)
    assert out["image"].min() >= 0 and out["image"].max() <= 1


# ------------------------------------------------------------------ TrainConfig


def test_tau_schedule():
    cfg = BudgetConfig(steps=10, tau=2.0, tau_min=0.1)
    taus = [cfg.tau_at(s) for s in range(10)]
    assert taus[0] == pytest.approx(2.0)
    assert taus[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(taus, taus[1:]))
    assert taus[5] == pytest.approx(2.0 * (0.05 ** (5 / 9)))
    # tau_min >= tau (or one step) disables annealing
    assert BudgetConfig(steps=10, tau=1.0, tau_min=1.0).tau_at(7) == 1.0
    assert BudgetConfig(steps=10, tau=1.0, tau_min=3.0).tau_at(9) == 1.0
    assert BudgetConfig(steps=1, tau=1.0, tau_min=0.1).tau_at(0) == 1.0


def test_train_configs_are_strict_and_typed():
    from pvqae.strict_config import ConfigError

    cfg = PretrainConfig.from_dict({"steps": 5, "betas": [0.9, 0.99]})
    assert cfg.steps == 5 and cfg.betas == (0.9, 0.99)
    with pytest.raises(ConfigError, match=r"budget\.lamda_max: unknown key; did you mean lambda_max\?"):
        BudgetConfig.from_dict({"lamda_max": 2.0})
    with pytest.raises(ConfigError, match=r"prior\.x: unknown key"):
        PriorConfig.from_dict({"mode": "universal", "x": 0})
    with pytest.raises(ConfigError, match=r"pretrain\.steps: expected int, got str"):
        PretrainConfig.from_dict({"steps": "ten"})
    # budget learning: the autoencoder settings of pre-training with the budget stage's own
    pre, b = PretrainConfig(steps=100, lr=1e-3, disc_start=50), BudgetConfig(steps=7, lr=2e-4, disc_start=0)
    assert pre.for_budget(b) == pre.replace(steps=7, lr=2e-4, disc_start=0, routing="dynamic")


def test_feature_jitter_scales_with_each_positions_magnitude_and_is_off_at_zero():
    from pvqae.batches import feature_jitter
    from pvqae.seeds import generator

    x = torch.ones(2, 64, 8, 8)
    x[:, :, :4] *= 10.0  # the top half is 10 x larger
    assert feature_jitter(x, 0.0, generator("jitter", 0, 0)) is x
    noisy = feature_jitter(x, 0.5, generator("jitter", 0, 0))
    noise = noisy - x
    top, bottom = noise[:, :, :4].std().item(), noise[:, :, 4:].std().item()
    assert top == pytest.approx(5.0, rel=0.1) and bottom == pytest.approx(0.5, rel=0.1)  # std = 0.5 x RMS
    assert torch.equal(noisy, feature_jitter(x, 0.5, generator("jitter", 0, 0)))  # a pure function of (seed, step)
    assert not torch.equal(noisy, feature_jitter(x, 0.5, generator("jitter", 0, 1)))


def test_feature_jitter_feeds_the_network_noise_but_the_loss_the_clean_input(tmp_path, monkeypatch,
                                                                            isolated_training):
    from pvqae import train as train_mod
    from pvqae.batches import train_stream
    from pvqae.config import load_params
    from pvqae.model import PVQAE
    from pvqae.settings import Params

    params = load_params()
    params["data"].update(image_size=32, patch_size=8)
    cfg = Params.from_dict(params)
    seen = {}
    real_forward = PVQAE.forward

    def spy(self, x, *a, **k):
        seen.setdefault("input", x.detach().clone())
        return real_forward(self, x, *a, **k)

    real_loss = train_mod.PVQAELoss.forward

    def spy_loss(self, x, out, *a, **k):
        seen.setdefault("target", x.detach().clone())
        return real_loss(self, x, out, *a, **k)

    monkeypatch.setattr(PVQAE, "forward", spy)
    monkeypatch.setattr(train_mod.PVQAELoss, "forward", spy_loss)
    split = {"image": torch.rand(4, 3, 32, 32), "entropy": torch.rand(4, 4, 4)}
    torch.manual_seed(0)
    model = PVQAE(cfg.model_config(input_shape=(3, 32)))
    pre = cfg.pretrain.replace(steps=1, disc_weight=0.0, augment_jitter=0.0, feature_jitter=1.0, batch_size=4)
    train_mod.train_autoencoder(model, train_stream(split, 4, 0, 0.0), pre, tmp_path, "j", 0, progress=False)
    assert not torch.allclose(seen["input"], seen["target"])
    ratio = ((seen["input"] - seen["target"]).std() / seen["target"].pow(2).mean().sqrt()).item()
    assert 0.8 < ratio < 1.2

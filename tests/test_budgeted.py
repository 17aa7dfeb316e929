"""Tests of the time-budgeted study (issue 15): the lossless data pack, step planning from
measured rates, the wall-clock cap, bf16 autocast / TF32 (CUDA branches with a stubbed
device, the CPU path unchanged), the scaling fit, and ``scripts/gpu_study.sh --tiny``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_data_params

from pvqae import distributed
from pvqae.benchmark import budgeted as B
from pvqae.data import prepared
from pvqae.data.pack import pack, unpack
from pvqae.errors import DataError
from pvqae.model import PVQAE, ModelConfig
from pvqae.settings import BudgetConfig, Params, PretrainConfig
from pvqae.train import train_autoencoder

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("isolated_training")


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory) -> Path:
    data = {**tiny_data_params(), "val_fraction": 0.34}  # held-out normals: the validation defects too
    out = tmp_path_factory.mktemp("prep") / "prepared"
    prepared.prepare(data, out, seed=0, progress=False)
    return out


# --- the pack -------------------------------------------------------------------------------

def test_pack_is_lossless_and_smaller(prepared_dir, tmp_path):
    sizes = pack(prepared_dir, tmp_path / "data.npz")
    assert sizes["packed_bytes"] < sizes["raw_bytes"]
    unpack(tmp_path / "data.npz", tmp_path / "back")
    a, b = np.load(prepared_dir / "arrays.npz"), np.load(tmp_path / "back" / "arrays.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    assert (tmp_path / "back" / "manifest.json").read_text() == (prepared_dir / "manifest.json").read_text()
    x, y = prepared.load_prepared(prepared_dir, "test"), prepared.load_prepared(tmp_path / "back", "test")
    assert torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])


def test_pack_and_unpack_name_the_bad_file(tmp_path):
    with pytest.raises(DataError, match="arrays.npz is missing"):
        pack(tmp_path / "nothing", tmp_path / "x.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="bad.npz is not a readable packed dataset"):
        unpack(bad, tmp_path / "out")
    with pytest.raises(DataError, match="does not exist"):
        unpack(tmp_path / "missing.npz", tmp_path / "out")


def test_load_data_checks_the_profile(prepared_dir, tmp_path):
    p = Params.from_dict({"data": {**tiny_data_params(), "image_size": 64, "patch_size": 8},
                          "model": {"ch_mult": [1, 1, 2, 2]}})
    with pytest.raises(DataError, match="prepared with .*image_size.*32.*the profile wants"):
        B.load_data(prepared_dir, p)
    with pytest.raises(DataError, match="no manifest.json"):
        B.load_data(tmp_path, p)


# --- planning -------------------------------------------------------------------------------

def test_plans_fit_the_budget_and_compress_schedules():
    p = Params().replace(budgeted=Params().budgeted.replace(seconds=60.0, pretrain_share=0.75, prior_seconds=10.0))
    plan = B.plan_from_rates(p, {"pvqae_pretrain": 2.0, "pvqae_budget": 1.0, "static_vq": 3.0, "prior": 50.0})
    assert plan["pvqae_pretrain"] == 90 and plan["pvqae_budget"] == 15 and plan["static_vq"] == 180
    assert plan["prior"] == 500
    f = B.plan_from_fraction(p, 0.25)
    assert f["pvqae_pretrain"] == round(0.25 * p.pretrain.steps) and f["static_vq"] == round(0.25 * p.static_vq.steps)
    assert B.scaled(875, 1400, 175) == 109  # the discriminator starts at the same share of the schedule


def test_rate_ignores_startup_and_guards_noise():
    assert B._rate(lambda n: 5.0 + 0.5 * n, 10) == pytest.approx(2.0)  # 5 s of start-up cancel out
    noisy = iter([1.0, 1.0001])  # the difference is noise: twice the average rate at most
    assert B._rate(lambda n: next(noisy), 10) == pytest.approx(2 * 13 / 1.0001)
    assert B._rate(lambda n: 1.0, 10) == pytest.approx(13.0)  # no difference at all: the average rate


def test_budgeted_config_is_strict():
    from pvqae.strict_config import ConfigError

    with pytest.raises(ConfigError, match="budgeted.secnds: unknown key; did you mean seconds"):
        Params.from_dict({"budgeted": {"secnds": 3}})
    with pytest.raises(ConfigError, match="pretrain_share"):
        Params.from_dict({"budgeted": {"pretrain_share": 1.5}})
    with pytest.raises(ConfigError, match="pretrain.autocast must be 'none' or 'bf16'"):
        Params.from_dict({"pretrain": {"autocast": "fp16"}})


# --- the training loop under a deadline and under autocast ----------------------------------

def _tiny_model() -> PVQAE:
    torch.manual_seed(0)
    return PVQAE(ModelConfig(image_size=32, ch=8, ch_mult=(1, 1, 2), embed_dim=8, num_codes=16, router_hidden=16,
                             groups=8))


def _stream():
    from pvqae.batches import BatchStream

    g = torch.Generator().manual_seed(0)
    return BatchStream({"image": torch.rand(8, 3, 32, 32, generator=g), "entropy": torch.rand(8, 8, 8, generator=g)},
                       4, 0)


CFG = PretrainConfig(steps=4, batch_size=4, disc_start=2, disc_ch=8, ckpt_every=100, log_every=1, ssim_weight=0.2)


def test_deadline_stops_the_loop_and_says_so(tmp_path):
    s = train_autoencoder(_tiny_model(), _stream(), CFG.replace(steps=50), tmp_path, "m", 0, progress=False,
                          deadline=time.perf_counter() - 1.0)
    assert s["steps"] == 0 and s["planned_steps"] == 50
    s = train_autoencoder(_tiny_model(), _stream(), CFG, tmp_path, "n", 0, progress=False, deadline=None)
    assert s["steps"] == s["planned_steps"] == 4


def test_cpu_path_is_float32_whatever_autocast_says(tmp_path):
    """``autocast: bf16`` (the default) changes nothing on the CPU: same weights to the bit."""
    weights = []
    for mode in ("none", "bf16"):
        m = _tiny_model()
        train_autoencoder(m, _stream(), CFG.replace(autocast=mode), tmp_path / mode, "m", 0, progress=False)
        weights.append(m.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_bf16_branch_trains_with_float32_codes(tmp_path, monkeypatch):
    """The CUDA branch's code path, run on the CPU by admitting it to autocast: forward and
    loss in bf16, nearest codes still chosen in float32, finite losses, weights move."""
    monkeypatch.setattr(distributed, "AUTOCAST_DEVICES", ("cuda", "cpu"))
    seen = []
    from pvqae.quantizer import VectorQuantizer

    original = VectorQuantizer._quantize
    monkeypatch.setattr(VectorQuantizer, "_quantize", lambda self, z, used: seen.append(z.dtype) or
                        original(self, z, used))
    m = _tiny_model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    bud = BudgetConfig(steps=3)
    s = train_autoencoder(m, _stream(), CFG.for_budget(bud).replace(autocast="bf16"), tmp_path, "b", 0,
                          budget=bud, progress=False)
    assert s["steps"] == 3 and np.isfinite(float(s["final"]["loss"]))
    assert seen and set(seen) == {torch.float32}
    assert any(not torch.equal(before[k], v) for k, v in m.state_dict().items())
    with distributed.autocast(torch.device("cpu"), "bf16"):
        assert m.encoder.conv_in(torch.rand(1, 3, 32, 32)).dtype == torch.bfloat16  # autocast did act


def test_cuda_branches_with_a_stubbed_device(monkeypatch):
    cuda = torch.device("cuda")
    ctx = distributed.autocast(cuda, "bf16")
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16
    assert not isinstance(distributed.autocast(cuda, "none"), torch.autocast)
    assert not isinstance(distributed.autocast(torch.device("cpu"), "bf16"), torch.autocast)
    with pytest.raises(ValueError, match="fp16"):
        distributed.autocast(cuda, "fp16")
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        assert distributed.set_tf32(cuda, True) is True
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        assert distributed.set_tf32(torch.device("cpu"), True) is False
        assert torch.backends.cuda.matmul.allow_tf32 is False  # the CPU leaves the flags alone
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 3 * 2**30)
    assert distributed.accelerator_info(cuda) == {"gpu": "NVIDIA H200", "peak_gpu_memory_mb": 3072.0}
    assert distributed.accelerator_info(torch.device("cpu")) == {"gpu": None, "peak_gpu_memory_mb": None}


# --- the scaling study ----------------------------------------------------------------------

def test_log_fit_and_extrapolation():
    x = [1 / 16, 1 / 8, 1 / 4, 1 / 2]
    fit = B.log_fit(x, [0.5 + 0.1 * np.log10(v) for v in x])
    assert fit["a"] == pytest.approx(0.5) and fit["b_per_decade"] == pytest.approx(0.1)
    assert B.x_to_reach(fit, 0.6) == pytest.approx(10.0)
    assert B.x_to_reach({"a": 0.5, "b_per_decade": -0.1}, 0.9) is None  # falling: never
    assert B.log_fit([1.0], [0.5]) is None


def test_scaling_runs_sizes_at_the_reference_time_and_resumes(prepared_dir, tmp_path):
    p = B.params_for(["tiny"], ["budgeted.calibration_steps=2"])
    big = tmp_path / "p64"
    prepared.prepare(B.resized(p, 64, p.model.ch).data, big, seed=0, progress=False)
    folders = {32: prepared_dir, 64: big}
    res = B.scaling(p, folders, tmp_path / "w", (0.5, 1.0), ((64, 8),), 0.5, progress=False, log=lambda s: None)
    rows = res["rows"]
    assert [r["series"] for r in rows] == ["schedule", "size", "schedule"]  # the sizes right after the reference
    ref, size = rows[0], rows[1]
    assert size["plan"]["seconds"]["static_vq"] == pytest.approx(ref["static_vq"]["train_seconds"])
    for r in rows:
        for m in ("pvqae", "static_vq"):
            assert 0.0 <= r[m]["mean"]["image_auroc"] <= 1.0
    seen = []
    again = B.scaling(p, folders, tmp_path / "w", (0.5, 1.0), ((64, 8),), 0.5, done=rows, progress=False,
                      log=seen.append)
    assert again["rows"] == rows and all("done earlier" in s for s in seen)
    summary = B.summarise_scaling(rows, {"t": 0.99})
    assert set(summary) == {"pvqae", "static_vq"} and summary["pvqae"]["full_schedule_hours"] > 0


# --- the script -------------------------------------------------------------------------------

def test_gpu_study_tiny_script(tmp_path):
    """``scripts/gpu_study.sh --tiny`` on the CPU: prepare, pack, unpack, calibrate, train
    PVQAE and the static VQ to a wall-clock budget, score; the accuracy JSON and its log."""
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "PVQAE_DEVICE": "cpu",
           "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_study.sh"), "--tiny"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rec = json.loads((tmp_path / "accuracy_synthetic_tiny_budgeted.json").read_text())
    assert (tmp_path / "accuracy_synthetic_tiny_budgeted.log").read_text().count("wrote") == 1
    assert rec["benchmark"] == "accuracy_budgeted" and rec["profile"] == "tiny"
    for m in ("pvqae", "static_vq"):
        assert 0.0 <= rec[m]["mean"]["image_auroc"] <= 1.0 and 0.0 <= rec[m]["mean"]["pixel_auroc"] <= 1.0
        assert rec[m]["inference_images_per_second"] > 0
    plan = rec["plan"]
    assert min(plan[k] for k in ("pvqae_pretrain", "pvqae_budget", "static_vq", "prior")) >= 1
    assert rec["pvqae"]["steps"] == {"pvqae_pretrain": plan["pvqae_pretrain"], "pvqae": plan["pvqae_budget"]}
    assert rec["precision"] == {"autocast": "none", "tf32": False} and rec["gpu"] is None
    assert rec["full_schedule_estimate"]["hours"]["pvqae"] > 0
    assert set(rec["rates_steps_per_second"]) == {"pvqae_pretrain", "pvqae_budget", "static_vq", "prior"}
    from pvqae.benchmark import accuracy_table, budgeted_table

    assert "| synthetic | tiny | 32 px | CPU |" in budgeted_table(tmp_path)
    assert "synthetic" not in accuracy_table(tmp_path)  # the pipeline's accuracy table skips budgeted runs

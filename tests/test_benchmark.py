"""The speed/size benchmark records what the issue asks for, with sane values."""

from __future__ import annotations

import json

from pvqae import benchmark


def test_patchcore_bank_size_from_the_architecture():
    b = benchmark.patchcore_bank_mb(761, 256, coreset_ratio=0.1)
    assert b["positions_per_image"] == 32 * 32
    assert abs(b["full_mb"] - 761 * 1024 * 1024 * 4 / 1e6) < 1e-6
    assert abs(b["coreset_mb"] - b["full_mb"] / 10) < 1e-9


def test_tiny_benchmark_writes_every_field(tmp_path):
    res = benchmark.run("tiny", batch_size=2, repeats=1, n_train=10)
    path = benchmark.write(res, tmp_path)
    data = json.loads(path.read_text())
    for key in ("machine", "profile", "seed", "wall_seconds", "image_size", "inference_images_per_second",
                "inference_peak_rss_mb", "train_images_per_second", "model_mb", "prior_mb", "patchcore_wrn50_bank"):
        assert key in data, key
    assert data["profile"] == "tiny" and data["image_size"] == 32
    assert data["inference_images_per_second"] > 0 and data["train_images_per_second"] > 0
    assert 0 < data["model_mb"] < 10 and data["model_mb"] == benchmark.state_dict_mb(
        benchmark.PVQAE(benchmark.pipeline.model_config(benchmark.profile_params(["tiny"])["model"],
                                                       benchmark.profile_params(["tiny"])["data"])))

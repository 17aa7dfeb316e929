"""Speed and size of the model a profile defines (``python -m pvqae benchmark --profile paper``):
``reports/benchmarks/speed_size_<profile>_<size>px.json``.

Weights do not matter for speed or size, so the model is freshly initialised and no data is
needed. Measured:

- inference images/s of the full defect score (routing, prior with every position masked,
  reconstruction with the prior budget; Sec. III-C2), batched, and the process's peak
  resident memory;
- training images/s of one budget-learning step (routing, budget loss, VQ-GAN losses);
- the size of PVQAE + Budget Prior Transformer in MB (float32 state dicts);
- for comparison, the size of a PatchCore memory bank for the same training set, computed
  from the architecture: WideResNet-50-2 layer2 + layer3 features at stride 8, aggregated and
  projected to 1024 dims (PatchCore's default), one float32 vector per stride-8 position per
  training image, before and after coreset subsampling;
- inference images/s and deployed size of the feature-based baselines on the params' backbone.
"""

from __future__ import annotations

import copy
import math
import resource
import statistics
import time
from pathlib import Path

import torch

from pvqae.baselines.patchcore import PatchCore, coreset_size
from pvqae.config import deep_merge, load_params, load_yaml, profile_path
from pvqae.model import PVQAE
from pvqae.objective import PVQAELoss
from pvqae.prior import BudgetPriorTransformer
from pvqae.records import machine_info
from pvqae.scoring import score_batch
from pvqae.settings import DataConfig, Params


def state_dict_mb(module: torch.nn.Module) -> float:
    """Bytes of a module's parameters and buffers, in MB (1e6 bytes)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values()) / 1e6


def profile_params(names: list[str]) -> dict:
    """params.yaml with profile overlays applied in memory (params.yaml is not touched)."""
    params = load_params()
    for n in names:
        params = deep_merge(params, load_yaml(profile_path(n)))
    return params


def resize_profile(data: dict, model: dict, image_size: int) -> tuple[dict, dict]:
    """The profile's model at another image size with the same coarse patch grid (the
    paper's 8 x 8): one encoder level more per doubling, repeating the last channel
    multiplier (fewer levels when smaller). Keeps the prior's sequence length, whose
    predict-all cost grows with the cube of the grid's area."""
    grid = DataConfig.from_dict(data).coarse_grid
    levels = (image_size // grid).bit_length()  # 2^(levels-1) = image_size / grid
    if image_size % grid or 2 ** (levels - 1) != image_size // grid:
        raise ValueError(f"image size {image_size} is not the coarse grid {grid} times a power of two")
    mult = list(model["ch_mult"])
    mult = mult[:levels] if levels <= len(mult) else mult + [mult[-1]] * (levels - len(mult))
    return {**data, "image_size": image_size, "patch_size": image_size // grid}, {**model, "ch_mult": mult}


def _timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call (robust to a stray slow call)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _reset_peak_rss() -> None:
    """Reset the process's peak resident memory (Linux ``VmHWM``) to its current resident memory,
    so the next :func:`_peak_rss_mb` is the peak of what runs in between, not of earlier work in
    the same process (another profile, a training step). A no-op where /proc is missing."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    """Peak resident memory in MB since the last :func:`_reset_peak_rss` (Linux ``VmHWM``); the
    process's lifetime peak (``ru_maxrss``) where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e3  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # Linux: kB


def run(profile: str, batch_sizes: tuple[int, ...] = (2, 4, 8), repeats: int = 5, n_train: int = 761,
        num_classes: int = 1, image_size: int | None = None, seed: int = 0, train_batch_size: int = 8) -> dict:
    """Benchmark the model of ``profile`` (``n_train`` default: MTSD's published train split).

    Inference is timed at each of ``batch_sizes`` (ascending) and the fastest is the headline;
    every size's figure is kept. Several sizes are timed because which is fastest depends on the
    machine and its load (whether a batch's activations fit the cache). The peak resident memory
    of each batch size is its own (the peak is reset before each)."""
    torch.manual_seed(seed)
    params = profile_params([profile])
    data, model_params = dict(params["data"]), dict(params["model"])
    if image_size:
        data, model_params = resize_profile(data, model_params, image_size)
    typed = Params.from_dict({**params, "data": data, "model": model_params})
    cfg = typed.model_config()
    model = PVQAE(cfg).eval()
    prior = BudgetPriorTransformer.from_config(typed.prior.replace(mode="per-class", dropout=0.0), grid=cfg.grids[0],
                                               num_classes=num_classes).eval()
    t0 = time.perf_counter()
    by_batch, rss_by_batch = {}, {}
    for bs in sorted(set(batch_sizes)):
        xb = torch.rand(bs, cfg.in_channels, cfg.image_size, cfg.image_size)
        cls = torch.zeros(bs, dtype=torch.long)
        _reset_peak_rss()
        by_batch[bs] = bs / _timed(lambda: score_batch(model, xb, cls, prior), repeats)
        rss_by_batch[bs] = _peak_rss_mb()
    best = max(by_batch, key=by_batch.get)

    x = torch.rand(train_batch_size, cfg.in_channels, cfg.image_size, cfg.image_size)
    # one budget-learning step at full lambda: the training objective, discriminator step included
    loss_fn = PVQAELoss.from_config(typed.pretrain.for_budget(typed.budget), in_channels=cfg.in_channels,
                                    budget=typed.budget)
    at = typed.budget.steps - 1
    train_model = PVQAE(cfg).train()
    opt = torch.optim.Adam(train_model.parameters(), lr=1e-4)
    opt_d = torch.optim.Adam(loss_fn.discriminator.parameters(), lr=1e-4) if loss_fn.discriminator else None
    ent = torch.rand(train_batch_size, cfg.grids[0], cfg.grids[0])

    def step():
        out = train_model(x, mode="dynamic")
        loss, _ = loss_fn(x, out, step=at, entropy=ent, last_layer=train_model.last_layer)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss_fn.adversarial(at):
            d_loss, _ = loss_fn(x, out, step=at, optimizer_idx=1)
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()

    train = _timed(step, max(1, repeats - 1))
    baselines = baseline_speed(params, cfg.image_size, cfg.in_channels, n_train, batch_size=best,
                               repeats=max(1, repeats - 2), seed=seed)
    return {
        "benchmark": "speed_size", "profile": profile, "machine": machine_info(), "seed": seed,
        "image_size": cfg.image_size, "grids": list(cfg.grids), "ch_mult": list(cfg.ch_mult), "ch": cfg.ch,
        "batch_size": best, "inference_images_per_second": by_batch[best],
        "inference_peak_rss_mb": rss_by_batch[best],
        "inference_images_per_second_by_batch_size": {str(b): v for b, v in by_batch.items()},
        "peak_rss_mb_by_batch_size": {str(b): v for b, v in rss_by_batch.items()},
        "train_batch_size": train_batch_size, "train_images_per_second": train_batch_size / train,
        "model_mb": state_dict_mb(model), "prior_mb": state_dict_mb(prior),
        "model_parameters": sum(q.numel() for q in model.parameters()),
        "patchcore_wrn50_bank": PatchCore.memory_bank_mb(n_train, cfg.image_size),
        "baselines": baselines,
        "wall_seconds": time.perf_counter() - t0,
        "note": "random weights: speed and size do not depend on them; threads = torch default",
    }


def baseline_speed(params: dict, image_size: int, channels: int, n_train: int, batch_size: int = 8,
                   repeats: int = 3, seed: int = 0) -> dict:
    """Inference images/s (batch ``batch_size``, median of ``repeats`` calls, the backbone
    included) and size of the feature-based baselines on the params' backbone at
    ``image_size``: PatchCore and Patch AE with memory banks of the size ``n_train`` training
    images give (filled with random vectors: speed does not depend on the values), PaDiM and
    VQ-Flow as built. Size = the float32 state a deployment keeps: PatchCore's bank, PaDiM's
    Gaussians, Patch AE's trained layers + bank, VQ-Flow's trained layers (backbone not counted)."""
    from pvqae.backbones import load_backbone
    from pvqae.baselines import harness

    bp = params["baselines"]
    backbone, status = load_backbone(bp["backbone"], bp.get("backbone_weights"))
    if backbone is None:
        return {"status": status}
    torch.manual_seed(seed)
    x = torch.rand(batch_size, channels, image_size, image_size)
    data = {"image_size": image_size, "channels": channels}
    out = {"backbone": bp["backbone"], "batch_size": batch_size}
    for m in ("patchcore", "padim", "patch_ae", "vq_flow"):
        model = harness.build(m, bp, data, seed, backbone).eval()
        if m == "patchcore":
            positions = math.ceil(image_size / model.strides[0]) ** 2
            bank = coreset_size(n_train * positions, model.coreset_ratio)
            model.memory_bank = torch.randn(bank, model.memory_bank.shape[1])
        elif m == "padim":
            model.fit(torch.rand(4, channels, image_size, image_size), progress=False)
        elif m == "patch_ae":
            positions = math.ceil(image_size / model.patch) ** 2
            model.memory_bank = torch.randn(coreset_size(n_train * positions, model.cfg.coreset_ratio),
                                            model.bank_dim)
        with torch.no_grad():
            secs = _timed(lambda: model(x), repeats)
        kept = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
        out[m] = {"inference_images_per_second": batch_size / secs,
                  "mb": sum(t.numel() * t.element_size() for t in kept.values()) / 1e6}
        if m == "patch_ae":  # the bank's space sets its width (encoder 128-d, backbone 152-d for Lite0)
            out[m].update(bank_features=model.cfg.bank_features, bank_dim=model.bank_dim)
    out["pvqae_f"] = pvqae_f_speed(params, backbone, x, repeats)
    return out


def pvqae_f_speed(params: dict, backbone, x: torch.Tensor, repeats: int = 3) -> dict:
    """PVQAE-F (``input`` section, random weights) on ``backbone``: images/s of the whole score
    (backbone features, standardisation, PVQAE with the per-class prior, upsampling to the
    image, post-processing) on the batch ``x``, and the MB of autoencoder + prior."""
    from pvqae.backbones import concat_aligned

    p = copy.deepcopy(params)
    p["input"]["kind"] = "features"
    p["data"] = {**p["data"], "image_size": x.shape[-1]}
    typed = Params.from_dict(p)
    strides = typed.input.strides
    channels = sum(backbone.endpoints[s] for s in strides)
    grid = -(-x.shape[-1] // strides[0])
    cfg = typed.model_config(input_shape=(channels, grid))
    model = PVQAE(cfg).eval()
    prior = BudgetPriorTransformer.from_config(typed.prior.replace(mode="per-class", dropout=0.0), grid=cfg.grids[0],
                                               num_classes=1).eval()
    mean, std = torch.zeros(1, channels, 1, 1), torch.ones(1, channels, 1, 1)
    cls = torch.zeros(len(x), dtype=torch.long)

    def score():
        feats = (concat_aligned(backbone.features(x, strides), strides) - mean) / std
        return score_batch(model, feats, cls, prior, out_size=x.shape[-1])

    with torch.no_grad():
        secs = _timed(score, repeats)
    return {"inference_images_per_second": len(x) / secs, "mb": state_dict_mb(model) + state_dict_mb(prior),
            "grids": list(cfg.grids), "channels": channels}

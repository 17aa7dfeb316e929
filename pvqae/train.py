"""Training loops: VQ-GAN pre-training, progressive budget learning (paper Sec. III-A, III-B)
and Budget Prior Transformer learning (Sec. III-C1).

The autoencoder objective (Sec. III-B2, "overall training objective") is

    L = L_rec + L_vq + w_gan * L_gan + lambda(t) * L_budget,

with L_rec = l1 * |x - x^| + l2 * (x - x^)^2 + ssim * (1 - SSIM(x, x^)) (LPIPS needs a
pretrained VGG, which we cannot download: SSIM stands in; README "method decisions"),
w_gan the VQ-GAN adaptive weight (0 before ``disc_start``) and lambda(t) the budget
schedule (0 during pre-training).

Every loop is step-based, deterministic for a seed on CPU (data order, augmentation,
Gumbel noise and random routing are drawn from generators seeded by (seed, step/epoch)),
checkpoints atomically every ``ckpt_every`` steps into a resume folder keyed by a
fingerprint of its configuration, and resumes from there after an interruption
(:class:`ResumableRun`, shared with the AE-SSIM baseline in :mod:`pvqae.baselines.ae_ssim`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from pvqae import budget as budget_mod
from pvqae import distributed
from pvqae.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from pvqae.errors import PVQAEError
from pvqae.losses import (
    PatchGANDiscriminator,
    adaptive_gan_weight,
    check_finite,
    disc_factor,
    generator_adv_loss,
    hinge_d_loss,
    ssim,
)
from pvqae.model import LEVEL_NAMES, PVQAE, ModelConfig
from pvqae.paths import REPO_ROOT
from pvqae.prior import BudgetPriorTransformer

RESUME_ROOT = Path(os.environ.get("PVQAE_RESUME_ROOT", REPO_ROOT / ".resume"))  # env: tests, shared disks


@dataclass
class TrainConfig:
    """Optimisation settings of one autoencoder training stage (params.yaml sections
    ``pretrain`` / ``budget``)."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 2e-4
    router_lr: float = 0.0  # learning rate of the routing MLP; 0 = same as lr
    betas: tuple[float, float] = (0.5, 0.9)
    grad_clip: float = 1.0
    l1_weight: float = 1.0
    l2_weight: float = 0.0
    ssim_weight: float = 0.2
    vq_weight: float = 1.0
    disc_weight: float = 0.0  # 0 disables the adversarial term
    disc_start: int = 0
    disc_ch: int = 32
    disc_layers: int = 3
    routing: str = "random"  # "random" (pre-training), "dynamic" (budget learning)
    augment_jitter: float = 0.1
    lambda_max: float = 0.0
    lambda_schedule: str = "linear"
    lambda_warmup: int = 0
    budget_factor: float = 4.0
    budget_eps: float = 0.1
    budget_scale: float = 1.0  # multiplies every cost (the paper gives no cost magnitude)
    budget_reduction: str = "mean"
    tau: float = 1.0
    tau_min: float = 1.0  # exponential annealing tau -> tau_min over the stage; = tau disables
    ckpt_every: int = 200
    log_every: int = 20

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "betas" in known:
            known["betas"] = tuple(known["betas"])
        return cls(**known)

    def tau_at(self, step: int) -> float:
        if self.tau_min >= self.tau or self.steps <= 1:
            return self.tau
        return self.tau * (self.tau_min / self.tau) ** (step / (self.steps - 1))


def fingerprint(*objs) -> str:
    """Short hash of JSON-serialisable configuration (keys sorted)."""
    blob = json.dumps(objs, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class BatchStream:
    """Deterministic, resumable stream of mini-batches from in-memory tensors.

    Epoch e uses the permutation drawn from ``Generator(seed * 1_000_003 + e)``; the batch at
    global step s is therefore a pure function of (seed, s), so a resumed run sees exactly
    the batches the uninterrupted run would have seen. The last incomplete batch of an
    epoch is dropped. ``augment`` is called as ``augment(batch, generator)``.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], batch_size: int, seed: int,
                 augment: Callable[[dict, torch.Generator], dict] | None = None):
        self.tensors = tensors
        self.n = next(iter(tensors.values())).shape[0]
        if self.n == 0:
            raise ValueError("no training images")
        self.batch_size = min(batch_size, self.n)
        self.per_epoch = self.n // self.batch_size
        self.seed = seed
        self.augment = augment

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        epoch, pos = divmod(step, self.per_epoch)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        idx = perm[pos * self.batch_size:(pos + 1) * self.batch_size]
        b = {k: v[idx] for k, v in self.tensors.items()}
        if self.augment is not None:
            b = self.augment(b, torch.Generator().manual_seed(self.seed * 7_000_001 + step))
        return b


def flip_augment(b: dict, g: torch.Generator, jitter: float = 0.1) -> dict:
    """Random horizontal flip (image, and the entropy map with it) + brightness/contrast
    jitter of +-``jitter`` (paper Sec. IV-A: "augmented with random flipping and
    color-jittering")."""
    x = b["image"]
    n = x.shape[0]
    flip = torch.rand(n, generator=g) < 0.5
    out = dict(b)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if jitter > 0:
        bright = 1 + (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * jitter
        contrast = 1 + (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * jitter
        mean = x.mean((1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean * bright).clamp(0, 1)
    out["image"] = x
    if "entropy" in b:
        out["entropy"] = torch.where(flip[:, None, None], b["entropy"].flip(-1), b["entropy"])
    return out


def reconstruction_loss(x: torch.Tensor, recon: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """L_rec = l1 |x - x^| + l2 (x - x^)^2 + ssim (1 - SSIM)."""
    loss = x.new_zeros(())
    if cfg.l1_weight:
        loss = loss + cfg.l1_weight * (x - recon).abs().mean()
    if cfg.l2_weight:
        loss = loss + cfg.l2_weight * (x - recon).pow(2).mean()
    if cfg.ssim_weight:
        loss = loss + cfg.ssim_weight * (1 - ssim(recon, x, data_range=1.0))
    return loss


class _CsvLog:
    def __init__(self, path: Path, resume_from: int):
        self.path = path
        self.rows: list[dict] = []
        if path.exists() and resume_from > 0:
            with open(path) as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) < resume_from]

    def add(self, row: dict) -> None:
        self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    def write(self) -> None:
        if not self.rows:
            return
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, keys)
            w.writeheader()
            w.writerows(self.rows)
        tmp.replace(self.path)


class ResumableRun:
    """Checkpoint, resume and logging machinery of a step-based training loop.

    Shared by :func:`train_autoencoder` and the AE-SSIM baseline
    (:func:`pvqae.baselines.ae_ssim.train_ae_ssim`) so that both loops resume the same way:

    - the resume folder is ``RESUME_ROOT/<name>-<fingerprint(*key)>``: a run with another
      configuration (``key``: name, seed, configs, ...) never resumes from this one;
    - on construction, ``<resume folder>/last.pt`` (if any) is loaded into the objects of
      ``state`` (``{"model": model, "opt": optimizer, ...}``, anything with
      ``state_dict``/``load_state_dict``), the global RNG states are restored and
      :attr:`start` is the step to continue from (0 for a fresh run). A ``last.pt`` that
      cannot be read (truncated, corrupt) is set aside as ``last.pt.corrupt`` with a warning
      and the previous checkpoint ``prev.pt`` is used, else the run starts afresh: a bad file
      never stops every later run (the same seed gives the same weights either way);
    - :meth:`steps` is the tqdm-wrapped range of steps still to run and starts the clock;
    - :meth:`step_done` saves ``last.pt`` (the ``state`` objects, step, RNG states and
      training seconds so far) and flushes the CSV log every ``ckpt_every`` steps;
    - :meth:`finish` writes ``out_dir/<name>.pt`` atomically, ``<name>_log.csv`` and
      ``<name>_summary.json``, removes the resume folder and returns the summary.

    Under torchrun (:mod:`pvqae.distributed`) only rank 0 writes files; the other ranks
    wait at the same barriers. Load the checkpoint (construct the run) *before* wrapping
    the model in DDP, which then broadcasts rank 0's weights.
    """

    def __init__(self, name: str, out_dir: Path, key: tuple, state: dict, steps: int, ckpt_every: int):
        distributed.init_from_env()
        self.name = name
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.resume_dir = RESUME_ROOT / f"{name}-{fingerprint(*key)}"
        self.resume_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = self.resume_dir / "last.pt"
        self.prev_path = self.resume_dir / "prev.pt"
        self.state = state
        self.total_steps = steps
        self.ckpt_every = ckpt_every
        self.start = 0
        self.elapsed = 0.0
        st, path = self._readable_checkpoint()
        if st is not None:
            for k, obj in state.items():
                obj.load_state_dict(st[k])
            set_rng_state(st["rng"])
            self.start = int(st["step"])
            self.elapsed = float(st.get("elapsed", 0.0))
            print(f"[{name}] resuming from step {self.start} ({path})")
        self.log = _CsvLog(self.out_dir / f"{name}_log.csv", self.start)
        self._t0 = time.perf_counter()

    def _readable_checkpoint(self) -> tuple[dict | None, Path | None]:
        """The newest readable of ``last.pt`` and ``prev.pt`` (unreadable ones set aside with a
        warning), or ``(None, None)``."""
        for tmp in self.resume_dir.glob(".*.tmp"):  # a save killed before its rename
            tmp.unlink(missing_ok=True)
        for path in (self.ckpt_path, self.prev_path):
            if not path.exists():
                continue
            try:
                st = load_checkpoint(path)
                if not {"step", "rng", *self.state} <= set(st):
                    raise PVQAEError(f"checkpoint {path} lacks {sorted({'step', 'rng', *self.state} - set(st))}")
                return st, path
            except PVQAEError as e:
                if distributed.is_main():
                    path.replace(path.with_name(path.name + ".corrupt"))
                print(f"[{self.name}] WARNING: {e} Set aside as {path.name}.corrupt; trying the previous checkpoint.")
        return None, None

    def steps(self, progress: bool = True) -> tqdm:
        """Progress bar over the steps still to run (``start .. steps - 1``); starts the clock."""
        bar = tqdm(range(self.start, self.total_steps), desc=self.name, disable=not progress, mininterval=5)
        self._t0 = time.perf_counter()
        return bar

    def _tick(self) -> None:
        now = time.perf_counter()
        self.elapsed += now - self._t0
        self._t0 = now

    def step_done(self, step: int) -> None:
        """Call after step ``step``: checkpoints every ``ckpt_every`` steps (not after the last)."""
        if (step + 1) % self.ckpt_every == 0 and step + 1 < self.total_steps:
            self._tick()
            self.save(step + 1)

    def save(self, next_step: int) -> None:
        """Write ``last.pt`` (resume at ``next_step``) and flush the log (rank 0 only)."""
        if not distributed.is_main():
            distributed.barrier()
            return
        st = {k: obj.state_dict() for k, obj in self.state.items()}
        st.update(step=next_step, rng=rng_state(), elapsed=self.elapsed)
        if self.ckpt_path.exists():  # keep one previous checkpoint: a kill at any point leaves one whole file
            self.ckpt_path.replace(self.prev_path)
        save_checkpoint(self.ckpt_path, st)
        self.log.write()
        distributed.barrier()

    def finish(self, final: dict, images_per_step: int, extra: dict | None = None) -> dict:
        """Stop the clock, write the final checkpoint ``final`` to ``out_dir/<name>.pt``, the log
        and the summary, and remove the resume folder (rank 0); return the summary (every rank).

        The summary holds name, steps, resumed_from, train_seconds, train_images_per_second
        (``images_per_step`` images per step over the steps run by this call), the last logged
        row (``final``), the entries of ``extra`` and the number of processes."""
        self._tick()
        run_steps = self.total_steps - self.start
        summary = {
            "name": self.name, "steps": self.total_steps, "resumed_from": self.start,
            "train_seconds": self.elapsed,
            "train_images_per_second": (run_steps * images_per_step / self.elapsed)
            if self.elapsed > 0 and run_steps > 0 else None,
            "final": {k: v for k, v in (self.log.rows[-1].items() if self.log.rows else {}) if k != "step"},
            **(extra or {}),
            "processes": distributed.world_size(),
        }
        if not distributed.is_main():
            distributed.barrier()
            return summary
        self.log.write()
        save_checkpoint(self.out_dir / f"{self.name}.pt", final)
        shutil.rmtree(self.resume_dir, ignore_errors=True)
        with open(self.out_dir / f"{self.name}_summary.json", "w") as f:
            json.dump(summary, f, indent=2)
        distributed.barrier()
        return summary


def train_autoencoder(
    model: PVQAE,
    stream: BatchStream,
    cfg: TrainConfig,
    out_dir: Path,
    name: str,
    seed: int,
    fingerprint_extra: object = None,
    progress: bool = True,
    disc_state: dict | None = None,
) -> dict:
    """Train ``model`` for ``cfg.steps`` steps; write ``out_dir/<name>.pt`` and ``<name>_log.csv``.

    Resumes from ``.resume/<name>-<fingerprint>/last.pt`` when an earlier run with the same
    configuration was interrupted (:class:`ResumableRun`). ``disc_state`` initialises the
    discriminator (budget learning continues with the pre-trained one). Returns a summary dict
    (steps, seconds, images/s, final losses, code usage).
    """
    use_gan = cfg.disc_weight > 0
    disc = PatchGANDiscriminator(model.cfg.in_channels, cfg.disc_ch, cfg.disc_layers, norm="group") if use_gan else None
    if disc is not None and disc_state is not None:
        disc.load_state_dict(disc_state)
    with distributed.on_device(model, disc) as dev:  # the GPU when there is one; back on the CPU after
        return _train_autoencoder(model, disc, dev, stream, cfg, out_dir, name, seed, fingerprint_extra, progress)


def _train_autoencoder(model: PVQAE, disc: PatchGANDiscriminator | None, dev: torch.device, stream: BatchStream,
                       cfg: TrainConfig, out_dir: Path, name: str, seed: int, fingerprint_extra: object,
                       progress: bool) -> dict:
    """The loop of :func:`train_autoencoder`, with ``model`` and ``disc`` on ``dev``."""
    params = model.generator_parameters()
    groups = [{"params": params}]
    if cfg.routing == "dynamic" and model.router is not None:
        router = list(model.router.parameters())
        groups.append({"params": router, "lr": cfg.router_lr or cfg.lr})
        params = params + router
    opt = torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=cfg.betas) if disc is not None else None

    state = {"model": model, "opt": opt}
    if disc is not None:
        state.update(disc=disc, opt_d=opt_d)
    run = ResumableRun(name, out_dir, key=(name, seed, asdict(cfg), model.cfg.to_dict(), fingerprint_extra),
                       state=state, steps=cfg.steps, ckpt_every=cfg.ckpt_every)
    net = distributed.wrap(model, find_unused_parameters=model.dynamic)  # DDP under torchrun, else the model
    disc_net = distributed.wrap(disc) if disc is not None else None

    model.train()
    bar = run.steps(progress)
    for step in bar:
        b = {k: v.to(dev) for k, v in distributed.shard(stream.batch(step)).items()}
        x = b["image"]
        gen = torch.Generator().manual_seed(seed * 9_000_011 + step)
        out = net(x, mode=cfg.routing, tau=cfg.tau_at(step), generator=gen) if model.dynamic else net(x)
        rec = reconstruction_loss(x, out.recon, cfg)
        loss = rec + cfg.vq_weight * out.vq_loss
        row: dict = {"step": step, "rec": rec.item(), "vq": out.vq_loss.item()}
        if cfg.lambda_max > 0 and out.routing is not None:
            lam = budget_mod.lambda_schedule(step, cfg.steps, cfg.lambda_max, cfg.lambda_schedule, cfg.lambda_warmup)
            costs = cfg.budget_scale * budget_mod.level_costs(b["entropy"], 3, cfg.budget_factor,
                                                              cfg.budget_eps).permute(0, 3, 1, 2)
            bl = budget_mod.budget_loss(out.routing.gate, costs, cfg.budget_reduction)
            loss = loss + lam * bl
            row.update(lam=lam, budget=bl.item())
        if disc is not None and step >= cfg.disc_start:
            g_loss = generator_adv_loss(disc(out.recon))
            w = adaptive_gan_weight(rec, g_loss, model.last_layer) * cfg.disc_weight * disc_factor(step, cfg.disc_start)
            loss = loss + w * g_loss
            row.update(g=g_loss.item(), gw=float(w))
        check_finite("total loss", loss, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if disc is not None and step >= cfg.disc_start:
            d_loss = hinge_d_loss(*disc_net(torch.cat([x, out.recon.detach()])).chunk(2))
            check_finite("discriminator loss", d_loss, step)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            row["d"] = d_loss.item()
        if out.routing is not None:
            for k, lvl in enumerate(LEVEL_NAMES):
                row[f"frac_{lvl}"] = float(out.used_fraction[k])
        for lvl, ppl in zip(model.levels, out.perplexity):  # code usage: perplexity of the used codes
            row[f"ppl_{LEVEL_NAMES[lvl]}"] = float(ppl)
        row["loss"] = loss.item()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            run.log.add(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", rec=f"{row['rec']:.4f}")
        run.step_done(step)
    final = {"model": _cpu(model.state_dict()), "config": model.cfg.to_dict(), "train": asdict(cfg),
             "steps": cfg.steps, "seed": seed}
    if disc is not None:
        final["disc"] = _cpu(disc.state_dict())
    return run.finish(final, images_per_step=stream.batch_size,
                      extra={"codes_in_use": [q.codes_in_use() for q in model.quantizers]})


def _cpu(state: dict) -> dict:
    return {k: v.cpu() for k, v in state.items()}


def load_model(path: Path) -> PVQAE:
    """Load a model written by :func:`train_autoencoder` (``weights_only=True``)."""
    st = load_checkpoint(path)
    model = PVQAE(ModelConfig.from_dict(st["config"]))
    model.load_state_dict(st["model"])
    return model.eval()


@torch.no_grad()
def routed_levels(model: PVQAE, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Noise-free routed level maps (N, G, G) of ``images`` (eval mode)."""
    model.eval()
    with distributed.on_device(model) as dev:
        outs = [model(images[i:i + batch_size].to(dev), mode="dynamic").routing.levels.cpu()
                for i in range(0, len(images), batch_size)]
    return torch.cat(outs)


@dataclass
class PriorConfig:
    """Budget Prior Transformer settings (params.yaml section ``prior``)."""

    mode: str = "per-class"  # "per-class", "universal" or "none"
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    dim: int = 64
    heads: int = 4
    dropout: float = 0.1
    max_mask_ratio: float = 0.5
    ckpt_every: int = 500

    @classmethod
    def from_dict(cls, d: dict) -> "PriorConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def train_prior(levels: torch.Tensor, class_index: torch.Tensor, num_classes: int, cfg: PriorConfig,
                out_path: Path, seed: int, progress: bool = True) -> tuple[BudgetPriorTransformer | None, dict]:
    """Train the Budget Prior Transformer on routed level maps of normal training images
    (autoencoder frozen; masked-token cross-entropy, Sec. III-C1). ``mode == "none"`` trains
    nothing and returns (None, summary)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if cfg.mode == "none":
        save_checkpoint(out_path, {"mode": "none"})
        return None, {"mode": "none"}
    torch.manual_seed(seed)
    grid = levels.shape[-1]
    prior = BudgetPriorTransformer(num_levels=3, grid=grid, dim=cfg.dim, heads=cfg.heads, dropout=cfg.dropout,
                                   prior=cfg.mode, num_classes=num_classes)
    opt = torch.optim.AdamW(prior.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    stream = BatchStream({"levels": levels, "cls": class_index}, cfg.batch_size, seed)
    prior.train()
    t0 = time.perf_counter()
    hist = []
    for step in tqdm(range(cfg.steps), desc=f"prior[{cfg.mode}]", disable=not progress, mininterval=5):
        b = stream.batch(step)
        g = torch.Generator().manual_seed(seed * 5_000_011 + step)
        res = prior.masked_loss(b["levels"], b["cls"], max_mask_ratio=cfg.max_mask_ratio, generator=g)
        check_finite("prior loss", res.loss, step)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            hist.append({"step": step, "loss": res.loss.item(), "acc": float(res.accuracy)})
    prior.eval()
    probs = prior.predict_all(levels, class_index)
    acc = float((probs.argmax(1) == levels).float().mean())
    state = {"mode": cfg.mode, "model": prior.state_dict(), "grid": grid, "num_classes": num_classes,
             "config": asdict(cfg)}
    save_checkpoint(out_path, state)
    summary = {"mode": cfg.mode, "steps": cfg.steps, "train_seconds": time.perf_counter() - t0,
               "train_accuracy_all_positions": acc, "history": hist,
               "parameters": sum(p.numel() for p in prior.parameters())}
    return prior, summary


def load_prior(path: Path) -> BudgetPriorTransformer | None:
    """Load a prior written by :func:`train_prior` (None for mode "none")."""
    st = load_checkpoint(path)
    if st["mode"] == "none":
        return None
    c = PriorConfig.from_dict(st["config"])
    prior = BudgetPriorTransformer(num_levels=3, grid=st["grid"], dim=c.dim, heads=c.heads, dropout=c.dropout,
                                   prior=st["mode"], num_classes=st["num_classes"])
    prior.load_state_dict(st["model"])
    return prior.eval()

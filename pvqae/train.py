"""Training loops: VQ-GAN pre-training and progressive budget learning of the autoencoder
(paper Sec. III-A, III-B) and Budget Prior Transformer learning (Sec. III-C1).

The objective is :class:`pvqae.objective.PVQAELoss`; batches come from
:class:`pvqae.batches.BatchStream`, checkpoints and resuming from
:class:`pvqae.resumable.ResumableRun`. Every random draw (data order, augmentation, Gumbel
noise, random routing, prior masks) comes from a named stream of :mod:`pvqae.seeds`, so a
seed gives the same weights on CPU, resumed or not.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pvqae import distributed, seeds
from pvqae.batches import BatchStream, feature_jitter
from pvqae.checkpoint import save_checkpoint
from pvqae.losses import check_finite
from pvqae.model import LEVEL_NAMES, PVQAE
from pvqae.objective import PVQAELoss
from pvqae.prior import BudgetPriorTransformer, PriorConfig
from pvqae.resumable import ResumableRun
from pvqae.settings import BudgetConfig, PretrainConfig


def train_autoencoder(model: PVQAE, stream: BatchStream, cfg: PretrainConfig, out_dir: Path, name: str, seed: int,
                      *, budget: BudgetConfig | None = None, fingerprint_extra: object = None, progress: bool = True,
                      disc_state: dict | None = None, deadline: float | None = None) -> dict:
    """Train ``model`` for ``cfg.steps`` steps; write ``out_dir/<name>.pt``, ``<name>_log.csv``
    and ``<name>_summary.json``.

    ``cfg`` holds the autoencoder's optimisation and loss settings (for budget learning
    :meth:`PretrainConfig.for_budget`); ``budget`` adds the router's learning rate, the Gumbel
    temperature schedule and the budget loss. ``disc_state`` initialises the discriminator
    (budget learning continues with the pre-trained one). Resumes an interrupted run of the
    same configuration. ``deadline`` (a :func:`time.perf_counter` value) stops the loop early
    once passed: a wall-clock cap for time-budgeted runs (:mod:`pvqae.benchmark.budgeted`);
    the summary's ``steps`` then says how many ran. Returns a summary (steps, seconds,
    images/s, final losses, code usage).
    """
    loss_fn = PVQAELoss.from_config(cfg, in_channels=model.cfg.in_channels, budget=budget)
    if loss_fn.discriminator is not None and disc_state is not None:
        loss_fn.discriminator.load_state_dict(disc_state)
    with distributed.on_device(model, loss_fn) as dev:  # the GPU when there is one; back on the CPU after
        return _train_autoencoder(model, loss_fn, dev, stream, cfg, budget, out_dir, name, seed, fingerprint_extra,
                                  progress, deadline)


def _train_autoencoder(model: PVQAE, loss_fn: PVQAELoss, dev: torch.device, stream: BatchStream, cfg: PretrainConfig,
                       budget: BudgetConfig | None, out_dir: Path, name: str, seed: int, fingerprint_extra: object,
                       progress: bool, deadline: float | None) -> dict:
    """The loop of :func:`train_autoencoder`, with ``model`` and ``loss_fn`` on ``dev``."""
    disc = loss_fn.discriminator
    params = model.generator_parameters()
    groups = [{"params": params}]
    if cfg.routing == "dynamic" and model.router is not None:
        router = list(model.router.parameters())
        groups.append({"params": router, "lr": (budget.router_lr if budget else 0.0) or cfg.lr})
        params = params + router
    opt = torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=cfg.betas) if disc is not None else None

    state = {"model": model, "opt": opt}
    if disc is not None:
        state.update(disc=disc, opt_d=opt_d)
    key = (name, seed, cfg.to_dict(), budget.to_dict() if budget else None, model.cfg.to_dict(), fingerprint_extra)
    run = ResumableRun(name, out_dir, key=key, state=state, steps=cfg.steps, ckpt_every=cfg.ckpt_every)
    net = distributed.wrap(model, find_unused_parameters=model.dynamic)  # DDP under torchrun, else the model
    disc_net = distributed.wrap(disc) if disc is not None else None

    distributed.set_tf32(dev, cfg.tf32)
    model.train()
    done = run.start
    bar = run.steps(progress)
    for step in bar:
        if deadline is not None and time.perf_counter() > deadline:
            bar.close()
            print(f"[{name}] wall-clock budget spent after {step} of {cfg.steps} steps")
            break
        b = {k: v.to(dev) for k, v in distributed.shard(stream.batch(step)).items()}
        x = b["image"]
        x_in = feature_jitter(x, cfg.feature_jitter, seeds.generator("jitter", seed, step))  # x when off
        tau = budget.tau_at(step) if budget else 1.0
        with distributed.autocast(dev, cfg.autocast):
            out = net(x_in, mode=cfg.routing, tau=tau, generator=seeds.generator("routing", seed, step)) \
                if model.dynamic else net(x_in)
            loss, logs = loss_fn(x, out, step=step, entropy=b["entropy"], last_layer=model.last_layer)
        row: dict = {"step": step, **logs}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if loss_fn.adversarial(step):
            with distributed.autocast(dev, cfg.autocast):
                d_loss, d_logs = loss_fn(x, out, step=step, optimizer_idx=1, discriminator=disc_net)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            row.update(d_logs)
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
        done = step + 1
    final = {"model": _cpu(model.state_dict()), "config": model.cfg.to_dict(), "train": cfg.to_dict(),
             "budget": budget.to_dict() if budget else None, "steps": done, "seed": seed}
    if disc is not None:
        final["disc"] = _cpu(disc.state_dict())
    return run.finish(final, images_per_step=stream.batch_size, steps_done=done,
                      extra={"codes_in_use": [q.codes_in_use() for q in model.quantizers]})


def _cpu(state: dict) -> dict:
    return {k: v.cpu() for k, v in state.items()}


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
    prior = BudgetPriorTransformer.from_config(cfg, grid=grid, num_classes=num_classes)
    opt = torch.optim.AdamW(prior.parameters(), lr=cfg.lr, weight_decay=0.01)
    # one-cycle needs a warm-up and an anneal step; a time-budgeted plan (pvqae.benchmark.budgeted)
    # on a busy machine can leave fewer, which then train at the constant learning rate
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
             if cfg.steps >= 2 else None)
    stream = BatchStream({"levels": levels, "cls": class_index}, cfg.batch_size, seed)
    prior.train()
    t0 = time.perf_counter()
    hist = []
    for step in tqdm(range(cfg.steps), desc=f"prior[{cfg.mode}]", disable=not progress, mininterval=5):
        b = stream.batch(step)
        g = seeds.generator("prior_mask", seed, step)
        res = prior.masked_loss(b["levels"], b["cls"], max_mask_ratio=cfg.max_mask_ratio, generator=g)
        check_finite("prior loss", res.loss, step)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            hist.append({"step": step, "loss": res.loss.item(), "acc": float(res.accuracy)})
    prior.eval()
    probs = prior.predict_all(levels, class_index)
    acc = float((probs.argmax(1) == levels).float().mean())
    state = {"mode": cfg.mode, "model": prior.state_dict(), "grid": grid, "num_classes": num_classes,
             "config": cfg.to_dict()}
    save_checkpoint(out_path, state)
    summary = {"mode": cfg.mode, "steps": cfg.steps, "train_seconds": time.perf_counter() - t0,
               "train_accuracy_all_positions": acc, "history": hist,
               "parameters": sum(p.numel() for p in prior.parameters())}
    return prior, summary

"""A real training process for ``tests/test_faults.py``: PVQAE's autoencoder training
(``pvqae.train.train_autoencoder``, budget learning with dynamic routing) on a fixed tiny
dataset, resumable through ``PVQAE_RESUME_ROOT``.

``python _train_worker.py OUT STEPS CKPT_EVERY`` prints ``done <step>`` after every step. With
``WORKER_HOLD_SAVE=N`` the N-th checkpoint write stops after its data is written and synced
(before the rename that makes it ``last.pt``), prints ``holding save`` and waits to be killed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

SIZE = 32


def tiny_run(steps: int, ckpt_every: int):
    """(model, batch stream, config) of a tiny deterministic budget-learning run."""
    from pvqae.batches import BatchStream, flip_augment
    from pvqae.model import PVQAE, ModelConfig
    from pvqae.settings import BudgetConfig, PretrainConfig

    torch.manual_seed(0)
    model = PVQAE(ModelConfig(image_size=SIZE, ch=8, ch_mult=(1, 1, 2), embed_dim=8, num_codes=16, router_hidden=16,
                              groups=8, dead_after=2))
    g = torch.Generator().manual_seed(0)
    data = {"image": torch.rand(8, 3, SIZE, SIZE, generator=g), "entropy": torch.rand(8, 8, 8, generator=g)}
    budget = BudgetConfig(steps=steps, lr=1e-3, router_lr=0.0, disc_start=0, lambda_max=1.0, budget_scale=1.0,
                          tau=1.0, tau_min=0.5)
    cfg = PretrainConfig(batch_size=2, disc_weight=0.0, log_every=1, ckpt_every=ckpt_every).for_budget(budget)
    return model, BatchStream(data, 2, 0, augment=flip_augment), cfg, budget


def main(out: str, steps: str, ckpt_every: str) -> None:
    import pvqae.checkpoint as C
    import pvqae.resumable as resumable
    import pvqae.train as T

    torch.set_num_threads(1)
    hold = int(os.environ.get("WORKER_HOLD_SAVE", "0"))
    saves = 0
    fsync = C.os.fsync

    def fsync_then_maybe_hold(fd):  # save_checkpoint syncs the temporary file before its rename
        nonlocal saves
        fsync(fd)
        if os.path.isfile(f"/proc/self/fd/{fd}"):
            saves += 1
            if saves == hold:
                print("holding save", flush=True)
                time.sleep(600)

    C.os.fsync = fsync_then_maybe_hold
    step_done = resumable.ResumableRun.step_done

    def report(self, step):
        step_done(self, step)
        print(f"done {step}", flush=True)

    resumable.ResumableRun.step_done = report
    model, stream, cfg, budget = tiny_run(int(steps), int(ckpt_every))
    T.train_autoencoder(model, stream, cfg, Path(out), "ae", seed=0, budget=budget, progress=False)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main(*sys.argv[1:])

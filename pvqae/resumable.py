"""Checkpointing and resuming of step-based training loops (:class:`ResumableRun`).

An interrupted run continues from its last checkpoint with the same batches, noise and
weights as an uninterrupted one: the loop's objects, the step and the global RNG states are
saved atomically every ``ckpt_every`` steps into a folder keyed by a fingerprint of the
run's configuration, so a run with another configuration never resumes from it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from tqdm.auto import tqdm

from pvqae import distributed
from pvqae.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from pvqae.errors import PVQAEError
from pvqae.paths import REPO_ROOT

RESUME_ROOT = Path(os.environ.get("PVQAE_RESUME_ROOT", REPO_ROOT / ".resume"))  # env: tests, shared disks


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

    Every training loop of the study (PVQAE, the prior-free baselines AE-SSIM, Patch AE and
    VQ-Flow) resumes through it, the same way:

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

    def finish(self, final: dict, images_per_step: int, extra: dict | None = None, steps_done: int | None = None) -> dict:
        """Stop the clock, write the final checkpoint ``final`` to ``out_dir/<name>.pt``, the log
        and the summary, and remove the resume folder (rank 0); return the summary (every rank).

        The summary holds name, steps, resumed_from, train_seconds, train_images_per_second
        (``images_per_step`` images per step over the steps run by this call), the last logged
        row (``final``), the entries of ``extra`` and the number of processes. ``steps_done``:
        the loop stopped there, before ``steps`` (a wall-clock cap)."""
        self._tick()
        steps = self.total_steps if steps_done is None else steps_done
        run_steps = steps - self.start
        summary = {
            "name": self.name, "steps": steps, "planned_steps": self.total_steps, "resumed_from": self.start,
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

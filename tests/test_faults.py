"""Faults a long training run meets: a SIGKILL at any step or in the middle of a checkpoint
write, a truncated or corrupt ``last.pt``, a loss that turns NaN.

The kills are real: PVQAE's autoencoder training runs as a subprocess
(``tests/_train_worker.py``), the test kills it with SIGKILL at a step it picks, or while the
checkpoint file is being written, reruns it, and compares the final weights with those of an
uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pvqae.resumable as resumable
import pvqae.train as T
from pvqae.errors import TrainingError

WORKER = Path(__file__).with_name("_train_worker.py")
STEPS, CKPT_EVERY = 12, 2
TIMEOUT = 120  # seconds a worker run may take


def _run(out: Path, resume: Path, kill_at: str | None = None) -> str:
    """Run the worker to completion, or until SIGKILLed at ``kill_at`` ("step N" or "save N":
    the N-th checkpoint write, after its data is written and before its rename); returns its
    output."""
    env = {**os.environ, "PVQAE_RESUME_ROOT": str(resume), "OMP_NUM_THREADS": "1"}
    if kill_at and kill_at.startswith("save"):
        env["WORKER_HOLD_SAVE"] = kill_at.split()[1]
    proc = subprocess.Popen([sys.executable, str(WORKER), str(out), str(STEPS), str(CKPT_EVERY)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    target = None if not kill_at else ("holding save" if kill_at.startswith("save") else f"done {kill_at.split()[1]}")
    try:
        for line in proc.stdout:
            lines.append(line)
            if target is not None and line.strip() == target:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + (proc.stdout.read() if not proc.stdout.closed else "")
    if kill_at:
        assert proc.returncode == -signal.SIGKILL, output
    else:
        assert proc.returncode == 0, output
    return output


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "ae.pt", weights_only=True)["model"]


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("reference")
    _run(root / "out", root / "resume")
    return _weights(root / "out")


def _resume_dir(resume: Path) -> Path:
    (d,) = list(resume.iterdir())
    return d


def test_sigkill_at_a_random_step_then_rerun_gives_identical_weights(reference, tmp_path):
    step = int(np.random.default_rng(2026).integers(3, STEPS - 2))  # seeded: the same step on every run
    _run(tmp_path / "out", tmp_path / "resume", kill_at=f"step {step}")
    d = _resume_dir(tmp_path / "resume")
    assert (d / "last.pt").is_file() and not (tmp_path / "out" / "ae.pt").exists()
    out = _run(tmp_path / "out", tmp_path / "resume")
    assert f"resuming from step {(step + 1) // CKPT_EVERY * CKPT_EVERY}" in out
    _assert_same(reference, _weights(tmp_path / "out"))
    assert not (tmp_path / "resume" / d.name).exists()  # a finished run leaves no resume state


def test_sigkill_during_a_checkpoint_write_then_rerun_gives_identical_weights(reference, tmp_path):
    _run(tmp_path / "out", tmp_path / "resume", kill_at="save 3")  # the write of the step-6 checkpoint
    d = _resume_dir(tmp_path / "resume")
    assert list(d.glob(".*.tmp")), "killed with the new checkpoint's data written but not yet renamed"
    assert not (d / "last.pt").exists() and torch.load(d / "prev.pt", weights_only=True)["step"] == 4
    out = _run(tmp_path / "out", tmp_path / "resume")
    assert "resuming from step 4" in out
    _assert_same(reference, _weights(tmp_path / "out"))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "both"])
def test_a_damaged_last_checkpoint_falls_back_and_never_stops_the_rerun(reference, tmp_path, damage):
    _run(tmp_path / "out", tmp_path / "resume", kill_at="step 8")  # last.pt at step 8, prev.pt at step 6
    d = _resume_dir(tmp_path / "resume")
    last, prev = d / "last.pt", d / "prev.pt"
    assert torch.load(prev, weights_only=True)["step"] == 6
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2] if damage != "garbage" else b"not a checkpoint" * 100)
    if damage == "both":
        prev.write_bytes(prev.read_bytes()[:100])
    out = _run(tmp_path / "out", tmp_path / "resume")
    assert "WARNING: checkpoint" in out and "last.pt is corrupt" in out and "Set aside as last.pt.corrupt" in out
    assert ("resuming from step 6" in out) == (damage != "both")
    assert "resuming" not in out if damage == "both" else True  # both unreadable: a fresh start
    _assert_same(reference, _weights(tmp_path / "out"))


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(__file__).parent))
    from _train_worker import tiny_run

    monkeypatch.setattr(resumable, "RESUME_ROOT", tmp_path / "resume")
    model, stream, cfg, budget = tiny_run(steps=STEPS, ckpt_every=CKPT_EVERY)
    original = stream.batch

    def poisoned(step):
        b = original(step)
        if step == 7:
            b["image"] = b["image"].clone()
            b["image"][0, 0, 0, 0] = float("nan")
        return b

    monkeypatch.setattr(stream, "batch", poisoned)
    with pytest.raises(TrainingError, match=r"not finite at step 7\b"):
        T.train_autoencoder(model, stream, cfg, tmp_path / "out", "ae", seed=0, budget=budget, progress=False)
    d = _resume_dir(tmp_path / "resume")
    good = torch.load(d / "last.pt", weights_only=True)
    assert good["step"] == 6 and all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())
    assert not (tmp_path / "out" / "ae.pt").exists()

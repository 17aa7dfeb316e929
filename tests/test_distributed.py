"""DDP: the training loop under torchrun with 2 CPU processes (gloo) keeps every process's
weights identical, and only rank 0 writes files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

from pvqae import distributed
from pvqae.paths import REPO_ROOT

WORKER = textwrap.dedent('''
    import sys
    from pathlib import Path
    import torch
    import pvqae.resumable as resumable
    import pvqae.train as T
    from pvqae import distributed
    from pvqae.batches import BatchStream
    from pvqae.settings import BudgetConfig, PretrainConfig
    from pvqae.model import PVQAE, ModelConfig

    out = Path(sys.argv[1])
    resumable.RESUME_ROOT = out / "resume"
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = PVQAE(ModelConfig(image_size=32, ch=8, ch_mult=(1, 1, 2), embed_dim=8, num_codes=16,
                              router_hidden=16, groups=8, dead_after=1))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    stream = BatchStream({"image": torch.rand(8, 3, 32, 32, generator=g),
                            "entropy": torch.rand(8, 8, 8, generator=g)}, 4, 0)
    budget = BudgetConfig(steps=3, lr=2e-4, router_lr=0.0, lambda_max=1.0, budget_scale=1e-3, disc_start=0, tau_min=1.0)
    cfg = PretrainConfig(batch_size=4, disc_weight=0.1, disc_ch=8, disc_layers=2, ckpt_every=1,
                         log_every=1).for_budget(budget)
    summary = T.train_autoencoder(model, stream, cfg, out / "models", "ddp", 0, budget=budget, progress=False)
    torch.save({"state": model.state_dict(), "init": init, "world": distributed.world_size(),
                "summary_processes": summary["processes"]}, out / f"rank{distributed.rank()}.pt")
''')


def test_two_gloo_processes_hold_the_same_weights_after_training(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    ranks = [torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in (0, 1)]
    assert [x["world"] for x in ranks] == [2, 2] and ranks[0]["summary_processes"] == 2
    a, b = ranks[0]["state"], ranks[1]["state"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs between the two processes"
    changed = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], ranks[0]["init"][k])]
    assert any(k.startswith("router.") for k in changed) and any(k.startswith("encoder.") for k in changed)
    # rank 0 alone wrote the model, log and summary; nothing is left to resume
    assert (tmp_path / "models" / "ddp.pt").exists() and (tmp_path / "models" / "ddp_log.csv").exists()
    assert not list((tmp_path / "resume").glob("*/last.pt"))


def test_single_process_helpers_are_no_ops():
    batch = {"image": torch.zeros(4, 3, 2, 2)}
    assert not distributed.active() and distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.is_main() and distributed.shard(batch) is batch
    m = torch.nn.Linear(2, 2)
    assert distributed.wrap(m) is m


def test_device_is_the_cpu_here_and_can_be_named(monkeypatch):
    monkeypatch.delenv("PVQAE_DEVICE", raising=False)
    assert distributed.device() == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    monkeypatch.setenv("PVQAE_DEVICE", "cpu")
    assert distributed.device() == torch.device("cpu")


class _Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.moves = []

    def to(self, *args, **kwargs):
        self.moves.append(str(args[0]))
        return self

    def cpu(self):
        self.moves.append("cpu")
        return self


def test_on_device_moves_models_there_and_back_even_on_error(monkeypatch):
    import pytest

    monkeypatch.setattr(distributed, "device", lambda: torch.device("cuda", 1))
    a, b = _Recorder(), _Recorder()
    with distributed.on_device(a, None, b) as dev:
        assert dev == torch.device("cuda", 1) and a.moves == b.moves == ["cuda:1"]
    assert a.moves == b.moves == ["cuda:1", "cpu"]
    with pytest.raises(RuntimeError, match="boom"):
        with distributed.on_device(a):
            raise RuntimeError("boom")
    assert a.moves[-1] == "cpu"

"""Tests of pvqae.checkpoint: atomic weights-only save/load and RNG-state restore."""

from __future__ import annotations

import random
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pvqae.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from pvqae.errors import PVQAEError


def _training_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(2, 3, 8, 8)).mean().backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": 7,
        "epoch": 1,
        "rng": rng_state(),
        "config": {"lr": 1e-3, "name": "pvqae", "sizes": [64, 128], "flags": (True, None)},
    }


def _assert_equal(a, b, where="state"):
    assert type(a) is type(b) or (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_equal(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_roundtrip_weights_only(tmp_path):
    state = _training_state()
    path = tmp_path / "nested" / "dir" / "step_7.pt"  # parent folders are created
    assert save_checkpoint(path, state) == path
    loaded = load_checkpoint(path)
    _assert_equal(state, loaded)
    # plain torch.load with weights_only=True works too
    raw = torch.load(path, weights_only=True)
    assert raw["step"] == 7
    # the loaded state restores a model and an optimizer
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model.load_state_dict(loaded["model"])
    torch.optim.Adam(model.parameters()).load_state_dict(loaded["optimizer"])
    assert list(tmp_path.rglob("*.tmp")) == []


def test_accepts_ordered_dict_and_torch_metadata(tmp_path):
    state = {"od": OrderedDict(a=torch.ones(2)), "shape": torch.Size([2, 3]), "dtype": torch.float16, 3: b"x"}
    save_checkpoint(tmp_path / "a.pt", state)
    _assert_equal(state, load_checkpoint(tmp_path / "a.pt"))


class _NotSerialisable:
    pass


@pytest.mark.parametrize(
    "state,key_path",
    [
        ({"config": {"root": Path("/data")}}, "state['config']['root']"),
        ({"model": {"w": torch.ones(1)}, "extra": [1, {"obj": _NotSerialisable()}]}, "state['extra'][1]['obj']"),
        ({"arr": np.zeros(3)}, "state['arr']"),
        ({"n": np.float32(1.0)}, "state['n']"),
    ],
)
def test_rejects_non_serialisable_with_key_path(tmp_path, state, key_path):
    path = tmp_path / "bad.pt"
    with pytest.raises(TypeError) as info:
        save_checkpoint(path, state)
    assert key_path in str(info.value)
    assert "weights_only" in str(info.value)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_rejects_bad_keys_and_non_dict(tmp_path):
    with pytest.raises(TypeError, match=r"state\['cfg'\]"):
        save_checkpoint(tmp_path / "k.pt", {"cfg": {(1, 2): 3}})
    with pytest.raises(TypeError, match="must be a dict"):
        save_checkpoint(tmp_path / "k.pt", [torch.ones(1)])


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.arange(5)})
    before = path.read_bytes()

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial data")  # half a zip archive, then the "crash"
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, {"step": 2, "w": torch.arange(6)})
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "new.pt", {"step": 2})
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp files, no new.pt


def test_overwrite_replaces(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})
    save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path)["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("content", [b"", b"this is not a checkpoint", b"PK\x03\x04truncated"])
def test_corrupt_file_message(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(PVQAEError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "Delete it" in msg


def test_truncated_real_checkpoint_is_reported(tmp_path):
    path = tmp_path / "trunc.pt"
    save_checkpoint(path, _training_state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PVQAEError, match="trunc.pt"):
        load_checkpoint(path)


def test_latest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    for step in (900, 1000, 50):
        save_checkpoint(tmp_path / f"step_{step}.pt", {"step": step})
    (tmp_path / ".step_2000.pt.abc.tmp").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("x")
    assert latest_checkpoint(tmp_path) == tmp_path / "step_1000.pt"
    assert latest_checkpoint(tmp_path, pattern="step_9*.pt") == tmp_path / "step_900.pt"


def _draws() -> tuple:
    return (
        torch.rand(5),
        torch.randint(0, 1000, (3,)),
        [random.random() for _ in range(3)],
        random.gauss(0, 1),
        np.random.rand(3),
    )


def test_rng_state_restores_random_streams(tmp_path):
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    random.gauss(0, 1)  # leave a cached gauss value in python's state
    path = tmp_path / "rng.pt"
    save_checkpoint(path, {"rng": rng_state()})
    expected = _draws()

    # advance / scramble all generators, as a crashed run would
    torch.manual_seed(999)
    random.seed(999)
    np.random.seed(999)
    _draws()

    set_rng_state(load_checkpoint(path)["rng"])
    got = _draws()
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
    assert expected[2] == got[2] and expected[3] == got[3]
    np.testing.assert_array_equal(expected[4], got[4])

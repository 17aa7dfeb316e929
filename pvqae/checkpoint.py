"""Atomic, weights-only training checkpoints and RNG-state capture.

Checkpoints hold only tensors and Python primitives (nested in dicts, lists and tuples)
so that they always load with ``torch.load(..., weights_only=True)``: loading a
checkpoint never runs arbitrary pickled code. :func:`save_checkpoint` checks this before
writing and writes atomically (temporary file in the same folder, ``fsync``,
``os.replace``), so a crash or a full disk during a save leaves the previous checkpoint
intact instead of a truncated file.

Typical use in a training loop::

    save_checkpoint(path, {
        "model": model.state_dict(), "optimizer": opt.state_dict(),
        "step": step, "epoch": epoch, "rng": rng_state(), "config": config,
    })
    ...
    ckpt = load_checkpoint(latest_checkpoint(folder))
    model.load_state_dict(ckpt["model"]); set_rng_state(ckpt["rng"])
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pvqae.errors import PVQAEError

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "rng_state",
    "set_rng_state",
]

# Leaf types that ``torch.load(weights_only=True)`` accepts.
_PRIMITIVES = (bool, int, float, complex, str, bytes, type(None))
_TENSOR_LIKE = (torch.Tensor, torch.Size, torch.dtype, torch.device)
_KEY_TYPES = (bool, int, float, str, type(None))
_TMP_SUFFIX = ".tmp"


def _validate(obj: Any, path: str) -> None:
    """Raise TypeError naming the key path of the first value weights_only cannot load."""
    if isinstance(obj, _TENSOR_LIKE):
        if isinstance(obj, torch.Tensor) and type(obj) not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(
                f"checkpoint value at {path} is a {type(obj).__qualname__} tensor subclass; "
                "store a plain tensor instead (e.g. t.as_subclass(torch.Tensor))"
            )
        return
    if type(obj) in _PRIMITIVES:
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            if type(key) not in _KEY_TYPES:
                raise TypeError(
                    f"checkpoint key {key!r} under {path} has type {type(key).__qualname__}; "
                    "dict keys must be str, int, float, bool or None"
                )
            _validate(value, f"{path}[{key!r}]")
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            _validate(value, f"{path}[{i}]")
        return
    raise TypeError(
        f"checkpoint value at {path} has type {type(obj).__module__}.{type(obj).__qualname__}, "
        "which torch.load(weights_only=True) cannot load; store only tensors, Python "
        "numbers/str/bool/None and dicts/lists/tuples of them (convert numpy arrays with "
        "torch.from_numpy, numpy scalars with .item(), paths with str)"
    )


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Save ``state`` to ``path`` atomically.

    The data is written to a temporary file (hidden, ``.tmp`` suffix) in the destination
    folder, flushed and ``fsync``-ed, then moved over ``path`` with :func:`os.replace`
    (atomic on POSIX and Windows within one file system); the folder is ``fsync``-ed too
    where the OS allows it. If anything fails, the temporary file is removed and an
    existing checkpoint at ``path`` is left untouched. Parent folders are created.

    Args:
        path: destination file (conventionally ``*.pt``).
        state: dict of tensors, Python primitives (bool, int, float, complex, str, bytes,
            None), ``torch.Size``/``dtype``/``device``, nested in dicts (str/int keys),
            lists and tuples, e.g. model/optimizer ``state_dict()``s, step, epoch,
            :func:`rng_state`, a config dict.

    Returns:
        The destination path.

    Raises:
        TypeError: if ``state`` is not a dict or contains a value that
            ``torch.load(weights_only=True)`` cannot load; the message names its key path,
            e.g. ``state['config']['root']``.
    """
    if type(state) not in (dict, OrderedDict):
        raise TypeError(f"save_checkpoint: state must be a dict, got {type(state).__qualname__}")
    _validate(state, "state")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder`` (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Uses ``torch.load(path, map_location=map_location, weights_only=True)``.

    Args:
        path: checkpoint file.
        map_location: where to put the tensors. Default ``"cpu"`` (move the model to the
            device after ``load_state_dict``).

    Returns:
        The saved state dict.

    Raises:
        FileNotFoundError: if ``path`` is not an existing file.
        PVQAEError: if the file cannot be read as a weights-only checkpoint (truncated,
            corrupt, or written by something else); the message names the file and says
            to delete it to restart the stage.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise PVQAEError(
            f"checkpoint {path} is corrupt or not a weights-only pvqae checkpoint "
            f"({type(exc).__name__}: {exc}). Delete it to restart this stage from its "
            "previous checkpoint (or from scratch)."
        ) from exc
    if not isinstance(state, dict):
        raise PVQAEError(
            f"checkpoint {path} holds a {type(state).__qualname__}, not a dict; it was not "
            "written by pvqae. Delete it to restart this stage."
        )
    return state


def _natural_key(name: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]


def latest_checkpoint(folder: str | os.PathLike, pattern: str = "*.pt") -> Path | None:
    """The newest checkpoint file in ``folder``, or ``None`` if there is none.

    "Newest" is the last in *natural* order of the file names (numbers compared by value:
    ``step_900.pt`` < ``step_1000.pt``), so name checkpoints after their step or epoch.
    Names are used rather than modification times, which copying or syncing can change.
    Temporary files of an interrupted :func:`save_checkpoint` are never returned.

    Args:
        folder: folder holding the checkpoints; a missing folder gives ``None``.
        pattern: glob pattern of checkpoint names. Default ``"*.pt"``.

    Returns:
        Path of the newest checkpoint, or ``None``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    files = [
        p for p in folder.glob(pattern) if p.is_file() and not p.name.endswith(_TMP_SUFFIX)
    ]
    if not files:
        return None
    return max(files, key=lambda p: _natural_key(p.name))


def rng_state() -> dict:
    """Capture the random number generator states, as weights-only-safe values.

    Captures the torch CPU generator, Python's :mod:`random`, NumPy's global generator
    and, when CUDA is available, the CUDA generators of all devices. Store the result in
    the checkpoint and pass it to :func:`set_rng_state` on resume so the run continues
    with the same random stream (data shuffling, augmentation, dropout...).

    Returns:
        Dict of tensors and Python numbers.
    """
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": {
            "version": py_version,
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
        "numpy": {
            "bit_generator": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict) -> None:
    """Restore generator states captured by :func:`rng_state`.

    Entries absent from ``state`` are left alone; CUDA states are restored only when CUDA
    is available (a checkpoint from a GPU run resumes on CPU with the CPU streams
    restored).

    Args:
        state: a dict from :func:`rng_state` (possibly after a save/load roundtrip).
    """
    if "torch" in state:
        torch.set_rng_state(state["torch"].to(device="cpu", dtype=torch.uint8))
    if "python" in state:
        py = state["python"]
        internal = tuple(int(v) for v in py["internal"].tolist())
        random.setstate((int(py["version"]), internal, py["gauss_next"]))
    if "numpy" in state:
        npst = state["numpy"]
        keys = npst["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state(
            (npst["bit_generator"], keys, int(npst["pos"]), int(npst["has_gauss"]), float(npst["cached_gaussian"]))
        )
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.to(device="cpu", dtype=torch.uint8) for s in state["cuda"]]
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])

"""One repo-root constant, so paths work the same under DVC (cwd = repo root) and in
JupyterLab (cwd = ``notebooks/``)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_path(p: str | Path) -> Path:
    """Resolve ``p`` against the repository root unless it is absolute."""
    p = Path(p)
    return p if p.is_absolute() else (REPO_ROOT / p)

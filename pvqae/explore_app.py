"""The code-allocation explorer as a web page: the explorer notebook served by Voila.

``python -m pvqae explore`` converts ``notebooks/explore_code_allocation.py`` (jupytext) to a
notebook whose parameters cell points at the chosen ``reports`` folder, and serves it with
Voila: a page with the widgets and figures and no code cells (one kernel per visitor). The
JupyterLab route (open the ``.py`` as a notebook) shows the same notebook with its code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pvqae.errors import DataError
from pvqae.paths import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "explore_code_allocation.py"


def write_app_notebook(reports: Path, out: Path) -> Path:
    """``out`` (an ``.ipynb``): the explorer with ``models_dir`` / ``prepared_dir`` set to
    ``reports``'s, widgets on. Raises DataError naming what is missing (run ``dvc repro``)."""
    import jupytext
    import nbformat

    reports = Path(reports).resolve()
    missing = [p for p in (reports / "models", reports / "prepared" / "manifest.json") if not p.exists()]
    if missing:
        raise DataError(f"the explorer reads a finished run: {', '.join(map(str, missing))} missing; "
                        f"run `dvc repro` first (or pass --reports a folder holding models/ and prepared/)")
    nb = jupytext.read(NOTEBOOK)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    values = {"models_dir": str(reports / "models"), "prepared_dir": str(reports / "prepared"), "headless": False}
    # as papermill does: a cell after the "parameters" cell overrides its values
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items()),
                                                      metadata={"tags": ["injected-parameters"]}))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, out, fmt="ipynb")
    return out


def voila_command(notebook: Path, port: int, ip: str = "127.0.0.1") -> list[str]:
    """The Voila server command for ``notebook`` (no browser opened; tracebacks shown in the page).

    The kernel is pre-heated: Voila runs the notebook once at start-up (and again after each
    page is served) before any browser connects. Voila 0.5 executing a widget notebook while
    the page's own kernel connection comes up can hang at "Executing x of y" (voila#1395; here
    about one load in three, all processes idle); a page served from a pre-heated kernel does
    not race, so the first load is both instant and safe. Load the page after Voila logs
    "Kernel pool ... is filled" (the browser test waits for that line).
    """
    return [sys.executable, "-m", "voila", str(notebook), f"--port={port}", f"--Voila.ip={ip}", "--no-browser",
            "--show_tracebacks=True", "--VoilaConfiguration.file_allowlist=['.*\\.png']",
            "--VoilaConfiguration.preheat_kernel=True"]


def serve(reports: Path, port: int = 8866, ip: str = "127.0.0.1", folder: Path | None = None) -> int:
    """Write the app notebook under ``folder`` (default: a new temporary folder, so nothing
    is written into the DVC-managed ``reports``) and run Voila in the foreground until
    interrupted; returns its exit code."""
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="pvqae-explorer-"))
    nb = write_app_notebook(Path(reports), folder / "explore_code_allocation.ipynb")
    print(f"serving the explorer on http://{ip}:{port}/ : open it once Voila logs \"Kernel pool ... is filled\" "
          f"(the notebook has then run; Ctrl-C stops it)")
    env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    return subprocess.call(voila_command(nb, port, ip), cwd=str(REPO_ROOT), env=env)

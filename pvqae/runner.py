"""Run a pipeline stage: jupytext ``.py`` notebook -> papermill execution.

papermill cannot execute a ``.py`` source directly, so the source is converted in-process
(jupytext), written to a temporary ``.ipynb`` and executed with the stage's params.yaml
sections injected into its ``parameters`` cell, after the whole params.yaml has been read
strictly (:class:`pvqae.settings.Params`: an unknown key stops the run before any output). The executed copy goes to
``reports/executed/<stage>.ipynb`` (a DVC out). The kernel's working directory is the repo
root, so notebooks build every path from ``pvqae.paths.REPO_ROOT`` either way.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pvqae.paths import REPO_ROOT
from pvqae.stages import PATHS, stage_params, stages


def notebook_source(stage: str) -> Path:
    return REPO_ROOT / "notebooks" / stages()[stage].notebook


def variant_dir(name: str) -> Path:
    """Output folder of one ablation variant (a DVC out of its foreach stage)."""
    return REPO_ROOT / PATHS["variants"] / name


def _skip_iri_grammar() -> None:
    """Keep jsonschema from importing ``rfc3987_syntax`` (pulled in by jsonschema >= 4.24's
    ``format-nongpl`` extra, which the Jupyter stack asks for): it compiles a Lark grammar at
    import, about 3 s of CPU that every stage's runner paid through nbformat's validator.
    Notebook validation never checks the ``iri`` format that module provides; jsonschema skips
    that checker when the import fails, as it does when the package is not installed."""
    import sys

    if "jsonschema" not in sys.modules:  # once jsonschema is loaded, the choice is made
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def run_stage(stage: str, params: dict | None = None, executed: Path | None = None, log_output: bool = True,
              variant: str | None = None, overrides: dict | None = None) -> Path:
    """Execute the notebook of ``stage``; returns the executed notebook's path.

    For the ``variant`` stage, ``variant`` names the setting (``lambda_max-0.5``) and
    ``overrides`` the dotted params it changes; the notebook writes everything, its executed
    copy included, under ``reports/variants/<variant>/``.
    """
    _skip_iri_grammar()
    import jupytext
    import papermill as pm

    from pvqae.config import load_params
    from pvqae.settings import Params

    Params.from_dict(params if params is not None else load_params())  # a typo fails here, before any output
    injected = {"params": stage_params(stage, params), "paths": dict(PATHS)}
    if stage == "variant":
        if not variant or not overrides:
            raise ValueError("the variant stage needs --name NAME and at least one --set key=value")
        injected["variant"] = {"name": variant, "overrides": overrides}
        executed = executed or variant_dir(variant) / "executed.ipynb"
    elif variant or overrides:
        raise ValueError(f"--name/--set apply to the variant stage only, not to {stage!r}")
    executed = Path(executed or REPO_ROOT / PATHS["executed"] / f"{stage}.ipynb")
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun only rank 0 keeps the executed notebook
        executed = Path(tempfile.gettempdir()) / f"pvqae-rank{os.environ['RANK']}-{stage}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(notebook_source(stage))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{stage}.ipynb"
        jupytext.write(nb, src, fmt="ipynb")
        pm.execute_notebook(str(src), str(executed), parameters=injected, cwd=str(REPO_ROOT),
                            kernel_name="python3", progress_bar=False, log_output=log_output)
    return executed

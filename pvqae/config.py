"""Parameters, profiles, stage table and output paths.

``params.yaml`` holds the default run (the synthetic dataset on 2 CPU cores). Profiles are
overlays in ``profiles/`` that change values only, never code paths:

- ``profiles/size/{default,tiny,cpu,paper}.yaml``: model size, steps, image size...
- ``profiles/data/{synthetic,mtsd,mvtec_bottle,mvtec,btad,folder}.yaml``: which dataset.

All overlays of a group set the same keys, so applying any overlay after any other gives the
same ``params.yaml`` (``python -m pvqae profile tiny``; tests check the key sets).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pvqae.paths import REPO_ROOT

PARAMS_FILE = REPO_ROOT / "params.yaml"
PROFILE_DIR = REPO_ROOT / "profiles"
PROFILE_GROUPS = ("size", "data")


@dataclass(frozen=True)
class Stage:
    """One DVC stage = one notebook. ``sections`` are the params.yaml sections it reads."""

    name: str
    notebook: str
    sections: tuple[str, ...]


STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("prepare", "01_prepare_data.py", ("seed", "data")),
    Stage("pretrain", "02_pretrain_vqgan.py", ("seed", "seeds", "data", "model", "pretrain", "static_vq")),
    Stage("budget", "03_budget_learning.py", ("seed", "seeds", "pretrain", "budget")),
    Stage("prior", "04_prior_learning.py", ("seed", "seeds", "prior")),
    Stage("evaluate", "05_evaluate.py", ("seed", "seeds", "prior", "evaluate")),
    Stage("baselines", "06_baselines.py", ("seed", "seeds", "data", "evaluate", "baselines")),
    # one DVC stage per ablation setting (dvc.yaml foreach): budget learning -> prior -> evaluation
    Stage("variant", "07_budget_variant.py", ("seed", "seeds", "pretrain", "budget", "prior", "evaluate")),
    Stage("ablations", "08_ablations.py", ("seed", "seeds", "budget", "prior", "evaluate", "ablations")),
    Stage("figures", "09_qualitative.py", ("seed", "seeds", "figures")),
    Stage("report", "10_report.py", ("seed", "seeds", "data", "budget", "prior", "evaluate", "ablations", "baselines")),
]}

# Every file or folder a stage writes (declared as its outs in dvc.yaml; tests check it).
# Models of training seed k live in ``<stage folder>/seed<k>/``.
PATHS: dict[str, str] = {
    "prepared": "reports/prepared",
    "pretrain_models": "reports/models/pretrain",
    "budget_models": "reports/models/budget",
    "prior_models": "reports/models/prior",
    "baseline_models": "reports/models/baselines",
    "ablation_models": "reports/models/ablations",
    "variants": "reports/variants",
    "scores": "reports/scores",
    "executed": "reports/executed",
    "metrics": "reports/metrics",
    "tables": "reports/tables",
    "figures": "reports/figures",
    "report": "reports/REPORT.md",
}


def load_yaml(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def load_params(path: Path | None = None) -> dict:
    """The whole params.yaml."""
    path = Path(path or PARAMS_FILE)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run from a checkout of the pvqae repository")
    return load_yaml(path)


def stage_params(stage: str, params: dict | None = None) -> dict:
    """The params.yaml sections a stage reads (what the runner injects into its notebook),
    plus ``profile``."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    params = params if params is not None else load_params()
    missing = [s for s in STAGES[stage].sections if s not in params]
    if missing:
        raise KeyError(f"params.yaml lacks section(s) {missing} needed by stage {stage!r}")
    out = {s: copy.deepcopy(params[s]) for s in STAGES[stage].sections}
    out["profile"] = params.get("profile", "default")
    return out


def deep_merge(base: dict, overlay: dict) -> dict:
    """Recursive dict merge; overlay wins; lists are replaced, not merged."""
    out = copy.deepcopy(base)
    for k, v in overlay.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def flat_keys(d: dict, prefix: str = "") -> set[str]:
    """Dotted leaf keys of a nested dict."""
    keys: set[str] = set()
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            keys |= flat_keys(v, key + ".")
        else:
            keys.add(key)
    return keys


def profile_path(name: str) -> Path:
    """Find ``profiles/<group>/<name>.yaml``."""
    hits = [PROFILE_DIR / g / f"{name}.yaml" for g in PROFILE_GROUPS if (PROFILE_DIR / g / f"{name}.yaml").exists()]
    if not hits:
        avail = sorted(p.stem for g in PROFILE_GROUPS for p in (PROFILE_DIR / g).glob("*.yaml"))
        raise FileNotFoundError(f"no profile named {name!r}; available: {', '.join(avail)}")
    return hits[0]


def get_dotted(d: dict, dotted: str):
    """``d["a"]["b"]`` for ``"a.b"``; KeyError naming the dotted key when absent."""
    cur = d
    for k in dotted.split("."):
        if not isinstance(cur, dict) or k not in cur:
            raise KeyError(f"params have no key {dotted!r}")
        cur = cur[k]
    return cur


def set_dotted(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = value


def parse_overrides(sets: list[str] | None) -> dict:
    """``["budget.lambda_max=0.5", ...]`` -> ``{"budget.lambda_max": 0.5}`` (values YAML-parsed)."""
    out = {}
    for s in sets or []:
        if "=" not in s:
            raise ValueError(f"--set expects key=value, got {s!r}")
        k, v = s.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def apply_profiles(names: list[str], sets: list[str] | None = None, path: Path | None = None) -> dict:
    """Merge the named overlays (and ``key=value`` settings, YAML-parsed) into params.yaml."""
    path = Path(path or PARAMS_FILE)
    params = load_params(path)
    for n in names:
        overlay = load_yaml(profile_path(n))
        params = deep_merge(params, overlay)
        if profile_path(n).parent.name == "size":
            params["profile"] = n
    for k, v in parse_overrides(sets).items():
        set_dotted(params, k, v)
    with open(path, "w") as f:
        f.write("# Written by `python -m pvqae profile`; the committed file is the default profile.\n")
        yaml.safe_dump(params, f, sort_keys=False)
    return params

"""The project's frame stays consistent: pins, dvc.yaml vs the stage declarations, profiles,
notebooks, config defaults."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from pvqae.config import PROFILE_DIR, PROFILE_GROUPS, apply_profiles, flat_keys, load_yaml
from pvqae.stages import PATHS, dvc_yaml_text, stage_params, stages

STAGES = stages()
from pvqae.paths import REPO_ROOT


def _pins(lines):
    return {m.group(1).lower(): m.group(2) for m in (re.match(r"^\s*-?\s*\"?([A-Za-z0-9_.-]+)==([^\"\s,]+)", ln)
                                                    for ln in lines) if m}


def test_environment_yml_and_pyproject_pin_the_same_versions():
    import tomllib

    py = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    pp = _pins(py["project"]["dependencies"] + py["project"]["optional-dependencies"]["dev"])
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    ep = _pins(pip)
    assert pp == ep
    assert pp["torch"] == "2.13.0"


VARIANT_STAGES = {"lambda_schedule": "ablations.lambda_schedules", "lambda_max": "ablations.lambda_max",
                  "static_level": "ablations.static_levels"}


def test_dvc_yaml_is_generated_from_the_stage_declarations():
    assert (REPO_ROOT / "dvc.yaml").read_text() == dvc_yaml_text(), "run `python -m pvqae dvc-yaml`"


def test_dvc_yaml_matches_the_stage_table():
    dvc = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    # the variant notebook runs as one foreach stage per ablation list
    assert [s for s in dvc if s not in VARIANT_STAGES] == [s for s in STAGES if s != "variant"]
    assert set(VARIANT_STAGES) <= set(dvc)
    specs = {name: dvc[name] for name in STAGES if name != "variant"}
    for name, key in VARIANT_STAGES.items():
        assert dvc[name]["foreach"] == "${" + key + "}"
        spec = dvc[name]["do"]
        assert spec["cmd"].startswith(f"python -m pvqae run variant --name {name}-${{item}} --set budget.")
        assert spec["outs"] == [f"reports/variants/{name}-${{item}}"]
        assert f"notebooks/{STAGES['variant'].notebook}" in spec["deps"]
        assert set(spec["params"]) == set(STAGES["variant"].params), name
    for name, spec in specs.items():
        st = STAGES[name]
        assert spec["cmd"] == f"python -m pvqae run {name}"
        assert f"notebooks/{st.notebook}" in spec["deps"]
        assert set(spec["params"]) == set(st.params), name
        outs = spec.get("outs", []) + spec.get("metrics", [])
        assert f"reports/executed/{name}.ipynb" in outs
        for out in outs:
            assert out.startswith("reports/"), out
    for spec in list(specs.values()) + [dvc[n]["do"] for n in VARIANT_STAGES]:
        for dep in spec["deps"]:
            if dep.startswith("pvqae/") or dep.startswith("notebooks/"):
                assert (REPO_ROOT / dep).exists(), dep
    all_outs = [o for s in specs.values() for o in s.get("outs", []) + s.get("metrics", [])]
    assert len(all_outs) == len(set(all_outs)), "two stages declare the same output"
    for key in ("prepared", "pretrain_models", "budget_models", "prior_models", "baseline_models", "ablation_models",
                "scores", "report"):
        assert PATHS[key] in all_outs, key


def test_stages_import_the_modules_they_depend_on():
    """A notebook's and its stage module's pvqae imports are dvc deps, so editing them reruns
    the stage."""
    import re as _re

    dvc = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    for name, st in STAGES.items():
        spec = dvc["lambda_max"]["do"] if name == "variant" else dvc[name]
        src = (REPO_ROOT / "notebooks" / st.notebook).read_text() + (REPO_ROOT / "pvqae" / "stages" / f"{name}.py").read_text()
        mods = set(_re.findall(r"from pvqae\.([\w.]+) import", src))
        mods |= {m.strip() for line in _re.findall(r"from pvqae import ([\w, ]+)", src) for m in line.split(",")}
        for mod in sorted(mods - {"paths"}):
            path = mod.replace(".", "/")
            dep = f"pvqae/{path}.py" if (REPO_ROOT / "pvqae" / f"{path}.py").exists() else f"pvqae/{path}"
            covered = (dep in spec["deps"] or f"{dep}/__init__.py" in spec["deps"]
                       or any(dep.startswith(d + "/") for d in spec["deps"]))
            assert covered, f"stage {name} imports pvqae.{mod} but does not depend on {dep}"


def test_every_notebook_has_a_parameters_cell_and_no_outputs():
    import jupytext

    for st in STAGES.values():
        nb = jupytext.read(REPO_ROOT / "notebooks" / st.notebook)
        params_cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params_cells) == 1, st.notebook
        assert "params = None" in params_cells[0].source and "paths = None" in params_cells[0].source
        src = "".join(c.source for c in nb.cells)
        assert f'stages.configure("{st.name}"' in src or f'stages.stage_params("{st.name}")' in src


def test_dvc_analytics_off():
    cfg = (REPO_ROOT / ".dvc" / "config").read_text()
    assert re.search(r"analytics\s*=\s*false", cfg)


@pytest.mark.parametrize("group", PROFILE_GROUPS)
def test_profiles_of_a_group_set_the_same_keys(group):
    files = sorted((PROFILE_DIR / group).glob("*.yaml"))
    assert len(files) >= 2
    keys = {f.stem: flat_keys(load_yaml(f)) for f in files}
    first = next(iter(keys.values()))
    for name, k in keys.items():
        assert k == first, f"profiles/{group}/{name}.yaml sets other keys than its siblings: {k ^ first}"


def test_committed_params_are_the_default_synthetic_and_pixels_profiles():
    params = load_yaml(REPO_ROOT / "params.yaml")
    assert params["profile"] == "default"
    for f in (PROFILE_DIR / "size" / "default.yaml", PROFILE_DIR / "data" / "synthetic.yaml",
              PROFILE_DIR / "input" / "pixels.yaml"):
        overlay = load_yaml(f)
        for key in flat_keys(overlay):
            a, b = params, overlay
            for part in key.split("."):
                a, b = a[part], b[part]
            assert a == b, f"params.yaml {key} = {a!r} but {f.name} says {b!r}"


def test_profile_groups_set_disjoint_keys():
    """So that applying overlays of different groups in any order gives the same params."""
    keys = {g: set().union(*(flat_keys(load_yaml(f)) for f in (PROFILE_DIR / g).glob("*.yaml"))) for g in PROFILE_GROUPS}
    for a in PROFILE_GROUPS:
        for b in PROFILE_GROUPS:
            if a < b:
                assert not keys[a] & keys[b], (a, b, keys[a] & keys[b])


def test_applying_profiles_is_idempotent_and_order_free(tmp_path):
    p = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", p)
    a = apply_profiles(["cpu", "mtsd"], path=p)
    b = apply_profiles(["tiny", "synthetic"], path=p)
    c = apply_profiles(["mtsd", "cpu"], path=p)
    assert a == c and a != b
    assert a["data"]["dataset"] == "mtsd" and a["profile"] == "cpu"
    assert a["data"]["channels"] == 1 and b["data"]["channels"] == 3  # MTSD is grayscale
    d = apply_profiles(["default", "synthetic"], path=p)
    assert d == load_yaml(REPO_ROOT / "params.yaml")
    e = apply_profiles([], sets=["prior.mode=universal", "data.classes=[a, b]"], path=p)
    assert e["prior"]["mode"] == "universal" and e["data"]["classes"] == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="no profile named 'nope'"):
        apply_profiles(["nope"], path=p)


def test_stage_params_are_the_declared_sections():
    sp = stage_params("pretrain")
    assert set(sp) == set(STAGES["pretrain"].params) | {"profile"}
    with pytest.raises(KeyError, match="unknown stage"):
        stage_params("nope")


def test_cli_help_lists_commands(capsys):
    from pvqae.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "run" in out and "profile" in out

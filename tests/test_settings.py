"""The typed config: strict (a typo is an error naming it and the closest key), typed, and the
only home of the defaults (they equal the committed params.yaml)."""

from __future__ import annotations

import copy

import pytest

from pvqae.config import flat_keys, get_dotted, load_params, set_dotted
from pvqae.settings import Params
from pvqae.strict_config import ConfigError

PARAMS = load_params()


def _typo(key: str) -> str:
    """A plausible misspelling: two neighbouring letters swapped (or one doubled)."""
    i = next((i for i in range(1, len(key) - 1) if key[i] != key[i + 1] and key[i].isalpha() and key[i + 1].isalpha()),
             None)
    return key[:i] + key[i + 1] + key[i] + key[i + 2:] if i is not None else key + key[-1]


SECTION_KEYS = sorted({k.rsplit(".", 1)[0] + "." + k.rsplit(".", 1)[1] for k in flat_keys(PARAMS) if "." in k})
ONE_KEY_PER_SECTION = sorted({k.rsplit(".", 1)[0]: k for k in SECTION_KEYS}.values())


@pytest.mark.parametrize("dotted", ONE_KEY_PER_SECTION)
def test_a_typo_in_any_section_names_key_section_and_suggestion(dotted):
    section, key = dotted.rsplit(".", 1)
    bad = copy.deepcopy(PARAMS)
    parent = get_dotted(bad, section)
    parent[_typo(key)] = parent.pop(key)
    with pytest.raises(ConfigError) as e:
        Params.from_dict(bad)
    msg = str(e.value)
    assert msg.startswith(f"{section}.{_typo(key)}: unknown key"), msg
    assert f"did you mean {key}?" in msg, msg


def test_the_issue_example_and_a_top_level_typo():
    bad = copy.deepcopy(PARAMS)
    bad["budget"]["lamda_max"] = bad["budget"].pop("lambda_max")
    with pytest.raises(ConfigError, match=r"^budget\.lamda_max: unknown key; did you mean lambda_max\?$"):
        Params.from_dict(bad)
    with pytest.raises(ConfigError, match=r"^sede: unknown key; did you mean seed\?"):
        Params.from_dict({**PARAMS, "sede": 1})


@pytest.mark.parametrize("dotted,value,match", [
    ("pretrain.steps", "ten", r"pretrain\.steps: expected int, got str 'ten'"),
    ("model.ch_mult", 3, r"model\.ch_mult: expected tuple"),
    ("evaluate.score.smooth_sigma", None, r"evaluate\.score\.smooth_sigma: null is not allowed"),
    ("baselines.methods", ["patchcor"], r"baselines\.methods: unknown method 'patchcor'; did you mean patchcore\?"),
    ("seeds", [0, 0], r"seeds: must be a non-empty list of distinct"),
    ("data.patch_size", 16, r"data\.patch_size to 8"),
    ("data.entropy", 3, r"data\.entropy: expected a mapping"),
])
def test_wrong_values_are_named_errors(dotted, value, match):
    bad = copy.deepcopy(PARAMS)
    set_dotted(bad, dotted, value)
    with pytest.raises(ConfigError, match=match):
        Params.from_dict(bad)


def test_model_section_may_not_set_what_data_sets():
    bad = copy.deepcopy(PARAMS)
    bad["model"]["image_size"] = 128
    with pytest.raises(ConfigError, match=r"model\.image_size: set from another section"):
        Params.from_dict(bad)


def test_defaults_are_the_committed_default_profile():
    """params.yaml and the dataclasses agree: the dataclass is the one home of each default."""
    defaults = Params().to_dict()
    read = Params.from_dict(PARAMS).to_dict()
    assert read == defaults
    for key in flat_keys(PARAMS):
        assert get_dotted(defaults, key) == get_dotted(PARAMS, key), key


def test_ints_become_floats_and_lists_tuples():
    p = copy.deepcopy(PARAMS)
    p["budget"]["lambda_max"] = 2
    cfg = Params.from_dict(p)
    assert isinstance(cfg.budget.lambda_max, float) and cfg.budget.lambda_max == 2.0
    assert cfg.model.ch_mult == (1, 1, 2, 2) and cfg.seeds == (0,)
    assert cfg.model.image_size == p["data"]["image_size"] and cfg.model.in_channels == p["data"]["channels"]
    with pytest.raises(Exception):  # frozen
        cfg.budget.lambda_max = 1.0


def test_run_stops_on_a_typo_before_any_output(tmp_path, monkeypatch):
    from pvqae import runner

    bad = copy.deepcopy(PARAMS)
    bad["prior"]["stepz"] = bad["prior"].pop("steps")
    out = tmp_path / "executed.ipynb"
    with pytest.raises(ConfigError, match=r"prior\.stepz: unknown key; did you mean steps\?"):
        runner.run_stage("prior", params=bad, executed=out)
    assert not out.exists()


def test_profile_command_refuses_a_typo_and_leaves_params_yaml(tmp_path):
    import shutil

    from pvqae.config import apply_profiles

    p = tmp_path / "params.yaml"
    shutil.copy(load_params.__globals__["PARAMS_FILE"], p)
    before = p.read_text()
    with pytest.raises(ConfigError, match=r"budget\.lamda_max: unknown key"):
        apply_profiles([], sets=["budget.lamda_max=2.0"], path=p, validate=Params.from_dict)
    assert p.read_text() == before

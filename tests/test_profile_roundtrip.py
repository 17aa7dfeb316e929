"""`python -m pvqae profile` rewrites params.yaml round-trip: comments, key order and layout stay,
only the values the overlays / --set settings change are rewritten, and the values are those of
a plain deep merge (what the stages read with yaml.safe_load)."""

from __future__ import annotations

import shutil

import pytest
import yaml

from pvqae.config import PROFILE_HEADER, apply_profiles, deep_merge, load_yaml, profile_path, set_dotted
from pvqae.paths import REPO_ROOT

ORIGINAL = (REPO_ROOT / "params.yaml").read_text()


def _comments(text: str) -> set[str]:
    """Text after '#' of every comment line and inline comment."""
    return {ln.split("#", 1)[1].strip() for ln in text.splitlines() if "#" in ln}


def _without_header(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if PROFILE_HEADER not in ln]


def _plain(params: dict, names: list[str]) -> dict:
    """The old semantics: deep_merge of the overlays, ``profile`` = the size profile's name."""
    for n in names:
        params = deep_merge(params, load_yaml(profile_path(n)))
        if profile_path(n).parent.name == "size":
            params["profile"] = n
    return params


@pytest.fixture
def params_file(tmp_path):
    p = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", p)
    return p


def test_profiles_keep_comments_and_layout_and_values(params_file):
    expected = yaml.safe_load(ORIGINAL)
    for names in (["tiny"], ["default"], ["cpu", "mtsd"], ["default", "synthetic"]):
        got = apply_profiles(names, path=params_file)
        text = params_file.read_text()
        expected = _plain(expected, names)
        assert _comments(ORIGINAL) <= _comments(text), f"comments lost after {names}"
        assert yaml.safe_load(text) == got == expected, f"values differ after {names}"
        if names == ["cpu", "mtsd"]:  # flow-style lists replaced by the overlay stay flow style
            assert "seeds: [0, 1, 2]" in text and "  ch_mult: [1, 1, 2, 2, 4]" in text
            assert text.count(PROFILE_HEADER) == 0  # params.yaml has its own header comment
    assert _without_header(params_file.read_text()) == _without_header(ORIGINAL)
    assert params_file.read_text().endswith(ORIGINAL.splitlines()[-1] + "\n")
    assert [p.name for p in params_file.parent.iterdir()] == ["params.yaml"]  # no temp file left


def test_set_changes_only_that_value(params_file):
    before = params_file.read_text()
    got = apply_profiles([], sets=["data.entropy.level=3"], path=params_file)
    changed = [(a, b) for a, b in zip(before.splitlines(), params_file.read_text().splitlines()) if a != b]
    assert changed == [("    level: 2", "    level: 3")]
    assert len(before.splitlines()) == len(params_file.read_text().splitlines())
    expected = yaml.safe_load(before)
    set_dotted(expected, "data.entropy.level", 3)
    assert got == expected == yaml.safe_load(params_file.read_text())


def test_set_new_keys_go_into_their_section(params_file):
    sets = ["model.new_key=1.0e-5", "data.synthetic.extra=[1, 2]", "newsection.a.b=null"]
    got = apply_profiles([], sets=sets, path=params_file)
    text = params_file.read_text()
    expected = yaml.safe_load(ORIGINAL)
    for s in sets:
        k, v = s.split("=")
        set_dotted(expected, k, yaml.safe_load(v))
    assert got == expected == yaml.safe_load(text)
    assert got["model"]["new_key"] == 1e-5
    # appended at the end of its section, before the blank line that closes it
    assert "  decoder_attention: false\n  new_key: 1.0e-05\n\npretrain:" in text
    assert "    extra: [1, 2]\n\ninput:" in text
    assert text.endswith("newsection:\n  a:\n    b: null\n")
    assert _comments(ORIGINAL) <= _comments(text)


def test_header_written_once_when_the_file_has_none(params_file):
    body = "".join(ln for ln in ORIGINAL.splitlines(keepends=True)[2:])  # drop the file's own header
    params_file.write_text(body)
    apply_profiles(["tiny"], path=params_file)
    apply_profiles(["default"], sets=["pretrain.lr=0.0004"], path=params_file)
    text = params_file.read_text()
    assert text.splitlines()[0] == f"# {PROFILE_HEADER}" and text.count(PROFILE_HEADER) == 1
    assert text.splitlines()[1:] == body.splitlines()

"""params.yaml on disk: reading it, profile overlays, dotted keys and ``--set`` overrides
(the typed, strict view of its contents is :mod:`pvqae.settings`).

``params.yaml`` holds the default run (the synthetic dataset on 2 CPU cores). Profiles are
overlays in ``profiles/`` that change values only, never code paths:

- ``profiles/size/{default,tiny,cpu,paper}.yaml``: model size, steps, image size...
- ``profiles/data/{synthetic,mtsd,mvtec_bottle,mvtec,btad,folder}.yaml``: which dataset.

All overlays of a group set the same keys, so applying any overlay after any other gives the
same ``params.yaml`` (``python -m pvqae profile tiny``; tests check the key sets).
The file is rewritten round-trip (ruamel.yaml): its comments and layout stay, only changed values
change.
"""

from __future__ import annotations

import copy
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.emitter import RoundTripEmitter
from ruamel.yaml.error import CommentMark
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.tokens import CommentToken

from pvqae.paths import REPO_ROOT

PARAMS_FILE = REPO_ROOT / "params.yaml"
PROFILE_DIR = REPO_ROOT / "profiles"
PROFILE_GROUPS = ("size", "data", "input")


def load_yaml(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def load_params(path: Path | None = None) -> dict:
    """The whole params.yaml."""
    path = Path(path or PARAMS_FILE)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run from a checkout of the pvqae repository")
    return load_yaml(path)


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
        out[k.strip()] = parse_value(v)
    return out


def parse_value(text: str) -> Any:
    """A command-line value read as YAML, except that ``1e-6`` is a float (YAML 1.1 reads an
    exponent without a dot as a string)."""
    value = yaml.safe_load(text)
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        value = float(value)
    return value


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class _Representer(RoundTripRepresenter):
    """ruamel's round-trip writer, but new values are spelled so that PyYAML (``yaml.safe_load``,
    which the stages use) reads them back the same: ``null`` rather than an empty value, and
    ``1.0e-05`` rather than ``1e-05`` (a string to YAML 1.1)."""

    def represent_none(self, data):
        return self.represent_scalar("tag:yaml.org,2002:null", "null")

    def represent_float(self, data):
        node = super().represent_float(data)
        if "e" in node.value and "." not in node.value:
            node.value = node.value.replace("e", ".0e", 1)
        return node


_Representer.add_representer(type(None), _Representer.represent_none)
_Representer.add_representer(float, _Representer.represent_float)


class _Emitter(RoundTripEmitter):
    """Puts an inline comment that a longer new value overruns two spaces after it (ruamel: one),
    as params.yaml does."""

    def write_comment(self, comment, pre=False):
        if not pre and not comment.value.startswith("\n") and comment.start_mark.column <= self.column:
            comment.start_mark = CommentMark(self.column + 2)
        super().write_comment(comment, pre)


def _same(a, b) -> bool:
    """Equal and of the same kind (so 1 does not stand in for 1.0 or True)."""
    return a == b and all(isinstance(a, t) == isinstance(b, t) for t in (bool, float))


def _inline_comment(m: CommentedMap, k):
    """The comment on the line of ``m[k]`` (None when there is none, or only blank lines follow)."""
    tok = (m.ca.items.get(k) or [None] * 3)[2]
    return tok if tok is not None and not tok.value.startswith("\n") else None


def _inline_comments(m: CommentedMap):
    """Every inline comment of a block mapping and the mappings inside it."""
    for k, v in m.items():
        if (tok := _inline_comment(m, k)) is not None:
            yield tok
        if isinstance(v, CommentedMap):
            yield from _inline_comments(v)


def _last_entry(m: CommentedMap) -> tuple[CommentedMap, Any]:
    """(mapping, key) of the last line of a block mapping, descending into nested block mappings."""
    k = next(reversed(m))
    v = m[k]
    if isinstance(v, CommentedMap) and v and not v.fa.flow_style():
        return _last_entry(v)
    return m, k


def _as_rt(v):
    """A new value for the document: dicts become CommentedMap (so a new section can carry the
    blank line that closes its parent), lists of scalars are written in flow style like the file's."""
    if isinstance(v, dict):
        return CommentedMap((k, _as_rt(x)) for k, x in v.items())
    if isinstance(v, list):
        seq = CommentedSeq(_as_rt(x) for x in v)
        if not any(isinstance(x, (dict, list)) for x in v):
            seq.fa.set_flow_style()
        return seq
    return v


class _RoundTrip:
    """params.yaml as a ruamel.yaml round-trip document (comments, key order, flow style and
    quotes kept), changed value by value with the semantics of :func:`deep_merge` / :func:`set_dotted`."""

    def __init__(self, text: str):
        self.yaml = YAML()
        self.yaml.Representer, self.yaml.Emitter = _Representer, _Emitter
        self.yaml.width = 4096  # never re-wrap long lines
        self.yaml.preserve_quotes = True
        self.doc = self.yaml.load(text) or CommentedMap()
        cols = [t.start_mark.column for t in _inline_comments(self.doc)]
        # the column most inline comments start at (the smallest of equally common ones)
        self.comment_col = max(sorted(set(cols)), key=cols.count) if cols else 0

    def merge(self, overlay: dict, m: CommentedMap | None = None) -> None:
        """:func:`deep_merge` of ``overlay`` into the document, in place."""
        m = self.doc if m is None else m
        for k, v in overlay.items():
            if isinstance(v, dict) and isinstance(m.get(k), dict):
                self.merge(v, m[k])
            else:
                self.put(m, k, v)

    def set_dotted(self, dotted: str, value: Any) -> None:
        """:func:`set_dotted` on the document; missing sections are added in one piece."""
        m, keys = self.doc, dotted.split(".")
        while len(keys) > 1 and keys[0] in m:
            m = m[keys.pop(0)]
        for k in reversed(keys[1:]):
            value = {k: value}
        self.put(m, keys[0], value)

    def put(self, m: CommentedMap, k, v) -> None:
        """``m[k] = v`` keeping the layout: an equal value is left as written (``1.0e-5`` stays),
        a list refills the list in place (flow style and its comment stay), and a new key goes at
        the end of its section, above the blank lines/comments that close the section."""
        cur = m.get(k)
        if k in m and _same(cur, v):
            return
        tok = _inline_comment(m, k)
        if tok is not None and tok.start_mark.column > self.comment_col:
            # pushed right by an earlier long value: back to the usual column (the emitter pushes
            # it again if the new value is long too), so that going back restores the file exactly
            tok.start_mark = CommentMark(self.comment_col)
        if isinstance(cur, CommentedSeq) and isinstance(v, list):
            cur[:] = [_as_rt(x) for x in v]
        elif k in m or not m:
            m[k] = _as_rt(v)
        else:
            end_m, end_k = _last_entry(m)
            m[k] = _as_rt(v)
            tok = (end_m.ca.items.get(end_k) or [None] * 3)[2]
            if tok is not None and "\n" in tok.value:
                line, rest = tok.value.split("\n", 1)
                if rest:  # blank lines / comment lines below the old last entry go below the new one
                    tok.value = line + "\n"
                    new_m, new_k = _last_entry(m)
                    new_m.ca.items.setdefault(new_k, [None] * 4)[2] = CommentToken("\n" + rest, CommentMark(0))

    def dump(self) -> str:
        buf = io.StringIO()
        self.yaml.dump(self.doc, buf)
        return buf.getvalue()


PROFILE_HEADER = "Written by `python -m pvqae profile`; the committed file is the default profile."


def apply_profiles(names: list[str], sets: list[str] | None = None, path: Path | None = None,
                   validate: Callable[[dict], object] | None = None) -> dict:
    """Merge the named overlays (and ``key=value`` settings, YAML-parsed) into params.yaml.

    The values are those of :func:`deep_merge` / :func:`set_dotted` on the plain dict (returned);
    the file is rewritten round-trip (ruamel.yaml) so that its comments, key order and layout
    stay and only changed values change. Written atomically, after checking that PyYAML reads
    the new text back as exactly the returned dict, and after ``validate(params)`` (e.g. the
    strict :meth:`pvqae.settings.Params.from_dict`) has accepted it."""
    path = Path(path or PARAMS_FILE)
    params = load_params(path)
    rt = _RoundTrip(path.read_text())
    for n in names:
        overlay = load_yaml(profile_path(n))
        params = deep_merge(params, overlay)
        rt.merge(overlay)
        if profile_path(n).parent.name == "size":
            params["profile"] = n
            if "profile" in rt.doc:
                rt.put(rt.doc, "profile", n)
            else:
                rt.doc.insert(0, "profile", n)
    for k, v in parse_overrides(sets).items():
        set_dotted(params, k, v)
        rt.set_dotted(k, v)
    if not (rt.doc.ca.comment and rt.doc.ca.comment[1]):  # the file has no header comment of its own
        rt.doc.yaml_set_start_comment(PROFILE_HEADER)
    if validate is not None:
        validate(params)
    text = rt.dump()
    if yaml.safe_load(text) != params:
        raise RuntimeError(f"round-trip rewrite of {path} would not read back as the merged params")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return params

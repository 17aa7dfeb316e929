"""The base of every typed config: a frozen dataclass read strictly from a params section.

A typo in params.yaml must never run the default silently, so :meth:`Config.from_dict`
rejects an unknown key with an error naming the key, its section and the closest valid key
(``budget.lamda_max: unknown key; did you mean lambda_max?``), checks value types, turns
YAML lists into tuples for tuple fields and builds nested sections recursively. Missing keys
take the dataclass default: each config class is the only home of its defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, ClassVar, Mapping

from pvqae.errors import PVQAEError


class ConfigError(PVQAEError, ValueError):
    """A params.yaml value or key that cannot be used; the message names the dotted key."""


def suggest(key: str, valid: typing.Iterable[str]) -> str:
    """``" did you mean X?"`` for the closest valid key, or the list of valid keys."""
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f" did you mean {close[0]}?" if close else f" valid keys: {', '.join(valid)}"


def _types_of(hint) -> tuple:
    """The runtime types a value of ``hint`` may have (None for Optional)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for a in typing.get_args(hint) for t in _types_of(a))
    if hint is type(None) or hint is None:
        return (type(None),)
    if origin is not None:
        return (origin,)
    return (hint,) if isinstance(hint, type) else (object,)


def _name(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _coerce(key: str, value: Any, hint) -> Any:
    """Check ``value`` against the field type ``hint``; lists become tuples, ints become floats."""
    allowed = _types_of(hint)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{key}: null is not allowed (expected {_name(hint)})")
    for t in allowed:
        if isinstance(t, type) and dataclasses.is_dataclass(t) and issubclass(t, Config):
            return t.from_dict(value, key)
    if tuple in allowed and isinstance(value, (list, tuple)):
        return _coerce_items(key, value, hint)
    if isinstance(value, bool) and bool not in allowed and object not in allowed:
        raise ConfigError(f"{key}: expected {_name(hint)}, got the boolean {value!r}")
    if float in allowed and isinstance(value, int) and not isinstance(value, bool) and int not in allowed:
        return float(value)
    if object in allowed or isinstance(value, tuple(t for t in allowed if isinstance(t, type))):
        return value
    raise ConfigError(f"{key}: expected {_name(hint)}, got {type(value).__name__} {value!r}")


def _coerce_items(key: str, value, hint) -> tuple:
    """Elements of a ``tuple[X, ...]`` / ``tuple[X, Y]`` field, each checked as its type."""
    tup = next((h for h in ([hint] + list(typing.get_args(hint))) if typing.get_origin(h) is tuple), None)
    args = typing.get_args(tup) if tup is not None else ()
    if not args:
        return tuple(value)
    if len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],) * len(value)
    elif len(args) != len(value):
        raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)} ({list(value)})")
    return tuple(_coerce(f"{key}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, args)))


@dataclasses.dataclass(frozen=True)
class Config:
    """Frozen, strictly read config section; subclasses are dataclasses with a comment per field."""

    SECTION: ClassVar[str] = ""  # the dotted params.yaml section, for error messages

    @classmethod
    def from_dict(cls, d: Mapping | None, section: str | None = None, *, forbid: tuple[str, ...] = ()):
        """Build from a params mapping; unknown keys (and the ``forbid`` ones, set elsewhere)
        are a :class:`ConfigError` naming ``<section>.<key>`` and the closest valid key."""
        section = cls.SECTION if section is None else section  # "" for the top level
        prefix = f"{section}." if section else ""
        if d is None:
            d = {}
        if isinstance(d, cls):
            return d
        if not isinstance(d, Mapping):
            raise ConfigError(f"{section or 'params'}: expected a mapping of keys, got {type(d).__name__} {d!r}")
        hints = typing.get_type_hints(cls)
        valid = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in forbid]
        kw = {}
        for k, v in d.items():
            if k not in valid:
                why = "set from another section" if k in forbid else "unknown key;"
                raise ConfigError(f"{prefix}{k}: {why}{suggest(str(k), valid)}")
            kw[k] = _coerce(f"{prefix}{k}", v, hints[k])
        try:
            return cls(**kw)
        except (TypeError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"{section or 'params'}: {e}") from e

    def to_dict(self) -> dict:
        """Plain, YAML/JSON-ready dict (tuples as lists, nested sections as dicts)."""
        def plain(v):
            if isinstance(v, Config):
                return v.to_dict()
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            return v

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes):
        """A copy with ``changes`` (frozen dataclasses are never edited in place)."""
        return dataclasses.replace(self, **changes)

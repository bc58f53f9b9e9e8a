"""The base of every method's config: a frozen dataclass with ``to_dict`` / ``from_dict`` and field checks.

A config is plain data (ints, floats, bools, strings, None, tuples and nested configs), so a recipe can
hold it as YAML/JSON. ``from_dict`` rejects unknown keys and rebuilds nested configs from their dicts;
``__post_init__`` checks that nested config fields hold configs of their declared class, and each config
validates its own fields (``validate``) with the ``check_*`` helpers, raising ``ValueError`` naming the
field and the fix.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from typing import Any, Self

__all__ = [
    "MethodConfig",
    "check_bool",
    "check_choice",
    "check_positive_int",
    "check_range",
]


def _nested_config_type(hint: Any) -> type[MethodConfig] | None:
    """The MethodConfig class inside ``hint`` (``X`` or ``X | None``), else None."""
    candidates = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for c in candidates:
        if inspect.isclass(c) and issubclass(c, MethodConfig):
            return c
    return None


@functools.cache
def _nested_fields(cls: type) -> dict[str, type[MethodConfig]]:
    """Field name -> declared config class, for the fields of ``cls`` that hold a nested config (cached per
    class: resolving the type hints costs more than building a config, which layers do in forward)."""
    hints = typing.get_type_hints(cls)
    nested = {f.name: _nested_config_type(hints[f.name]) for f in dataclasses.fields(cls)}
    return {name: c for name, c in nested.items() if c is not None}


class MethodConfig:
    """Mixin for the frozen dataclass configs of methods: dict round trip with nested configs and tuples.

    Subclasses validate their own fields in ``validate()`` (called after the nested-config check).
    """

    def __post_init__(self) -> None:
        for name, cls in _nested_fields(type(self)).items():
            value = getattr(self, name)
            if value is not None and not issubclass(type(value), cls):
                raise ValueError(
                    f"{type(self).__name__}.{name} must be a {cls.__name__}, got {type(value).__name__}"
                )
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and the fix if a field is out of range (default: none)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the fields (nested configs as dicts, tuples as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, MethodConfig):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` listing the known ones."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}.from_dict needs a dict, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown keys {unknown}; known keys are {sorted(fields)}")
        nested = _nested_fields(cls)
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name in nested and isinstance(value, dict):
                value = nested[name].from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)


def check_positive_int(owner: str, name: str, value: object) -> None:
    """Raise ValueError unless ``value`` is an int > 0 (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")


def check_bool(owner: str, name: str, value: object) -> None:
    """Raise ValueError unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{owner}.{name} must be a bool, got {value!r}")


def check_range(
    owner: str,
    name: str,
    value: object,
    lo: float,
    hi: float,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """Raise ValueError unless ``value`` is a real number in the interval (open ends as flagged)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"{owner}.{name} must be a number in {interval}, got {value!r}")


def check_choice(owner: str, name: str, value: object, choices: tuple[object, ...]) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {list(choices)}, got {value!r}")

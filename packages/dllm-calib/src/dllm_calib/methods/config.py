"""Shared machinery of the method configs: frozen dataclasses with ``to_dict`` / ``from_dict``.

A config is plain data (ints, floats, bools, strings, None, tuples and nested configs), so a recipe can
hold it as YAML/JSON. ``from_dict`` rejects unknown keys and rebuilds nested configs from their dicts;
each config validates itself in ``__post_init__`` and raises ``ValueError`` naming the field and the fix.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Self

__all__ = ["MethodConfig", "check_choice", "check_positive_int", "check_range"]


def _nested_config_type(hint: Any) -> type[MethodConfig] | None:
    """The MethodConfig class inside ``hint`` (``X`` or ``X | None``), else None."""
    candidates = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for c in candidates:
        if isinstance(c, type) and issubclass(c, MethodConfig):
            return c
    return None


class MethodConfig:
    """Mixin for frozen dataclass configs: dict round trip with nested configs and tuples."""

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
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown keys {unknown}; known keys are {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            nested = _nested_config_type(hints[name])
            if nested is not None and isinstance(value, dict):
                value = nested.from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)


def check_positive_int(owner: str, name: str, value: object) -> None:
    """Raise ValueError unless ``value`` is an int > 0 (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")


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

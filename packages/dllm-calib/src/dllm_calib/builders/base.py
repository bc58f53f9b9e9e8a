"""The builder registry: every builder is a validated, frozen config dataclass with a ``build`` method.

``BUILDERS`` maps a name ("plain", "random", "mcs", "tmas") to its config class, so a recipe can say
``{"builder": "mcs", "gamma": 0.25}`` and get ``builder_config("mcs", gamma=0.25)``. Configs validate their
fields on construction and serialise to plain dicts for the set's provenance.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from dllm_sampler import DiffusionLM

from dllm_calib.sources import TextSource
from dllm_calib.state import CalibrationSet

__all__ = ["BUILDERS", "BuilderConfig", "build_calibration_set", "builder_config", "register_builder"]


class BuilderConfig(ABC):
    """Base of the builder configs (frozen dataclasses); ``name`` is the registry key."""

    name: ClassVar[str]

    @abstractmethod
    def build(self, model: DiffusionLM, source: TextSource | str | Path) -> CalibrationSet:
        """Build the calibration set for ``model`` from ``source`` (a `TextSource`, name or path)."""

    def to_dict(self) -> dict[str, Any]:
        """The config's fields as a JSON-ready dict (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.metadata.get("provenance", True):
                value = getattr(self, f.name)
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


BUILDERS: dict[str, type[BuilderConfig]] = {}
"""Registry: builder name -> config class."""

_C = TypeVar("_C", bound=type[BuilderConfig])


def register_builder(cls: _C) -> _C:
    """Class decorator adding a config class to `BUILDERS` under its ``name``."""
    if cls.name in BUILDERS and BUILDERS[cls.name] is not cls:
        raise ValueError(
            f"a builder named {cls.name!r} is already registered ({BUILDERS[cls.name].__name__})"
        )
    BUILDERS[cls.name] = cls
    return cls


def builder_config(name: str, **params: Any) -> BuilderConfig:
    """Instantiate (and so validate) the config of builder ``name`` with ``params``."""
    if name not in BUILDERS:
        raise ValueError(f"unknown calibration builder {name!r}; available: {sorted(BUILDERS)}")
    cls = BUILDERS[name]
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - known)
    if unknown:
        raise TypeError(f"builder {name!r} has no parameters {unknown}; its parameters are {sorted(known)}")
    return cls(**params)


def build_calibration_set(
    config: BuilderConfig | str, model: DiffusionLM, source: TextSource | str | Path, **params: Any
) -> CalibrationSet:
    """Build a set from a config, or from a builder name plus ``params``."""
    if isinstance(config, str):
        config = builder_config(config, **params)
    elif params:
        raise TypeError(
            "pass parameters either in the config object or as keyword arguments with a name, not both"
        )
    return config.build(model, source)


def check_int(config: object, name: str, minimum: int) -> None:
    """Raise ValueError unless ``config.<name>`` is an int >= ``minimum``."""
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{type(config).__name__}.{name} must be an int >= {minimum}, got {value!r}")

"""Shipped recipes (YAML package data next to this module) and `load_recipe`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from dllm_bench.recipes.schema import Recipe

__all__ = ["MOE_VARIANTS", "available_recipes", "load_recipe", "moe_variant"]

MOE_VARIANTS = {"dllmquant": "dllmquant-moe"}
"""Shipped recipes whose steps edit the dense block topology -> the shipped recipe that applies their
method to mixture-of-experts models (`moe_variant`)."""


def available_recipes() -> list[str]:
    """Names of the recipes shipped with dllm-bench (``recipes/<name>.yaml``), sorted."""
    folder = resources.files(__package__)
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str | Path, scheme: str | None = None) -> Recipe:
    """A shipped recipe by name (``"gptq"``, ``"dllmquant"``, ...) or a YAML file by path.

    ``scheme`` optionally moves it to another bit setting (``"W3A16"``, ``"W8A8"``, ``"W4A16g64"``).

    Raises:
        FileNotFoundError: neither a shipped name nor an existing file (lists the shipped names).
        ValueError: the file is not a valid recipe (pydantic's message names the field).
    """
    shipped = available_recipes()
    if isinstance(name_or_path, str) and name_or_path in shipped:
        where = f"recipe {name_or_path!r}"
        text = resources.files(__package__).joinpath(f"{name_or_path}.yaml").read_text(encoding="utf-8")
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"no recipe named {str(name_or_path)!r} and no such file; shipped recipes: "
                f"{', '.join(shipped)}"
            )
        where, text = str(path), path.read_text(encoding="utf-8")
    recipe = Recipe.from_yaml(text, where)
    return recipe if scheme is None else recipe.with_scheme(scheme)


def moe_variant(name: str) -> str | None:
    """The shipped recipe that runs ``name``'s method on a mixture-of-experts model, or None when ``name``
    runs on one as it is (or is not a shipped recipe): ``dllmquant`` -> ``dllmquant-moe`` (TMAS + CGQ
    without the QuaRot, IA-AQ and K-quantization steps, which edit dense blocks)."""
    return MOE_VARIANTS.get(name)

"""Quantization recipes: calibration, ordered steps, bit setting, ignore list and seed (YAML or Python).

``load_recipe("dllmquant")`` reads a shipped recipe (``available_recipes()`` lists them),
``load_recipe("my.yaml", scheme="W3A16")`` a file at another bit setting; ``Recipe(...)`` builds one in
Python and ``recipe.to_yaml()`` writes it back.
"""

from dllm_bench.recipes.loader import MOE_VARIANTS, available_recipes, load_recipe, moe_variant
from dllm_bench.recipes.schema import IGNORE_ALIASES, CalibrationSpec, Recipe, Step
from dllm_bench.recipes.scheme import (
    ACTIVATION_BITS,
    SCHEME_LABELS,
    Scheme,
    SchemeLabel,
    WeightScheme,
    parse_scheme,
)

__all__ = [
    "ACTIVATION_BITS",
    "IGNORE_ALIASES",
    "MOE_VARIANTS",
    "SCHEME_LABELS",
    "CalibrationSpec",
    "Recipe",
    "Scheme",
    "SchemeLabel",
    "Step",
    "WeightScheme",
    "available_recipes",
    "load_recipe",
    "moe_variant",
    "parse_scheme",
]

"""Which block linears a recipe quantizes, and the checks that a recipe fits a model before any work.

Only block linears (q, k, v, o, gate, up, down of every block) are ever quantized; the LM head and the
embedding stay in floating point (the aliases ``head`` and ``embedding`` of the ignore list name them).
Ignore entries are exact qualified names (``model.layers.0.mlp.down_proj``), regular expressions matched
against the whole name (``re:.*\\.0\\..*``), or the aliases.
"""

from __future__ import annotations

import re
import warnings

from dllm_sampler import DiffusionLM, Topology

from dllm_bench.recipes import IGNORE_ALIASES, Recipe

__all__ = ["check_fits", "ignored_linears"]


def ignored_linears(recipe: Recipe, dlm: DiffusionLM) -> set[str]:
    """The block linears (topology names) the recipe's ignore list leaves in floating point.

    Raises:
        ValueError: an exact name that is not a module of the model (a typo would silently quantize it).
    """
    linears = dlm.topology.linear_names()
    modules = {name for name, _ in dlm.model.named_modules()}
    out: set[str] = set()
    for entry in recipe.ignore:
        if entry in IGNORE_ALIASES:
            continue
        if entry.startswith("re:"):
            pattern = re.compile(entry[3:])
            hits = {n for n in linears if pattern.fullmatch(n)}
            if not hits:
                warnings.warn(f"ignore pattern {entry!r} matches no block linear", stacklevel=2)
            out |= hits
        elif entry in linears:
            out.add(entry)
        elif entry not in modules:
            raise ValueError(
                f"ignore entry {entry!r} is not a module of this {dlm.arch} model; block linears look like "
                f"{linears[0]!r} (use 're:<pattern>' for a regular expression)"
            )
    return out


def check_fits(recipe: Recipe, dlm: DiffusionLM, ignored: set[str]) -> None:
    """Raise ``ValueError`` (naming the layer and the fix) if the scheme or a step cannot apply to ``dlm``.

    Checks group sizes against every quantized linear's input width, that every step supports a
    mixture-of-experts model (``Method.moe``) when the model is one, then each planned step's own model
    check (e.g. QuaRot's Hadamard orders).
    """
    spec = recipe.scheme.weights.spec()
    if spec.granularity == "group":
        assert spec.group_size is not None
        for name in dlm.topology.linear_names():
            width = dlm.model.get_submodule(name).in_features
            if name not in ignored and width % spec.group_size:
                raise ValueError(
                    f"group_size {spec.group_size} does not divide the input width {width} of {name}; pick "
                    "a group size that divides every layer width (e.g. --scheme "
                    f"{recipe.scheme.label.split('g')[0]}g64), or ignore the layer"
                )
    dense_only = [m.name for m, _ in recipe.plan() if not m.moe]
    if dense_only and not isinstance(dlm.topology, Topology):
        raise ValueError(
            f"step(s) {dense_only} of recipe {recipe.name!r} need the dense block topology and do not "
            f"support the mixture-of-experts {dlm.spec.display_name}; use weight quantizers with dynamic "
            "activations (e.g. --recipe gptq, rtn or dllmquant-moe) and keep attention in float with a "
            "KV16 scheme (e.g. W8A8KV16)"
        )
    for method, config in recipe.plan():
        method.check_model(config, dlm)

"""The method registry: every quantization method, weight or activation, described as data.

A `Method` record says everything a pipeline needs to run a method without knowing it by name:

* ``stage``: when it runs (`Stage`, in execution order);
* ``config_cls``: its config (a `MethodConfig`), built from a recipe's parameters by ``bind``;
* ``needs(config)``: the statistics it collects (which collector, at which linear roles), whether the
  calibration states must carry the float model's confidence, and which linears must still be plain
  ``nn.Linear`` modules when it runs (scale folding);
* ``writes(config)``: what it changes: weights, and linears wrapped by run-time modules;
* ``check(config, weight_spec, activation_bits)``: raises ``ValueError`` if the method cannot run at a
  bit setting (its spec limits live in one place, next to the method); ``check_model(config, dlm)`` does
  the same for a model's sizes, before any work;
* ``apply(context, config)``: does the work on a `MethodContext` (the whole model or one block) and
  returns log rows.

The packages that own methods register them (``dllm_weightquant.methods``, ``dllm_actquant.methods``),
announced to the registry as entry points of the group ``dllmq.methods``: a package of your own adds
methods the same way (one entry point naming a module that calls `register_method`), or a script calls
`register_method` directly.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Any

from dllm_kernels import QuantSpec
from dllm_sampler import LINEAR_ROLES, DiffusionLM

from dllm_calib.collectors.base import Collector
from dllm_calib.methods.config import MethodConfig
from dllm_calib.methods.context import LogRow, MethodContext

__all__ = [
    "ENTRY_POINT_GROUP",
    "BindContext",
    "Method",
    "Needs",
    "Stage",
    "Statistic",
    "Writes",
    "bind_fields",
    "get_method",
    "register_method",
    "registered",
    "registered_methods",
    "unregister_method",
]

ENTRY_POINT_GROUP = "dllmq.methods"
"""Entry-point group whose modules register methods when imported."""


class Stage(StrEnum):
    """When a method runs in the layer-wise pipeline; the members are in execution order.

    * ``global``: whole-model equivalence transforms (QuaRot, SmoothQuant, DuQuant), before the block
      loop, on statistics of the float model;
    * ``block_transform``: per block, equivalence transforms searched on the block's inputs through the
      already quantized blocks (AWQ);
    * ``act_calibration``: per block, activation quantizers calibrated before the weights are quantized
      (IA-AQ's V quantizer; attached when the block's other steps are done);
    * ``quantizer``: per block, the weight quantizer (exactly one per recipe);
    * ``activations``: per block, dynamic activation quantizers wrapped around the linears.
    """

    GLOBAL = "global"
    BLOCK_TRANSFORM = "block_transform"
    ACT_CALIBRATION = "act_calibration"
    QUANTIZER = "quantizer"
    ACTIVATIONS = "activations"

    @property
    def rank(self) -> int:
        """Position in the execution order (0 = first)."""
        return list(Stage).index(self)


@dataclass(frozen=True)
class Statistic:
    """One statistic a method collects: a collector class observing the ``kind`` tensor (the first input
    or the output) of the block linears with the given roles."""

    collector: type[Collector]
    roles: tuple[str, ...]
    kind: str = "input"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.roles) - set(LINEAR_ROLES))
        if unknown or not self.roles:
            raise ValueError(
                f"Statistic.roles must be a non-empty subset of {LINEAR_ROLES}, got {self.roles}"
            )
        if self.kind not in ("input", "output"):
            raise ValueError(f"Statistic.kind must be 'input' or 'output', got {self.kind!r}")

    def describe(self) -> str:
        """``"HessianCollector(input of q, k, v)"``."""
        return f"{self.collector.__name__}({self.kind} of {', '.join(self.roles)})"


@dataclass(frozen=True)
class Needs:
    """What a configured method needs before it runs.

    Attributes:
        statistics: the statistics it collects on the calibration states (empty: it needs no data).
        confidence: the states must carry the float model's per-token confidence
            (``dllm_calib.score_confidence``).
        plain: linear roles that must still be plain ``nn.Linear`` modules when it runs (it folds scales
            into them), so no earlier step may wrap them.
    """

    statistics: tuple[Statistic, ...] = ()
    confidence: bool = False
    plain: frozenset[str] = frozenset()

    @property
    def calibration(self) -> bool:
        """True when the method reads calibration states at all."""
        return bool(self.statistics) or self.confidence


@dataclass(frozen=True)
class Writes:
    """What a configured method changes.

    Attributes:
        weights: linear roles whose weight values it changes.
        wraps: linear roles it wraps in run-time modules (online rotations, activation or output
            quantizers): after it, those names no longer hold plain ``nn.Linear`` modules.
    """

    weights: frozenset[str] = frozenset()
    wraps: frozenset[str] = frozenset()


@dataclass(frozen=True)
class BindContext:
    """The recipe facts a config may depend on.

    Attributes:
        seed: the recipe seed (fills a config's ``seed`` field when the recipe leaves it out).
        activation_bits: the scheme's activation width (4 or 8), None when activations stay in float.
        attention_bits: the width of the attention activations (Q, K after RoPE, V), None when they stay
            in float.
    """

    seed: int = 0
    activation_bits: int | None = None
    attention_bits: int | None = None


def _no_needs(config: Any) -> Needs:
    return Needs()


def _no_writes(config: Any) -> Writes:
    return Writes()


def _fits_any(config: Any, weight_spec: QuantSpec, activation_bits: int | None) -> None:
    return None


def _fits_any_model(config: Any, dlm: DiffusionLM) -> None:
    return None


def bind_fields(config_cls: type[MethodConfig], params: dict[str, Any], context: BindContext) -> Any:
    """``config_cls.from_dict(params)`` with the recipe seed filling a ``seed`` field the params omit."""
    fields = {f.name for f in dataclasses.fields(config_cls)}  # type: ignore[arg-type]
    if "seed" in fields and "seed" not in params:
        params = {**params, "seed": context.seed}
    return config_cls.from_dict(params)


@dataclass(frozen=True)
class Method:
    """A registered method (see the module docstring).

    Attributes:
        name: the name recipes use (lower case).
        stage: when it runs.
        config_cls: its config class.
        apply: ``apply(context, config) -> list[LogRow]``, the work on a `MethodContext`.
        summary: one line for listings (``dllmq methods``).
        needs: ``needs(config) -> Needs``.
        writes: ``writes(config) -> Writes``.
        check: ``check(config, weight_spec, activation_bits)``; raises ``ValueError`` (naming the setting
            that fits) when the method cannot run at that bit setting.
        check_model: ``check_model(config, dlm)``; raises ``ValueError`` when the model's sizes do not fit.
        bind: ``bind(params, context) -> config`` from a recipe step's parameters (default
            `bind_fields`).
        activation_only: the step runs only when the scheme quantizes activations (skipped at A16).
        attention_only: the step runs only when the scheme quantizes the attention activations (skipped at
            A16 and at ``KV16``).
        scheme_default: added with default parameters when the scheme quantizes its width (activations, or
            attention for an ``attention_only`` method) and the recipe lists no step of this method's stage
            and width (the dynamic activation quantizer, the attention quantizer).
        moe: the method also handles mixture-of-experts blocks (fused QKV, routed and shared experts;
            ``dllm_sampler.MoETopology``); transforms written against the dense block topology (norm ->
            q/k/v, gate/up) leave it False and the pipeline refuses them on such models.
    """

    name: str
    stage: Stage
    config_cls: type[MethodConfig]
    apply: Callable[[MethodContext, Any], list[LogRow]]
    summary: str = ""
    needs: Callable[[Any], Needs] = _no_needs
    writes: Callable[[Any], Writes] = _no_writes
    check: Callable[[Any, QuantSpec, int | None], None] = _fits_any
    check_model: Callable[[Any, DiffusionLM], None] = _fits_any_model
    bind: Callable[[dict[str, Any], BindContext], Any] | None = None
    activation_only: bool = False
    attention_only: bool = False
    scheme_default: bool = False
    moe: bool = False

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.lower() or not self.name.replace("_", "").isalnum():
            raise ValueError(
                f"method names are lower-case letters, digits and '_' (recipes name them), got {self.name!r}"
            )
        if not issubclass(self.config_cls, MethodConfig) or not dataclasses.is_dataclass(self.config_cls):
            raise ValueError(
                f"method {self.name!r}: config_cls must be a dataclass deriving from "
                f"dllm_calib.MethodConfig, got {self.config_cls!r}"
            )
        if self.scheme_default and not (self.activation_only or self.attention_only):
            raise ValueError(
                f"method {self.name!r}: a scheme default must be activation_only or attention_only"
            )
        if self.activation_only and self.attention_only:
            raise ValueError(f"method {self.name!r}: activation_only and attention_only exclude each other")

    def runs_at(self, activation_bits: int | None, attention_bits: int | None) -> bool:
        """False when the method's width stays in float at this scheme (its step is then dropped)."""
        if self.activation_only:
            return activation_bits is not None
        if self.attention_only:
            return attention_bits is not None
        return True

    def configure(self, params: dict[str, Any], context: BindContext | None = None) -> Any:
        """The config of this method for a recipe step's ``params`` (validated by the config class).

        Raises:
            ValueError: unknown or invalid parameters (the message names the method).
        """
        if not isinstance(params, dict):
            raise ValueError(f"step {self.name!r}: parameters must be a mapping, got {type(params).__name__}")
        context = context or BindContext()
        try:
            if self.bind is not None:
                return self.bind(params, context)
            return bind_fields(self.config_cls, params, context)
        except (TypeError, ValueError) as err:
            raise ValueError(f"step {self.name!r}: {err}") from err


_METHODS: dict[str, Method] = {}
_plugins_loaded = False
_lock = threading.Lock()


def _load_plugins() -> None:
    """Import every module announced in the ``dllmq.methods`` entry-point group (once)."""
    global _plugins_loaded
    with _lock:
        if _plugins_loaded:
            return
        _plugins_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception as err:
            raise RuntimeError(
                f"the method plugin {point.name!r} ({point.value}) failed to import: {err}; reinstall the "
                "package that provides it or uninstall it"
            ) from err


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry; returns it.

    Raises:
        ValueError: a different method is registered under the same name (pass ``replace=True`` to
            override it on purpose).
    """
    current = _METHODS.get(method.name)
    if current is not None and current != method and not replace:
        raise ValueError(
            f"a method named {method.name!r} is already registered ({current.config_cls.__name__}); choose "
            "another name or pass replace=True"
        )
    _METHODS[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Remove the method ``name`` (KeyError if none is registered)."""
    del _METHODS[name]


@contextmanager
def registered(method: Method) -> Iterator[Method]:
    """``method`` registered for the ``with`` body only (tests, experiments)."""
    register_method(method)
    try:
        yield method
    finally:
        unregister_method(method.name)


def registered_methods() -> dict[str, Method]:
    """Every registered method by name (installed plugins are imported first), sorted by stage and name."""
    _load_plugins()
    return dict(sorted(_METHODS.items(), key=lambda kv: (kv[1].stage.rank, kv[0])))


def get_method(name: str) -> Method:
    """The method registered as ``name`` (case-insensitive).

    Raises:
        ValueError: no such method (lists the registered ones).
    """
    key = name.lower() if isinstance(name, str) else name
    methods = registered_methods()
    if key not in methods:
        raise ValueError(f"unknown method {name!r}; registered methods: {sorted(methods)}")
    return methods[key]

"""The `collect` driver: forward passes over a calibration set with collectors hooked into the model.

`attach_collectors` is a context manager that registers one forward hook per module any collector needs
and removes every hook on exit (also on error). `collect` runs the set through ``model.logits`` in
batches under ``torch.no_grad()`` and returns each collector's results. Hooks only read tensors, so the
model's outputs are unchanged. A NaN/Inf in an observed tensor raises `NonFiniteActivationError` naming
the layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from dllm_calib.batching import Batch, iter_batches
from dllm_calib.collectors.base import Collector, HookPoint
from dllm_calib.confidence import model_device
from dllm_calib.state import CalibrationSet

__all__ = ["CollectionSession", "NonFiniteActivationError", "attach_collectors", "collect", "resolve_targets"]


class NonFiniteActivationError(ValueError):
    """An observed activation holds NaN or Inf."""


def _root_module(model: Any) -> nn.Module:
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module):
        return inner
    if isinstance(model, nn.Module):
        return model
    raise TypeError(f"{type(model).__name__} is not an nn.Module and has no .model nn.Module to hook")


def resolve_targets(model: Any, targets: Sequence[str] | None) -> list[str]:
    """Validate target Linear names (module names under ``model.model``).

    None means ``model.topology.linear_names()`` (every block Linear, LM head excluded).

    Raises:
        ValueError: an unknown name, a non-Linear module, or no targets.
    """
    if targets is None:
        topology = getattr(model, "topology", None)
        if topology is None:
            raise ValueError(
                "targets=None needs model.topology.linear_names(); pass the Linear module names explicitly"
            )
        targets = list(topology.linear_names())
    if isinstance(targets, str):
        targets = [targets]
    names = list(dict.fromkeys(targets))
    if not names:
        raise ValueError("no target Linears given")
    modules = dict(_root_module(model).named_modules())
    for name in names:
        if name not in modules:
            linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
            raise ValueError(f"no module named {name!r} in the model; Linear modules include {linears[:6]}")
        if not isinstance(modules[name], nn.Linear):
            raise ValueError(f"target {name!r} is a {type(modules[name]).__name__}, not an nn.Linear")
    return names


class CollectionSession:
    """The live hooks of `attach_collectors`; `run` feeds one batch through the model."""

    def __init__(self, model: Any, collectors: Sequence[Collector]) -> None:
        self.model = model
        self.collectors = tuple(collectors)
        self.batch: Batch | None = None

    def dispatch(
        self, module_name: str, consumers: dict[str, list[Collector]], inputs: tuple, output: Any
    ) -> None:
        """Forward the hooked module's input/output to the collectors that asked for them."""
        batch = self.batch
        if batch is None:
            return
        for kind, value in (("input", inputs[0] if inputs else None), ("output", output)):
            if kind not in consumers:
                continue
            if not isinstance(value, Tensor):
                raise TypeError(f"the {kind} of {module_name!r} is a {type(value).__name__}, not a tensor")
            tensor = value.detach()
            if not bool(torch.isfinite(tensor).all()):
                raise NonFiniteActivationError(
                    f"non-finite values (NaN/Inf) in the {kind} of layer {module_name!r} on calibration "
                    "states "
                    f"{list(batch.indices)}; check the model weights and dtype (fp16 overflow?) and the "
                    "states"
                )
            point = HookPoint(module_name, kind)  # type: ignore[arg-type]
            for collector in consumers[kind]:
                collector.observe(point, tensor, batch)

    def run(self, batch: Batch) -> Tensor:
        """``begin_batch``, ``model.logits`` on ``batch``, ``end_batch``; returns the logits."""
        for c in self.collectors:
            c.begin_batch(batch)
        self.batch = batch
        try:
            logits = self.model.logits(batch.input_ids, batch.model_attention_mask)
        finally:
            self.batch = None
        for c in self.collectors:
            c.end_batch(batch)
        return logits


@contextmanager
def attach_collectors(
    model: Any, collectors: Sequence[Collector], targets: Sequence[str]
) -> Iterator[CollectionSession]:
    """Register the hooks every collector needs; they are removed when the block exits."""
    names = [c.name for c in collectors]
    if len(set(names)) != len(names):
        raise ValueError(f"collector names must be unique (they key the results), got {names}; pass name=...")
    modules = dict(_root_module(model).named_modules())
    table: dict[str, dict[str, list[Collector]]] = {}
    for c in collectors:
        for point in c.hook_points(targets):
            if point.module not in modules:
                raise ValueError(
                    f"collector {c.name!r} needs module {point.module!r}, which the model does not have"
                )
            table.setdefault(point.module, {}).setdefault(point.kind, []).append(c)
    session = CollectionSession(model, collectors)
    handles = []
    try:
        for name, consumers in table.items():

            def hook(
                _mod: nn.Module, inputs: tuple, output: Any, name: str = name, consumers=consumers
            ) -> None:
                session.dispatch(name, consumers, inputs, output)

            handles.append(modules[name].register_forward_hook(hook))
        yield session
    finally:
        for handle in handles:
            handle.remove()


def collect(
    model: Any,
    calibration_set: CalibrationSet,
    targets: Sequence[str] | None,
    collectors: Sequence[Collector],
    batch_size: int = 8,
) -> dict[str, Any]:
    """Run ``calibration_set`` through ``model`` and return ``{collector.name: collector.results()}``.

    Args:
        model: a ``dllm_sampler.DiffusionLM`` (or anything with ``logits(input_ids, attention_mask)`` and an
            ``nn.Module`` in ``.model``); ``logit_shift`` and ``pad_token_id`` are read when present.
        calibration_set: the states, fed in order, ``batch_size`` at a time (right-padded).
        targets: Linear module names under ``model.model`` for the per-Linear collectors; None means
            ``model.topology.linear_names()``.
        collectors: the statistics to gather (stateful; they accumulate across calls).
        batch_size: states per forward pass.
    """
    if not collectors:
        raise ValueError("collect needs at least one collector")
    names = resolve_targets(model, targets)
    pad = getattr(model, "pad_token_id", None)
    shift = int(getattr(model, "logit_shift", 0) or 0)
    device = model_device(model)
    with torch.no_grad(), attach_collectors(model, collectors, names) as session:
        for batch in iter_batches(
            calibration_set, batch_size, device, pad_token_id=pad or 0, logit_shift=shift
        ):
            session.run(batch)
    return {c.name: c.results() for c in collectors}

"""The `collect` driver: forward passes of a `Feed` with collectors hooked into its unit.

`attach_collectors` is a context manager that registers one forward hook per module any collector needs
(under ``feed.module``) and removes every hook on exit (also on error). `collect` runs every batch of the
feed through ``feed.forward`` under ``torch.no_grad()`` and returns each collector's results. Hooks only
read tensors, so the unit's outputs are unchanged. A NaN/Inf in an observed tensor raises
`NonFiniteActivationError` naming the layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from dllm_calib.batching import Batch
from dllm_calib.collectors.base import Collector, HookPoint
from dllm_calib.feed import Feed

__all__ = ["CollectionSession", "NonFiniteActivationError", "attach_collectors", "collect", "resolve_targets"]


class NonFiniteActivationError(ValueError):
    """An observed activation holds NaN or Inf."""


def resolve_targets(module: nn.Module, targets: Sequence[str]) -> list[str]:
    """Validate target Linear names (qualified names of submodules of ``module``), deduplicated in order.

    Raises:
        ValueError: an unknown name, a non-Linear module, or no targets.
    """
    if isinstance(targets, str):
        targets = [targets]
    names = list(dict.fromkeys(targets))
    if not names:
        raise ValueError("no target Linears given")
    modules = dict(module.named_modules())
    for name in names:
        if name not in modules:
            linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
            raise ValueError(f"no module named {name!r} in the model; Linear modules include {linears[:6]}")
        if not isinstance(modules[name], nn.Linear):
            raise ValueError(f"target {name!r} is a {type(modules[name]).__name__}, not an nn.Linear")
    return names


class CollectionSession:
    """The live hooks of `attach_collectors`; `run` feeds one batch through the unit."""

    def __init__(self, feed: Feed, collectors: Sequence[Collector]) -> None:
        self.feed = feed
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
        """``begin_batch``, ``feed.forward`` on ``batch``, ``end_batch``; returns the unit's output."""
        for c in self.collectors:
            c.begin_batch(batch)
        self.batch = batch
        try:
            output = self.feed.forward(batch)
        finally:
            self.batch = None
        for c in self.collectors:
            c.end_batch(batch)
        return output


@contextmanager
def attach_collectors(
    feed: Feed, collectors: Sequence[Collector], targets: Sequence[str]
) -> Iterator[CollectionSession]:
    """Register the hooks every collector needs; they are removed when the block exits."""
    names = [c.name for c in collectors]
    if len(set(names)) != len(names):
        raise ValueError(f"collector names must be unique (they key the results), got {names}; pass name=...")
    modules = dict(feed.module.named_modules())
    table: dict[str, dict[str, list[Collector]]] = {}
    for c in collectors:
        for point in c.hook_points(targets):
            if point.module not in modules:
                raise ValueError(
                    f"collector {c.name!r} needs module {point.module!r}, which the model does not have"
                )
            table.setdefault(point.module, {}).setdefault(point.kind, []).append(c)
    session = CollectionSession(feed, collectors)
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


def collect(feed: Feed, targets: Sequence[str], collectors: Sequence[Collector]) -> dict[str, Any]:
    """Run every batch of ``feed`` through its unit and return ``{collector.name: collector.results()}``.

    Args:
        feed: the batches and the unit (``dllm_calib.ModelFeed(dlm, calibration_set, batch_size)`` for a
            whole model).
        targets: qualified names of Linears under ``feed.module`` for the per-Linear collectors.
        collectors: the statistics to gather (stateful; they accumulate across calls).
    """
    if not collectors:
        raise ValueError("collect needs at least one collector")
    names = resolve_targets(feed.module, targets)
    with torch.no_grad(), attach_collectors(feed, collectors, names) as session:
        for batch in feed.batches():
            session.run(batch)
    return {c.name: c.results() for c in collectors}

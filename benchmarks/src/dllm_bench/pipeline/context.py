"""The layer-wise pipeline's `dllm_calib.MethodContext`s: the whole model, or the block being quantized.

* `ModelContext` (the global stage) covers every block; its feeds run the float calibration states
  through the blocks one at a time (embedding output in, each block's output on to the next), so no more
  than one block is on the accelerator while a whole-model transform collects its statistics.
* `BlockContext` (the per-block stages) covers the block on the accelerator; its feed holds the block's
  inputs as propagated through the already-quantized blocks before it.

Both collect the actions methods `defer` and run them when the unit's steps are done (`run_deferred`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from dllm_calib import CalibrationSet, ExpertPolicy, Feed
from dllm_kernels import QuantSpec
from dllm_sampler import DiffusionLM

from dllm_bench.pipeline.blocks import BlockRunner, offloaded
from dllm_bench.pipeline.feed import BlockFeed, HiddenCache

__all__ = ["BlockContext", "ModelContext"]


@dataclass
class _Context:
    """What both contexts share (see `dllm_calib.MethodContext` for the meaning of each attribute)."""

    runner: BlockRunner
    cset: CalibrationSet | None
    batch_size: int
    weight_spec: QuantSpec
    ignored: frozenset[str]
    true_sequential: bool
    expert_policy: ExpertPolicy
    _deferred: list[Callable[[], None]] = field(default_factory=list, init=False, repr=False)

    @property
    def dlm(self) -> DiffusionLM:
        return self.runner.dlm

    def defer(self, action: Callable[[], None]) -> None:
        self._deferred.append(action)

    def run_deferred(self) -> None:
        """Run the deferred actions in the order they came (once)."""
        actions, self._deferred = self._deferred, []
        for action in actions:
            action()

    @property
    def reserve_from(self) -> int | None:
        reserve = self.expert_policy.reserve
        return None if self.cset is None or reserve == 0 else len(self.cset) - reserve

    def _require_calibration(self) -> CalibrationSet:
        if self.cset is None:
            raise ValueError(
                "this step needs calibration statistics, but the run has no calibration set (a method whose "
                "registry record declares no statistics read calibration data)"
            )
        return self.cset


@dataclass
class ModelContext(_Context):
    """The whole model (the global stage)."""

    @property
    def blocks(self) -> tuple[int, ...]:
        return tuple(range(len(self.runner.blocks)))

    def feeds(self) -> Iterator[tuple[int, Feed]]:
        cset = self._require_calibration()
        cache = HiddenCache.embed(self.runner, cset, self.batch_size)
        last = len(self.blocks) - 1
        for index in self.blocks:
            with offloaded(self.runner.blocks[index], self.runner.device):
                yield index, BlockFeed(self.runner, index, cache)
                if index < last:
                    cache = cache.propagate(self.runner, index)

    def at_block(self, index: int, cache: HiddenCache | None) -> BlockContext:
        """The context of block ``index`` with its cached inputs, under this run's settings."""
        return BlockContext(
            self.runner,
            self.cset,
            self.batch_size,
            self.weight_spec,
            self.ignored,
            self.true_sequential,
            self.expert_policy,
            index=index,
            cache=cache,
        )


@dataclass
class BlockContext(_Context):
    """The block ``index`` (on the accelerator) and its cached inputs (None without calibration)."""

    index: int = 0
    cache: HiddenCache | None = None

    @property
    def blocks(self) -> tuple[int, ...]:
        return (self.index,)

    def feeds(self) -> Iterator[tuple[int, Feed]]:
        self._require_calibration()
        assert self.cache is not None, "a run with a calibration set caches every block's inputs"
        yield self.index, BlockFeed(self.runner, self.index, self.cache)

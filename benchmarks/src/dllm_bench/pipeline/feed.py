"""The block inputs of the calibration batches, and the `Feed` that runs one block on them.

`HiddenCache` holds, per calibration batch (``dllm_calib.iter_batches`` order and padding), the batch
itself and the hidden states entering the current block (on the CPU: the offloaded copy). `BlockFeed` is a
``dllm_calib.Feed`` whose forward runs only block ``index`` on the cached states of the batch it is handed,
so every library function that collects statistics through a feed (``dllm_calib.collect``,
``dllm_actquant.calibrate_iaaq``) sees the block's inputs propagated through the already-quantized
prefix, one block in memory at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dllm_calib import Batch, CalibrationSet, iter_batches
from torch import Tensor, nn

from dllm_bench.pipeline.blocks import BlockRunner

__all__ = ["BlockFeed", "CachedBatch", "HiddenCache"]

_BATCH_TENSORS = ("input_ids", "attention_mask", "is_masked", "mask_ratio")


@dataclass
class CachedBatch:
    """One calibration batch (CPU tensors) and ``hidden [B, L, D]``, the states entering the current block."""

    batch: Batch
    hidden: Tensor


class HiddenCache:
    """The calibration batches with the hidden states entering one block (CPU tensors)."""

    def __init__(self, batches: list[CachedBatch]) -> None:
        if not batches:
            raise ValueError("the calibration set produced no batch")
        self.batches = batches

    @classmethod
    def embed(cls, runner: BlockRunner, cset: CalibrationSet, batch_size: int) -> HiddenCache:
        """The batches of ``cset`` (as ``dllm_calib.ModelFeed`` forms them) with the embedding output."""
        dlm = runner.dlm
        batches = iter_batches(
            cset, batch_size, "cpu", pad_token_id=dlm.pad_token_id or 0, logit_shift=dlm.logit_shift
        )
        return cls([CachedBatch(b, runner.embed(b.input_ids, b.model_attention_mask).cpu()) for b in batches])

    def propagate(self, runner: BlockRunner, index: int) -> HiddenCache:
        """The cache of the next block: every batch run through block ``index`` as it is now."""
        return HiddenCache(
            [
                CachedBatch(
                    c.batch,
                    runner.run(index, c.hidden, c.batch.input_ids, c.batch.model_attention_mask).cpu(),
                )
                for c in self.batches
            ]
        )

    def to_tensors(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Plain data for a safetensors file: tensors ``"{i}.{field}"`` (``hidden``, ``input_ids``,
        ``attention_mask``, ``is_masked``, ``mask_ratio``, ``confidence`` when present) and a JSON-ready
        description ``{"batches": [{"indices", "lengths", "logit_shift"}]}``; `from_tensors` inverts it."""
        tensors: dict[str, Tensor] = {}
        described = []
        for i, cached in enumerate(self.batches):
            batch = cached.batch
            fields = {name: getattr(batch, name) for name in _BATCH_TENSORS}
            fields["hidden"] = cached.hidden
            if batch.confidence is not None:
                fields["confidence"] = batch.confidence
            tensors.update({f"{i}.{name}": t.detach().cpu().contiguous() for name, t in fields.items()})
            described.append(
                {
                    "indices": list(batch.indices),
                    "lengths": list(batch.lengths),
                    "logit_shift": batch.logit_shift,
                }
            )
        return tensors, {"batches": described}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], meta: dict[str, Any]) -> HiddenCache:
        """Inverse of `to_tensors` (raises ``KeyError`` naming a missing tensor)."""
        batches = []
        for i, described in enumerate(meta["batches"]):
            batch = Batch(
                indices=tuple(int(k) for k in described["indices"]),
                lengths=tuple(int(n) for n in described["lengths"]),
                confidence=tensors.get(f"{i}.confidence"),
                logit_shift=int(described["logit_shift"]),
                **{name: tensors[f"{i}.{name}"] for name in _BATCH_TENSORS},
            )
            batches.append(CachedBatch(batch, tensors[f"{i}.hidden"]))
        return cls(batches)


class BlockFeed:
    """Block ``index`` of the runner's model as a ``dllm_calib.Feed`` over the cached batches.

    ``batches()`` yields the cached calibration batches on the runner's device; ``forward(batch)`` runs the
    block on the hidden states cached for that batch and returns its output ``[B, L, D]``.
    """

    def __init__(self, runner: BlockRunner, index: int, cache: HiddenCache) -> None:
        self.runner, self.index = runner, index
        self._hidden = {c.batch.indices: c.hidden for c in cache.batches}
        self._batches = [c.batch for c in cache.batches]

    @property
    def module(self) -> nn.Module:
        return self.runner.dlm.model

    def batches(self) -> Iterator[Batch]:
        for batch in self._batches:
            yield batch.to(self.runner.device)

    def forward(self, batch: Batch) -> Tensor:
        if batch.indices not in self._hidden:
            raise KeyError(f"batch of states {list(batch.indices)} is not one of this block feed's batches")
        hidden = self._hidden[batch.indices]
        return self.runner.run(self.index, hidden, batch.input_ids, batch.model_attention_mask)

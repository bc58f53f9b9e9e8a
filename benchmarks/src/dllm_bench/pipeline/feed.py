"""Block inputs of the calibration batches, and a `DiffusionLM` view that runs one block on them.

`HiddenCache` holds, per calibration batch (``dllm_calib.iter_batches`` order and padding), the token ids,
the attention mask and the hidden states entering the current block (on the CPU: the offloaded copy).
`BlockFeed` is a ``DiffusionLM`` over the same model whose ``logits`` runs only block ``index`` on the cached
states of the batch it is handed, so every library function that drives a model through a calibration
set (``dllm_calib.collect``, ``dllm_actquant.calibrate_iaaq``, ``capture_inputs``) collects the block's
statistics on the inputs propagated through the already-quantized prefix, one block in memory at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from dllm_calib import CalibrationSet, iter_batches
from dllm_sampler import DiffusionLM
from torch import Tensor

from dllm_bench.pipeline.blocks import BlockRunner

__all__ = ["BlockFeed", "CachedBatch", "HiddenCache"]


@dataclass
class CachedBatch:
    """One calibration batch: ``input_ids [B, L]``, the model's ``attention_mask [B, L]`` (None when unpadded)
    and ``hidden [B, L, D]``, the states entering the current block."""

    input_ids: Tensor
    attention_mask: Tensor | None
    hidden: Tensor


class HiddenCache:
    """The calibration batches with the hidden states entering one block (CPU tensors)."""

    def __init__(self, batches: list[CachedBatch]) -> None:
        if not batches:
            raise ValueError("the calibration set produced no batch")
        self.batches = batches

    @classmethod
    def embed(cls, runner: BlockRunner, cset: CalibrationSet, batch_size: int) -> HiddenCache:
        """Batches of ``cset`` (as ``dllm_calib.collect`` forms them) with the embedding output."""
        dlm = runner.dlm
        batches = []
        for batch in iter_batches(
            cset, batch_size, "cpu", pad_token_id=dlm.pad_token_id or 0, logit_shift=dlm.logit_shift
        ):
            mask = batch.model_attention_mask
            hidden = runner.embed(batch.input_ids, mask).cpu()
            batches.append(CachedBatch(batch.input_ids, mask, hidden))
        return cls(batches)

    def propagate(self, runner: BlockRunner, index: int) -> HiddenCache:
        """The cache of the next block: every batch run through block ``index`` as it is now."""
        return HiddenCache(
            [
                CachedBatch(
                    b.input_ids,
                    b.attention_mask,
                    runner.run(index, b.hidden, b.input_ids, b.attention_mask).cpu(),
                )
                for b in self.batches
            ]
        )

    def pairs(self, device: torch.device) -> list[tuple[Tensor, Tensor | None]]:
        """``(input_ids, attention_mask)`` per batch on ``device`` (where the block's activations are), the
        batch form of ``dllm_actquant.capture_inputs``."""
        return [
            (b.input_ids.to(device), None if b.attention_mask is None else b.attention_mask.to(device))
            for b in self.batches
        ]

    def state(self) -> dict[str, list[Tensor | None]]:
        """The tensors, for ``torch.save``."""
        return {
            "input_ids": [b.input_ids for b in self.batches],
            "attention_mask": [b.attention_mask for b in self.batches],
            "hidden": [b.hidden for b in self.batches],
        }

    @classmethod
    def from_state(cls, state: dict[str, list[Tensor | None]]) -> HiddenCache:
        """Inverse of `state`."""
        return cls(
            [
                CachedBatch(ids, mask, hidden)  # type: ignore[arg-type]
                for ids, mask, hidden in zip(
                    state["input_ids"], state["attention_mask"], state["hidden"], strict=True
                )
            ]
        )


class BlockFeed(DiffusionLM):
    """``dlm`` seen as a model whose forward is block ``index`` applied to the cached states.

    Calls must come in the cache's batch order (they do when the same calibration set is iterated with
    the same batch size); each call takes the next batch, wrapping around, and checks its token ids.
    ``logits`` returns the block's output ``[B, L, D]``, not vocabulary logits: callers here only need the
    forward hooks to fire.
    """

    def __init__(self, dlm: DiffusionLM, runner: BlockRunner, index: int, cache: HiddenCache) -> None:
        super().__init__(dlm.model, dlm.tokenizer, dlm.tokenizer_files)
        self._runner, self._index, self._cache = runner, index, cache
        self._cursor = 0

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        batch = self._cache.batches[self._cursor]
        self._cursor = (self._cursor + 1) % len(self._cache.batches)
        if not torch.equal(batch.input_ids, input_ids.cpu()):
            raise RuntimeError(
                "the calibration batches reached the block feed in another order or size than they were "
                "cached; iterate the same calibration set with the same batch size"
            )
        return self._runner.run(self._index, batch.hidden, batch.input_ids, batch.attention_mask)

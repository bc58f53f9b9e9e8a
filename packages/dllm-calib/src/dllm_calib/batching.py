"""Group the states of a `CalibrationSet` into padded model batches.

States are taken in order, ``batch_size`` at a time, and right-padded to the longest state of the batch.
Padded positions have ``attention_mask`` False, are never masked and carry confidence 0; the model gets
``attention_mask=None`` when a batch has no padding at all (the same math, a faster attention path).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from dllm_calib.state import CalibrationSet

__all__ = ["Batch", "iter_batches"]


@dataclass(frozen=True)
class Batch:
    """One padded batch of states.

    Attributes:
        indices: the states' indices in the set, in batch order.
        lengths: each state's own length ``L_i`` (row ``r`` holds the state in ``[:lengths[r]]``).
        input_ids: ``[B, L]`` int64 (pads hold ``pad_token_id``).
        attention_mask: ``[B, L]`` bool, True on real tokens.
        is_masked: ``[B, L]`` bool.
        confidence: ``[B, L]`` float32, or None when some state of the batch has no confidence.
        mask_ratio: ``[B]`` float64, each state's ``mask_ratio``.
        logit_shift: the model's logit shift (0 for LLaDA, 1 for Dream: position ``i``'s prediction comes
            from the hidden state at ``i - 1``).
    """

    indices: tuple[int, ...]
    lengths: tuple[int, ...]
    input_ids: Tensor
    attention_mask: Tensor
    is_masked: Tensor
    confidence: Tensor | None
    mask_ratio: Tensor
    logit_shift: int = 0

    @property
    def model_attention_mask(self) -> Tensor | None:
        """The mask to pass to the model: None when nothing is padded."""
        return None if bool(self.attention_mask.all()) else self.attention_mask

    def to(self, device: torch.device | str) -> Batch:
        """This batch with every tensor on ``device``."""
        return dataclasses.replace(
            self,
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            is_masked=self.is_masked.to(device),
            confidence=None if self.confidence is None else self.confidence.to(device),
            mask_ratio=self.mask_ratio.to(device),
        )


def iter_batches(
    cset: CalibrationSet,
    batch_size: int,
    device: torch.device | str = "cpu",
    pad_token_id: int = 0,
    logit_shift: int = 0,
) -> Iterator[Batch]:
    """Yield the set's states as padded `Batch` es of at most ``batch_size``, in order, on ``device``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(cset), batch_size):
        states = cset.states[start : start + batch_size]
        b, length = len(states), max(s.length for s in states)
        ids = torch.full((b, length), pad_token_id, dtype=torch.int64)
        attn = torch.zeros(b, length, dtype=torch.bool)
        masked = torch.zeros(b, length, dtype=torch.bool)
        have_conf = all(s.confidence is not None for s in states)
        conf = torch.zeros(b, length, dtype=torch.float32) if have_conf else None
        for row, s in enumerate(states):
            n = s.length
            ids[row, :n] = s.input_ids
            attn[row, :n] = s.attention_mask
            masked[row, :n] = s.is_masked
            if conf is not None:
                conf[row, :n] = s.confidence  # type: ignore[assignment]
        ids[~attn] = pad_token_id
        yield Batch(
            indices=tuple(range(start, start + b)),
            lengths=tuple(s.length for s in states),
            input_ids=ids.to(device),
            attention_mask=attn.to(device),
            is_masked=masked.to(device),
            confidence=None if conf is None else conf.to(device),
            mask_ratio=torch.tensor([s.mask_ratio for s in states], dtype=torch.float64, device=device),
            logit_shift=logit_shift,
        )

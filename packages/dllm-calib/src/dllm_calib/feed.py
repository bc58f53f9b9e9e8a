"""`Feed`: what statistics collectors and calibrated methods consume, for one unit of a model.

A feed is a sequence of calibration batches plus a forward pass of one *unit*: the whole model
(`ModelFeed`, whose forward is ``DiffusionLM.logits``) or a single transformer block on the hidden states
that enter it (the layer-wise pipeline's block feed in ``dllm_bench``); `TokenFeed` runs a model on
token batches you already have. `collect` hooks modules under
``feed.module``, iterates ``feed.batches()`` and calls ``feed.forward(batch)`` on each, so the hooks see
exactly what the unit computes for that batch. Nothing has to pretend to be a model.

Shapes: a `Batch` holds ``input_ids [B, L]`` and its per-token masks (`dllm_calib.batching`); the
forward's return value (``[B, L, V]`` logits for a model, ``[B, L, D]`` hidden states for a block) is
not read by the collectors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch
from dllm_sampler import DiffusionLM
from torch import Tensor, nn

from dllm_calib.batching import Batch, iter_batches
from dllm_calib.state import CalibrationSet

__all__ = ["Feed", "ModelFeed", "TokenFeed"]


@runtime_checkable
class Feed(Protocol):
    """Calibration batches and a forward pass of one unit (see the module docstring)."""

    @property
    def module(self) -> nn.Module:
        """The root module: collector targets are qualified names of its submodules."""
        ...

    def batches(self) -> Iterable[Batch]:
        """The calibration batches, in a fixed order, on the unit's device."""
        ...

    def forward(self, batch: Batch) -> Tensor:
        """Run the unit on ``batch`` (forward hooks under ``module`` fire); returns the unit's output."""
        ...


class _WholeModel:
    """What the whole-model feeds share: the model is the unit, its forward is ``dlm.logits``."""

    def __init__(self, dlm: DiffusionLM) -> None:
        self.dlm = dlm

    @property
    def module(self) -> nn.Module:
        return self.dlm.model

    def forward(self, batch: Batch) -> Tensor:
        return self.dlm.logits(batch.input_ids, batch.model_attention_mask)


class ModelFeed(_WholeModel):
    """The whole model as a feed: ``calibration_set`` in batches of ``batch_size`` through ``dlm.logits``.

    Batches are right-padded with the model's pad token and carry its logit shift (`iter_batches`); they
    are built on the model's device when iterated, so moving the model afterwards is fine.
    """

    def __init__(self, dlm: DiffusionLM, calibration_set: CalibrationSet, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(dlm)
        self.calibration_set = calibration_set
        self.batch_size = batch_size

    def batches(self) -> Iterator[Batch]:
        dlm = self.dlm
        return iter_batches(
            self.calibration_set,
            self.batch_size,
            dlm.device,
            pad_token_id=dlm.pad_token_id or 0,
            logit_shift=dlm.logit_shift,
        )


class TokenFeed(_WholeModel):
    """A model over given token batches: ``input_ids [B, L]`` tensors or ``(input_ids, attention_mask)``
    pairs (mask ``[B, L]``, 1 = real token, or None), run through ``dlm.logits``.

    The batches carry no calibration metadata: positions holding the model's mask token count as masked,
    there is no confidence, and the mask ratio is each row's share of mask tokens. Rows are numbered
    across the batches (``Batch.indices``), as the states of a set are.
    """

    def __init__(self, dlm: DiffusionLM, batches: Sequence[Tensor | tuple[Tensor, Tensor | None]]) -> None:
        super().__init__(dlm)
        self._pairs = [(b, None) if isinstance(b, Tensor) else b for b in batches]

    def batches(self) -> Iterator[Batch]:
        device = self.dlm.device
        start = 0
        for number, (ids, mask) in enumerate(self._pairs):
            if ids.dim() != 2:
                raise ValueError(f"token batch {number}: input_ids must be [B, L], got {tuple(ids.shape)}")
            ids = ids.to(device)
            attn = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.to(device).bool()
            masked = (ids == self.dlm.mask_token_id) & attn
            yield Batch(
                indices=tuple(range(start, start + ids.shape[0])),
                lengths=(ids.shape[1],) * ids.shape[0],
                input_ids=ids,
                attention_mask=attn,
                is_masked=masked,
                confidence=None,
                mask_ratio=masked.double().sum(1) / attn.double().sum(1).clamp_min(1.0),
                logit_shift=self.dlm.logit_shift,
            )
            start += ids.shape[0]

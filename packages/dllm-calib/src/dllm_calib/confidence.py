"""Fill in the float model's per-position confidence of every state (needed by CGQ's certainty weights).

``confidence[i] = max_v softmax(logits[i])`` at every real position, masked or not, from one forward pass
of the model on the state itself. ``model.logits`` applies the architecture's logit convention, so for
Dream ``confidence[i]`` is the confidence of the prediction of token ``i`` (made at position ``i - 1``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dllm_calib.batching import iter_batches
from dllm_calib.state import CalibrationSet

__all__ = ["model_device", "score_confidence"]


def model_device(model: Any) -> torch.device:
    """The device of the first parameter of ``model.model`` (or of ``model``); CPU if it has none."""
    module = getattr(model, "model", model)
    if isinstance(module, nn.Module):
        for p in module.parameters():
            return p.device
    return torch.device("cpu")


@torch.no_grad()
def score_confidence(model: Any, cset: CalibrationSet, batch_size: int = 8) -> CalibrationSet:
    """A copy of ``cset`` whose states carry the model's confidence (``[L]`` float32, 0 on padding)."""
    pad = getattr(model, "pad_token_id", None)
    states = list(cset.states)
    for batch in iter_batches(cset, batch_size, model_device(model), pad_token_id=pad or 0):
        logits = model.logits(batch.input_ids, batch.model_attention_mask).float()
        conf = torch.exp(logits.amax(dim=-1) - torch.logsumexp(logits, dim=-1)).clamp(0.0, 1.0)
        conf = torch.where(batch.attention_mask, conf, torch.zeros_like(conf)).cpu()
        for row, i in enumerate(batch.indices):
            states[i] = states[i].with_confidence(conf[row, : states[i].length].contiguous())
    return cset.with_states(states)

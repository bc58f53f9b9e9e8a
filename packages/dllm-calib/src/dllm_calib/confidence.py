"""Fill in the float model's per-position confidence of every state (needed by CGQ's certainty weights).

``confidence[i] = max_v softmax(logits[i])`` at every real position, masked or not, from one forward pass
of the model on the state itself. ``DiffusionLM.logits`` applies the architecture's logit convention, so
for Dream ``confidence[i]`` is the confidence of the prediction of token ``i`` (made at position ``i - 1``).
"""

from __future__ import annotations

import torch
from dllm_sampler import DiffusionLM

from dllm_calib.feed import ModelFeed
from dllm_calib.state import CalibrationSet

__all__ = ["score_confidence"]


@torch.no_grad()
def score_confidence(dlm: DiffusionLM, cset: CalibrationSet, batch_size: int = 8) -> CalibrationSet:
    """A copy of ``cset`` whose states carry the model's confidence (``[L]`` float32, 0 on padding)."""
    feed = ModelFeed(dlm, cset, batch_size)
    states = list(cset.states)
    for batch in feed.batches():
        logits = feed.forward(batch).float()
        conf = torch.exp(logits.amax(dim=-1) - torch.logsumexp(logits, dim=-1)).clamp(0.0, 1.0)
        conf = torch.where(batch.attention_mask, conf, torch.zeros_like(conf)).cpu()
        for row, i in enumerate(batch.indices):
            states[i] = states[i].with_confidence(conf[row, : states[i].length].contiguous())
    return cset.with_states(states)

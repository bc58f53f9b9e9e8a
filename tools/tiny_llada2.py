"""Block-diffusion training pieces of the ``tiny-llada2`` recipe (used by ``tools/train_tiny.py``).

LLaDA2 generates block by block (blocks of 32 aligned to position 0, bidirectional inside a block, causal
across blocks, finished blocks re-encoded clean into the KV cache; ``dllm_sampler.generate_block``). The
training here matches that state, in the way of BD3-LM / the LLaDA2 report's block-diffusion stage, kept
simple:

- each row is shifted right by a random number of pad columns (0 to block - 1, the same for the batch, so
  the answer meets every block alignment that generation's left-padded prompts give) and filled with EOS up
  to a whole number of blocks (generation also fills the tail of the last block);
- every block of every row draws its own mask ratio ``t ~ U(eps, 1)`` and masks each maskable token (the
  answer, its EOS and the EOS fill; all tokens but BOS for code) with probability ``t``;
- one forward sees the clean copy of blocks ``[0, nb - 1)`` and the noisy copy of every block that holds
  a maskable token, side by side: a noisy block attends to itself and to the clean earlier blocks, a clean
  block to the clean blocks up to its own (`block_diffusion_mask`); positions are shared by both copies;
- the loss is the mean cross-entropy over the masked tokens of the noisy copy.

`ExpertBalance` is the auxiliary-loss-free balancing of the released model (``expert_bias`` shifts the
choice of experts, not their weights; DeepSeek-V3's rule): after each optimizer step every MoE layer's bias
moves by ``rate * sign(mean load - load)`` per expert, loads counted at the ``mlp.routing`` site.
"""

from __future__ import annotations

import torch
from dllm_sampler.models.llada2_moe import Routing
from torch import Tensor, nn

__all__ = ["BlockBatch", "ExpertBalance", "block_diffusion_batch", "block_diffusion_mask"]

MIN_RATIO = 1e-3
"""Smallest per-block mask ratio ``t``."""


class BlockBatch:
    """One block-diffusion forward: ``input_ids`` [B, Lc + Ln] (clean copy, then noisy copy), ``positions``
    [B, Lc + Ln], ``allowed`` [B, 1, Lc + Ln, Lc + Ln] bool, and the noisy copy's ``target`` and ``masked``
    [B, Ln] (loss on ``logits[:, Lc:]`` where ``masked``)."""

    def __init__(self, input_ids: Tensor, positions: Tensor, allowed: Tensor, target: Tensor, masked: Tensor):
        self.input_ids, self.positions, self.allowed = input_ids, positions, allowed
        self.target, self.masked = target, masked

    @property
    def clean_length(self) -> int:
        """Lc: columns of the clean copy at the front of ``input_ids``."""
        return self.input_ids.shape[1] - self.target.shape[1]


def block_diffusion_mask(clean_blocks: Tensor, noisy_blocks: Tensor) -> Tensor:
    """[Lc + Ln, Lc + Ln] bool, True where a query (row) may attend a key (column), for the clean copy with
    block ids ``clean_blocks`` [Lc] followed by the noisy copy with block ids ``noisy_blocks`` [Ln]."""
    c, n = clean_blocks, noisy_blocks
    top = torch.cat([c[None, :] <= c[:, None], torch.zeros(len(c), len(n), dtype=torch.bool)], dim=1)
    bottom = torch.cat([c[None, :] < n[:, None], n[None, :] == n[:, None]], dim=1)
    return torch.cat([top, bottom], dim=0)


def block_diffusion_batch(
    x0: Tensor,
    given: Tensor,
    attention_mask: Tensor | None,
    ids: dict[str, int],
    block: int,
    shift: int,
    generator: torch.Generator,
) -> BlockBatch:
    """The forward of clean rows ``x0`` [B, L] (left-padded, as `sft_batch` gives them).

    Args:
        given: [B, L] bool, never masked (padding, ``[bos] prompt``).
        attention_mask: [B, L] (1 real, 0 pad) or None (no padding).
        ids: the special ids ``pad``, ``eos``, ``mask`` (keys as in `tokenizer` constants' values).
        shift: pad columns put in front (block alignment of the answer).
    """
    b, n = x0.shape
    total = -(-(shift + n) // block) * block
    tail = total - shift - n
    pad_cols = torch.full((b, shift), ids["pad"], dtype=x0.dtype)
    x = torch.cat([pad_cols, x0, torch.full((b, tail), ids["eos"], dtype=x0.dtype)], dim=1)
    given = torch.cat(
        [torch.ones(b, shift, dtype=torch.bool), given, torch.zeros(b, tail, dtype=torch.bool)], 1
    )
    real = torch.ones(b, n, dtype=torch.long) if attention_mask is None else attention_mask.to(torch.long)
    valid = torch.cat(
        [torch.zeros(b, shift, dtype=torch.long), real, torch.ones(b, tail, dtype=torch.long)], 1
    )
    nb = total // block
    column_block = torch.arange(total) // block
    ratio = MIN_RATIO + (1 - MIN_RATIO) * torch.rand((b, nb), generator=generator)
    masked = (torch.rand((b, total), generator=generator) < ratio[:, column_block]) & ~given
    noisy = torch.where(masked, torch.full_like(x, ids["mask"]), x)
    positions = (valid.cumsum(-1) - 1).clamp_min(0)
    first = int((~given).float().argmax(dim=1).min()) // block
    clean_end, noisy_start = (nb - 1) * block, first * block
    allowed = block_diffusion_mask(column_block[:clean_end], column_block[noisy_start:])
    keys = torch.cat([valid[:, :clean_end], valid[:, noisy_start:]], dim=1).to(torch.bool)
    allowed = (allowed[None] & keys[:, None, :]) | torch.eye(allowed.shape[0], dtype=torch.bool)[None]
    return BlockBatch(
        input_ids=torch.cat([x[:, :clean_end], noisy[:, noisy_start:]], dim=1),
        positions=torch.cat([positions[:, :clean_end], positions[:, noisy_start:]], dim=1),
        allowed=allowed[:, None],
        target=x[:, noisy_start:],
        masked=masked[:, noisy_start:],
    )


class ExpertBalance:
    """Counts the tokens each expert of each MoE layer receives (forward hooks on the `Routing` sites) and
    nudges the router's ``expert_bias`` toward equal loads (`update`). ``rate``: bias step per update."""

    def __init__(self, model: nn.Module, rate: float) -> None:
        self.rate = rate
        self.routers = {}
        self.counts: dict[str, Tensor] = {}
        self.window: dict[str, Tensor] = {}
        for name, module in model.named_modules():
            if isinstance(module, Routing):
                parent = name.rsplit(".", 1)[0]
                gate = model.get_submodule(parent + ".gate")
                self.routers[parent] = gate
                self.counts[parent] = torch.zeros(gate.moe.num_experts)
                self.window[parent] = torch.zeros(gate.moe.num_experts)
                module.register_forward_hook(self._hook(parent))
        if not self.routers:
            raise ValueError("the model has no Routing site (mlp.routing); ExpertBalance needs an MoE model")

    def _hook(self, layer: str):
        def count(_module: nn.Module, _inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
            if torch.is_grad_enabled():
                experts = output[0].detach().flatten().cpu()
                self.counts[layer] += torch.bincount(experts, minlength=len(self.counts[layer])).float()

        return count

    @torch.no_grad()
    def update(self) -> None:
        """One bias step from the loads counted since the last update (training forwards only)."""
        for layer, gate in self.routers.items():
            load = self.counts[layer]
            if gate.expert_bias is not None and load.sum() > 0:
                gate.expert_bias += self.rate * torch.sign(load.mean() - load).to(gate.expert_bias)
            self.window[layer] += load
            load.zero_()

    def report(self) -> dict[str, list[float]]:
        """Per MoE layer: the share of routed tokens of each expert since the last report, x the number of
        experts (1.0 is an even load; 0 a dead expert); then the window restarts."""
        out = {}
        for layer, load in self.window.items():
            total = load.sum()
            out[layer] = [round(float(v), 2) for v in (load * len(load) / total if total > 0 else load)]
            load.zero_()
        return out

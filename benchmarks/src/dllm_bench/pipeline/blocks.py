"""Run one transformer block of a LLaDA/Dream model on given hidden states, with the model's own code.

The models' forward is ``embedding -> blocks -> final norm -> head`` (``dllm_sampler``). `BlockRunner` runs
that same forward with three modules swapped for the duration of one call: the embedding returns the
given hidden states, the block list holds only the chosen block, and the final norm stops the forward and
hands back its input. So positions, RoPE, the padding mask and every block's math stay the model's own,
and forward hooks on the block's modules (statistics collectors, V quantizers) fire as in a full forward.

Shapes: ``input_ids [B, L]``, ``attention_mask [B, L]`` (bool/int, 1 = real token) or None,
hidden states ``[B, L, D]`` in the model's dtype.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from dllm_actquant.modules import replace_module
from dllm_sampler import DiffusionLM
from torch import Tensor, nn

__all__ = ["BlockRunner", "offloaded"]


class _Reached(Exception):
    """Raised by `_Stop` to end a forward at the final norm, carrying the residual stream."""

    def __init__(self, hidden: Tensor) -> None:
        super().__init__("block runner: forward stopped at the final norm")
        self.hidden = hidden


class _Stop(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        raise _Reached(x)


class _Feed(nn.Module):
    """Stands in for the embedding: returns the stored hidden states whatever ids it is given."""

    def __init__(self, hidden: Tensor) -> None:
        super().__init__()
        self.hidden = hidden

    def forward(self, input_ids: Tensor) -> Tensor:
        if tuple(input_ids.shape) != tuple(self.hidden.shape[:2]):
            raise ValueError(
                f"hidden states {tuple(self.hidden.shape)} do not match input_ids {tuple(input_ids.shape)}"
            )
        return self.hidden


@contextmanager
def _swapped(root: nn.Module, replacements: dict[str, nn.Module]) -> Iterator[None]:
    old: dict[str, nn.Module] = {}
    try:
        for name, module in replacements.items():
            old[name] = replace_module(root, name, module)
        yield
    finally:
        for name, module in old.items():
            replace_module(root, name, module)


class BlockRunner:
    """Embeds ids and runs single blocks of ``dlm``'s model (see the module docstring).

    ``device`` is where blocks compute: inputs are moved there and outputs stay there.
    """

    def __init__(self, dlm: DiffusionLM, device: torch.device | str = "cpu") -> None:
        self.dlm = dlm
        self.device = torch.device(device)
        self.names = dlm.spec.names

    @property
    def blocks(self) -> nn.ModuleList:
        """The model's block list."""
        return self.dlm.model.get_submodule(self.names.blocks)  # type: ignore[return-value]

    def _forward(self, replacements: dict[str, nn.Module], ids: Tensor, mask: Tensor | None) -> Tensor:
        root = self.dlm.model
        with torch.no_grad(), _swapped(root, {**replacements, self.names.final_norm: _Stop()}):
            try:
                root(ids, mask)
            except _Reached as stop:
                return stop.hidden
        raise RuntimeError("block runner: the model's forward never reached its final norm")

    def embed(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """The first block's input ``[B, L, D]`` (the embedding output), on the embedding's device."""
        device = self.dlm.model.get_submodule(self.names.embedding).weight.device
        ids = input_ids.to(device)
        mask = None if attention_mask is None else attention_mask.to(device)
        return self._forward({self.names.blocks: nn.ModuleList()}, ids, mask)

    def run(self, index: int, hidden: Tensor, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Block ``index``'s output ``[B, L, D]`` for its input ``hidden``, computed on ``self.device``."""
        block = self.blocks[index]
        ids = input_ids.to(self.device)
        mask = None if attention_mask is None else attention_mask.to(self.device)
        replacements = {
            self.names.embedding: _Feed(hidden.to(self.device)),
            self.names.blocks: nn.ModuleList([block]),
        }
        return self._forward(replacements, ids, mask)


@contextmanager
def offloaded(module: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """``module`` moved to ``device`` for the ``with`` body and back to the CPU afterwards."""
    module.to(device)
    try:
        yield module
    finally:
        module.to("cpu")

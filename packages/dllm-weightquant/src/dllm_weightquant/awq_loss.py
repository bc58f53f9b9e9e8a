"""What AWQ scores a candidate scale on: a linear-group proxy, a sublayer's output, or the block's output.

``AWQConfig.loss``:

* ``"linear"``: the Hessian proxy ``tr(E H E^T)`` of the scaled group's own output (no forward passes);
* ``"sublayer"``: the output of the attention sublayer (o's output) for the attn and vo groups and of the
  MLP (down's output) for the mlp and down groups: llm-awq's ``module2inspect`` for Llama/Qwen2/Dream
  (``self_attn``, ``o_proj``, ``mlp``, ``down_proj``);
* ``"block"``: the whole transformer block's output for the attn and mlp groups (llm-awq's choice for
  LLaDA's q/k/v and gate/up), o's and down's output for vo and down;
* ``"auto"``: what llm-awq does for the model's architecture (`AUTO_LOSS`).

The inspected outputs are measured by an `OutputProbe`: the group's linears hold
``Qfake(W diag s) diag(1/s)`` while the feed runs (the scaled and quantized layer reading ``x / s``), and
the error is the mean squared difference to the float output over the real tokens of the first batches
(``max_tokens``), accumulated in float64.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from dllm_calib import Batch, Feed
from dllm_kernels import QuantSpec
from torch import Tensor, nn

from dllm_weightquant.rtn import fake_quantize_weight

if TYPE_CHECKING:
    from dllm_sampler import BlockTopology

__all__ = ["AUTO_LOSS", "AWQ_LOSSES", "OutputProbe", "inspected_module", "quantized_scaled", "resolve_loss"]

AWQ_LOSSES = ("linear", "sublayer", "block", "auto")

AUTO_LOSS: Mapping[str, str] = {"llada": "block", "dream": "sublayer"}
"""``"auto"`` per topology arch, as llm-awq's ``auto_scale_block`` (QDLM's ``awq/quantize/auto_scale.py``)
inspects it: ``LLaDALlamaBlock`` -> the block (``module2inspect=module`` for q/k/v and ff_proj/up_proj);
``DreamDecoderLayer`` (the Llama/Qwen2 branch) -> ``self_attn`` and ``mlp``. The values are forward-pass
losses only: the registry declares AWQ's statistics from the config alone, before the model's architecture
is known."""

_INSPECTED: Mapping[str, Mapping[str, str]] = {
    "sublayer": {"attn": "o", "vo": "o", "mlp": "down", "down": "down"},
    "block": {"attn": "block", "vo": "o", "mlp": "block", "down": "down"},
}
"""Per loss and scale group, the role whose output is inspected (``"block"``: the transformer block)."""


def resolve_loss(loss: str, arch: str) -> str:
    """``loss`` with ``"auto"`` replaced by the architecture's choice (`AUTO_LOSS`)."""
    if loss != "auto":
        return loss
    if arch not in AUTO_LOSS:
        raise ValueError(
            f"AWQConfig.loss 'auto' has no choice for architecture {arch!r} (known: {sorted(AUTO_LOSS)}); "
            "set loss to 'linear', 'sublayer' or 'block'"
        )
    return AUTO_LOSS[arch]


def inspected_module(block: BlockTopology, loss: str, group: str) -> nn.Module | None:
    """The module whose output scores scale group ``group`` of ``block`` under a resolved ``loss``
    (``"sublayer"`` or ``"block"``); None for the block's own output, which is the output of a block feed.

    The blocks run as functions of their parts (``dllm_sampler``'s ``block_forward``), so no module's
    output is the block's: the ``"block"`` loss reads what the feed's forward returns, and so needs a feed
    that runs only this block (the layer-wise pipeline's block feed).
    """
    role = _INSPECTED[loss][group]
    return None if role == "block" else block.module(role)


class _Captured(Exception):
    """Raised by the probe's hook to end a forward once the inspected output exists."""

    def __init__(self, output: Tensor) -> None:
        super().__init__("AWQ output probe: forward stopped after the inspected module")
        self.output = output


def _first_batches(feed: Feed, max_tokens: int) -> list[Batch]:
    """The feed's first batches, whole, until they hold at least ``max_tokens`` real tokens."""
    chosen: list[Batch] = []
    tokens = 0
    for batch in feed.batches():
        chosen.append(batch)
        tokens += int(batch.attention_mask.sum())
        if tokens >= max_tokens:
            break
    if not chosen:
        raise ValueError("AWQ output probe: the feed yielded no batch")
    return chosen


class OutputProbe:
    """The output ``[B, L, D]`` of ``module`` (None: of the feed's unit, what ``feed.forward`` returns) over
    the first batches of ``feed`` (whole batches, until ``max_tokens`` real tokens), against the reference
    recorded when the probe is built.

    With a module, the forward stops there (a hook raises once its output exists), so later layers never
    run. ``width``, when given, is the expected last dim ``D`` of the output: a mismatch (e.g. a whole-model
    feed returning logits ``[B, L, V]`` where a block's hidden states were meant) raises ``ValueError``.
    """

    def __init__(
        self, feed: Feed, module: nn.Module | None, max_tokens: int, width: int | None = None
    ) -> None:
        self.feed, self.module = feed, module
        self.batches = _first_batches(feed, max_tokens)
        self.reference = [self._output(b) for b in self.batches]
        got = self.reference[0].shape[-1]
        if width is not None and got != width:
            raise ValueError(
                f"AWQ output probe: expected outputs of width {width} (hidden states), got {got}; the "
                "'block' loss needs a feed whose forward runs just the block (the pipeline's block feed), "
                "not a whole-model feed returning logits"
            )

    def _output(self, batch: Batch) -> Tensor:
        if self.module is None:
            with torch.no_grad():
                return self.feed.forward(batch).detach()

        def stop(module: nn.Module, inputs: object, output: object) -> None:
            raise _Captured(output[0] if isinstance(output, tuple | list) else output)  # type: ignore[arg-type]

        handle = self.module.register_forward_hook(stop)
        try:
            with torch.no_grad():
                self.feed.forward(batch)
        except _Captured as captured:
            return captured.output.detach()
        finally:
            handle.remove()
        raise RuntimeError("AWQ output probe: the feed's forward never ran the inspected module")

    def error(self) -> float:
        """Mean over real tokens and channels of ``(output - reference)^2`` (float64 accumulation)."""
        total, count = 0.0, 0
        for batch, ref in zip(self.batches, self.reference, strict=True):
            out = self._output(batch)
            sq = (out.to(torch.float64) - ref.to(torch.float64)).pow(2).sum(dim=-1)
            mask = batch.attention_mask.to(sq.device)
            if tuple(mask.shape) != tuple(sq.shape):
                mask = torch.ones_like(sq, dtype=torch.bool)
            total += float(sq[mask].sum())
            count += int(mask.sum()) * out.shape[-1]
        return total / max(count, 1)


@contextmanager
def quantized_scaled(
    linears: Sequence[nn.Linear], originals: Sequence[Tensor], scale: Tensor, spec: QuantSpec
) -> Iterator[None]:
    """For the ``with`` body, each linear holds ``Qfake(W diag(s)) diag(1/s)`` of its original ``W [out, in]``
    (``scale`` float64 ``[in]``); the originals are written back afterwards."""
    try:
        with torch.no_grad():
            for lin, w in zip(linears, originals, strict=True):
                s = scale.to(w.device, torch.float64)
                q = fake_quantize_weight(w.float() * s.float(), spec).to(torch.float64) / s
                lin.weight.copy_(q.to(lin.weight.dtype))
        yield
    finally:
        with torch.no_grad():
            for lin, w in zip(linears, originals, strict=True):
                lin.weight.copy_(w)

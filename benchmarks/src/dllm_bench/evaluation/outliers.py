"""Activation outliers of every block Linear input, per layer and mask-ratio bucket.

For each block and each distinct Linear input (q, k and v read the same tensor, as do gate and up) the
outlier ratio ``max|x| / RMS(x)`` is taken over all real tokens and channels of the states in a bucket:
``max_tc |x_tc| / sqrt(mean_tc x_tc^2)``, which is >= 1 and grows with the heavy channels and tokens that
make activation quantization hard. Buckets follow ``dllm_calib`` (`mask_ratio_buckets`: bucket 0 holds
the most-masked states).

The default states are calibration-like: every one of the first ``problems`` held-out arithmetic rows
(``[bos] prompt | answer eos``), noised with LLaDA's forward process (`dllm_sampler.forward_noise`, prompt
never masked) once per bucket, at the bucket's central masking probability. The statistics are gathered
with ``dllm_calib``'s hook driver (`attach_collectors`), on the module at each Linear's name, so for a
quantized model with online rotations the input is the one before the rotation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from dllm_calib import (
    Batch,
    CalibrationSet,
    CalibrationState,
    Collector,
    HookPoint,
    ModelFeed,
    Provenance,
    attach_collectors,
    mask_ratio_buckets,
)
from dllm_sampler import DiffusionLM, forward_noise
from dllm_sampler.tasks import heldout_problems, sft_batch
from torch import Tensor

__all__ = ["INPUT_ROLES", "OutlierRow", "activation_outliers", "outlier_states"]

INPUT_ROLES: dict[str, tuple[str, ...]] = {
    "qkv": ("q", "qkv"),
    "o": ("o",),
    "gate_up": ("up", "shared.up"),
    "down": ("down", "shared.down"),
}
"""Role label of each distinct block Linear input -> the Linear roles (`BlockTopology.names`) that read it,
the first one a block has is hooked: dense blocks (LLaDA, Dream, LLaDA2's dense layers) and LLaDA2's fused
qkv and shared expert. A routed layer without a shared expert has no MLP rows: each routed expert reads
only the tokens sent to it, not the ``[B, L, C]`` activation the statistic is defined on."""


@dataclass(frozen=True)
class OutlierRow:
    """The outlier statistic of one Linear input in one mask-ratio bucket.

    Attributes:
        layer: block index.
        role: ``"qkv"``, ``"o"``, ``"gate_up"`` or ``"down"`` (see `INPUT_ROLES`).
        module: qualified name of the hooked module.
        bucket: mask-ratio bucket, 0 = most masked.
        mask_lo, mask_hi: the bucket's mask-ratio interval.
        tokens: real tokens observed.
        outlier_ratio: ``max|x| / RMS(x)`` over those tokens and all channels (>= 1; 1 for an all-zero
            input).
        absmax: ``max|x|``.
        rms: ``sqrt(mean x^2)``.
    """

    layer: int
    role: str
    module: str
    bucket: int
    mask_lo: float
    mask_hi: float
    tokens: int
    outlier_ratio: float
    absmax: float
    rms: float

    def to_dict(self) -> dict[str, str | int | float]:
        """JSON/CSV-ready fields."""
        return asdict(self)


@dataclass
class _Accumulator:
    absmax: float = 0.0
    square_sum: float = 0.0
    values: int = 0
    tokens: int = 0


class _OutlierCollector(Collector):
    """Per hooked module and bucket: max |x|, sum x^2 (float64) and counts over real tokens."""

    name = "activation_outliers"

    def __init__(self, num_buckets: int) -> None:
        self.num_buckets = num_buckets
        self.stats: dict[str, list[_Accumulator]] = {}
        self._groups: list[tuple[int, Tensor]] = []

    def hook_points(self, targets: Sequence[str]) -> list[HookPoint]:
        return [HookPoint(t, "input") for t in targets]

    def begin_batch(self, batch: Batch) -> None:
        buckets = mask_ratio_buckets(batch.mask_ratio.cpu(), self.num_buckets)
        real = batch.attention_mask.cpu()
        self._groups = [(int(k), real & (buckets == k)[:, None]) for k in buckets.unique()]

    def observe(self, point: HookPoint, tensor: Tensor, batch: Batch) -> None:
        slots = self.stats.setdefault(point.module, [_Accumulator() for _ in range(self.num_buckets)])
        for bucket, where in self._groups:
            x = tensor[where.to(tensor.device)].double()  # [n, C]
            if x.numel() == 0:
                continue
            acc = slots[bucket]
            acc.absmax = max(acc.absmax, float(x.abs().max()))
            acc.square_sum += float(x.square().sum())
            acc.values += x.numel()
            acc.tokens += x.shape[0]

    def results(self) -> dict[str, Any]:
        return self.stats


def outlier_states(
    model: DiffusionLM, problems: int = 16, num_buckets: int = 4, seed: int = 0
) -> CalibrationSet:
    """``problems * num_buckets`` noised held-out arithmetic rows: problem ``i`` at the masking probability
    ``1 - (k + 0.5) / num_buckets`` for each bucket ``k`` (`dllm_sampler.forward_noise`, seeded).

    A state's ``mask_ratio`` is its realised fraction of masked answer positions.
    """
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer; load a checkpoint folder that holds tokenizer.json")
    if problems < 1 or num_buckets < 1:
        raise ValueError(f"problems and num_buckets must be >= 1, got {problems}, {num_buckets}")
    x0, prompt_mask, attention_mask = sft_batch(model.tokenizer, heldout_problems(problems))
    generator = torch.Generator().manual_seed(seed)
    states = []
    for k in range(num_buckets):
        t = 1.0 - (k + 0.5) / num_buckets
        noisy, masked, _ = forward_noise(x0, t, model.mask_token_id, prompt_mask, generator=generator)
        ratios = masked.sum(dim=1) / (~prompt_mask).sum(dim=1)
        states += [
            CalibrationState(
                noisy[i], attention_mask[i].bool(), masked[i], float(ratios[i]), t, source_index=i
            )
            for i in range(problems)
        ]
    params = {"problems": problems, "num_buckets": num_buckets}
    provenance = Provenance(builder="dllm_bench.outlier_states", params=params, seed=seed)
    return CalibrationSet(tuple(states), provenance, model.mask_token_id)


def _hooked_modules(model: DiffusionLM) -> list[tuple[int, str, str]]:
    """``(layer, role label, module name)`` of every distinct block Linear input (see `INPUT_ROLES`)."""
    hooked = []
    for block in model.topology:
        for label, roles in INPUT_ROLES.items():
            role = next((r for r in roles if r in block.names), None)
            if role is not None:
                hooked.append((block.index, label, block.names[role]))
    return hooked


def _bucket_interval(bucket: int, num_buckets: int) -> tuple[float, float]:
    return 1.0 - (bucket + 1) / num_buckets, 1.0 - bucket / num_buckets


@torch.no_grad()
def activation_outliers(
    model: DiffusionLM,
    states: CalibrationSet | None = None,
    *,
    problems: int = 16,
    num_buckets: int = 4,
    batch_size: int = 16,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[OutlierRow]:
    """The outlier ratio of every block Linear input per layer and mask-ratio bucket.

    Args:
        model: any `DiffusionLM` (float or quantized).
        states: the inputs to run; default `outlier_states` (``problems``, ``num_buckets``, ``seed``).
        num_buckets: mask-ratio buckets (also used to bucket ``states`` given by the caller).
        batch_size: states per forward pass.
        progress: called as ``progress(done, total)`` after each batch of states.

    Returns:
        Rows ordered by layer, then role (qkv, o, gate_up, down), then bucket; buckets no state fell
        into are left out.
    """
    if states is None:
        states = outlier_states(model, problems, num_buckets, seed)
    hooked = _hooked_modules(model)
    collector = _OutlierCollector(num_buckets)
    feed = ModelFeed(model, states, batch_size)
    total = -(-len(states) // batch_size)
    with attach_collectors(feed, [collector], [name for _, _, name in hooked]) as session:
        for done, batch in enumerate(feed.batches(), 1):
            session.run(batch)
            if progress is not None:
                progress(done, total)
    rows = []
    for layer, role, name in hooked:
        for bucket, acc in enumerate(collector.stats[name]):
            if acc.values == 0:
                continue
            rms = (acc.square_sum / acc.values) ** 0.5
            lo, hi = _bucket_interval(bucket, num_buckets)
            ratio = acc.absmax / rms if rms > 0 else 1.0
            rows.append(OutlierRow(layer, role, name, bucket, lo, hi, acc.tokens, ratio, acc.absmax, rms))
    return rows

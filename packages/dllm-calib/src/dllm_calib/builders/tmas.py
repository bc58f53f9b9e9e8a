"""The ``tmas`` builder: DLLMQuant's Temporal-Mask Adaptive Sampling (docs/references.md#tmas, reconstructed).

1. Encode the first ``num_prompts`` texts of the source as prompts (BOS first when the model has one)
   and run the float model's real sampler on them (``dllm_sampler.generate``, settings from ``sampler``;
   None = the architecture's default).
2. Snapshot the model input of every step (``StepState.model_input``: prompt plus partially masked
   response), with its mask status and step.
3. Bucket the snapshots by response mask ratio ``r`` into ``num_buckets`` equal intervals (bucket 0 is
   the earliest, ``r in (0.75, 1]`` for 4 buckets; see `dllm_calib.buckets`).
4. Draw ``num_samples`` snapshots without replacement, ``quota_counts(quotas, num_samples)`` from each
   bucket (largest remainder), seeded. A bucket with too few snapshots is an error, or with
   ``on_short="redistribute"`` its deficit goes to the buckets with spare snapshots, largest quota first
   (recorded in the provenance notes).
5. Score the drawn states' confidence with the float model (`dllm_calib.score_confidence`), so every
   position carries ``max softmax`` for CGQ.

The sampler runs are the long part (minutes for a real model): `build_tmas` takes a ``progress(done,
total)`` callback called after every sampler step, ``total`` being batches x the sampler's ``steps``.

States come out bucket-major and, inside a bucket, in generation order; ``state.t = state.mask_ratio = r``,
``state.step`` is the sampler step and ``state.source_index`` the prompt index. Padding is stripped.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from dllm_sampler import DiffusionLM, StepState, default_generation_config, generate
from torch import Tensor

from dllm_calib.buckets import bucket_of, quota_counts
from dllm_calib.builders.base import BuilderConfig, check_int, register_builder
from dllm_calib.confidence import score_confidence
from dllm_calib.model_io import describe_model, encode_text, require_mask_token
from dllm_calib.sources import TextSource, text_source
from dllm_calib.state import CalibrationSet, CalibrationState, Provenance

__all__ = ["TMASConfig", "build_tmas"]


@register_builder
@dataclass(frozen=True)
class TMASConfig(BuilderConfig):
    """Temporal-Mask Adaptive Sampling.

    Attributes:
        num_prompts: prompts to generate from (the first ones of the source).
        num_samples: states to draw.
        num_buckets: mask-ratio buckets.
        quotas: fraction of ``num_samples`` per bucket (bucket 0 first); non-negative, summing to 1.
        seed: seed of the sampler's randomness and of the draws.
        batch_size: prompts per ``generate`` call (ragged batches are left-padded with the pad token).
        on_short: ``"error"`` or ``"redistribute"`` when a bucket has fewer snapshots than its quota.
        sampler: a ``dllm_sampler`` generation config (e.g. ``LLaDAGenerationConfig(steps=64,
            gen_length=128, block_length=32)``, the reimplementation's setting), None for the default.
    """

    name: ClassVar[str] = "tmas"
    num_prompts: int = 32
    num_samples: int = 128
    num_buckets: int = 4
    quotas: tuple[float, ...] = (0.3, 0.2, 0.2, 0.3)
    seed: int = 0
    batch_size: int = 8
    on_short: Literal["error", "redistribute"] = "error"
    sampler: Any = field(default=None, metadata={"provenance": False})

    def __post_init__(self) -> None:
        for name, minimum in (
            ("num_prompts", 1),
            ("num_samples", 1),
            ("num_buckets", 1),
            ("seed", 0),
            ("batch_size", 1),
        ):
            check_int(self, name, minimum)
        object.__setattr__(self, "quotas", tuple(float(q) for q in self.quotas))
        if len(self.quotas) != self.num_buckets:
            raise ValueError(
                f"TMASConfig.quotas has {len(self.quotas)} entries but num_buckets is {self.num_buckets}; "
                "give one quota per bucket"
            )
        if any(q < 0 for q in self.quotas) or abs(sum(self.quotas) - 1.0) > 1e-6:
            raise ValueError(
                f"TMASConfig.quotas must be non-negative and sum to 1, got {list(self.quotas)} (sum "
                f"{sum(self.quotas):.6g})"
            )
        if self.on_short not in ("error", "redistribute"):
            raise ValueError(f"TMASConfig.on_short must be 'error' or 'redistribute', got {self.on_short!r}")

    def build(self, model: DiffusionLM, source: TextSource | str | Path) -> CalibrationSet:
        return build_tmas(self, model, source)


@dataclass(frozen=True)
class _Snapshot:
    ids: Tensor
    masked: Tensor
    ratio: float
    step: int
    prompt: int


def _describe_sampler(sampler: Any) -> dict[str, Any]:
    if sampler is None:
        return {"config": None, "note": "the architecture's default generation config"}
    out: dict[str, Any] = {"type": type(sampler).__name__}
    if dataclasses.is_dataclass(sampler):
        fields = dataclasses.asdict(sampler)
        try:
            json.dumps(fields, allow_nan=False)
            return {**out, "config": fields}
        except (TypeError, ValueError):
            pass
    return {**out, "config": repr(sampler)}


def _encode_prompts(config: TMASConfig, model: DiffusionLM, src: TextSource, mask_id: int) -> list[list[int]]:
    bos = model.bos_token_id
    prompts: list[list[int]] = []
    for text in src.texts():
        ids = encode_text(model, text)
        if bos is not None and ids[0] != bos:
            ids = [bos, *ids]
        if mask_id in ids:
            raise ValueError(
                f"prompt #{len(prompts)} encodes to the mask token id {mask_id}; remove the literal mask "
                "token"
            )
        prompts.append(ids)
        if len(prompts) == config.num_prompts:
            break
    return prompts


def _pad_left(prompts: list[list[int]], pad_id: int | None) -> tuple[Tensor, Tensor | None]:
    width = max(len(p) for p in prompts)
    if all(len(p) == width for p in prompts):
        return torch.tensor(prompts, dtype=torch.int64), None
    if pad_id is None:
        raise ValueError(
            "prompts of different lengths need padding but the model has no pad_token_id; use batch_size=1"
        )
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.int64)
    attn = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p)
        attn[row, width - len(p) :] = 1
    return ids, attn


def _snapshots(
    config: TMASConfig,
    model: DiffusionLM,
    prompts: list[list[int]],
    progress: Callable[[int, int], None] | None,
) -> list[_Snapshot]:
    device = model.device
    pad_id = model.pad_token_id
    if pad_id is None:
        pad_id = model.eos_token_id
    generator = torch.Generator(device=device).manual_seed(config.seed)
    steps = (config.sampler or default_generation_config(model.arch)).steps
    total = -(-len(prompts) // config.batch_size) * steps
    snaps: list[_Snapshot] = []
    for start in range(0, len(prompts), config.batch_size):
        ids, attn = _pad_left(prompts[start : start + config.batch_size], pad_id)

        def on_step(state: StepState, offset: int = start) -> None:
            for row in range(state.model_input.shape[0]):
                valid = (
                    torch.ones_like(state.input_mask[row])
                    if state.attention_mask is None
                    else state.attention_mask[row].bool()
                )
                masked = state.input_mask[row][valid].cpu()
                prompt_len = int(valid[: state.prompt_length].sum())
                snaps.append(
                    _Snapshot(
                        ids=state.model_input[row][valid].cpu(),
                        masked=masked,
                        ratio=float(masked[prompt_len:].float().mean()),
                        step=int(state.step),
                        prompt=offset + row,
                    )
                )
            if progress is not None:
                progress(offset // config.batch_size * steps + int(state.step) + 1, total)

        generate(
            model,
            ids.to(device),
            attention_mask=None if attn is None else attn.to(device),
            config=config.sampler,
            on_step=on_step,
            generator=generator,
        )
    return snaps


def _bucket_counts(config: TMASConfig, available: list[int], notes: list[str]) -> list[int]:
    counts = quota_counts(config.quotas, config.num_samples)
    if sum(available) < config.num_samples:
        raise ValueError(
            f"TMAS wants {config.num_samples} states but the sampler produced only {sum(available)} "
            "snapshots; "
            "use more prompts (num_prompts) or sampler steps, or fewer num_samples"
        )
    k = config.num_buckets
    for b in range(k):
        if available[b] >= counts[b]:
            continue
        lo, hi = 1 - (b + 1) / k, 1 - b / k
        if config.on_short == "error":
            raise ValueError(
                f"TMAS bucket {b} (response mask ratio in ({lo:.3g}, {hi:.3g}]) has {available[b]} "
                "snapshots but its "
                f"quota needs {counts[b]}; use more prompts (num_prompts) or sampler steps, fewer "
                "num_samples, "
                "or on_short='redistribute'"
            )
        deficit = counts[b] - available[b]
        counts[b] = available[b]
        notes.append(f"bucket {b} had {available[b]} snapshots for a quota of {available[b] + deficit}")
        for other in sorted(range(k), key=lambda j: (-config.quotas[j], j)):
            give = min(deficit, available[other] - counts[other]) if other != b else 0
            if give > 0:
                counts[other] += give
                deficit -= give
                notes.append(f"moved {give} of its quota to bucket {other}")
    return counts


def build_tmas(
    config: TMASConfig,
    model: DiffusionLM,
    source: TextSource | str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> CalibrationSet:
    """Run the sampler on prompts, bucket the per-step snapshots and draw them with quotas.

    ``progress(done, total)``, when given, is called after every sampler step (see the module docstring).
    """
    mask_id = require_mask_token(model, config.name)
    src = text_source(source)
    prompts = _encode_prompts(config, model, src, mask_id)
    if not prompts:
        raise ValueError(f"text source {src.describe()} yielded no prompt")
    snaps = _snapshots(config, model, prompts, progress)
    by_bucket: list[list[int]] = [[] for _ in range(config.num_buckets)]
    for i, snap in enumerate(snaps):
        by_bucket[bucket_of(snap.ratio, config.num_buckets)].append(i)
    notes: list[str] = []
    counts = _bucket_counts(config, [len(b) for b in by_bucket], notes)
    generator = torch.Generator().manual_seed(config.seed)
    states = []
    for members, count in zip(by_bucket, counts, strict=True):
        pick = sorted(torch.randperm(len(members), generator=generator)[:count].tolist())
        for j in pick:
            snap = snaps[members[j]]
            states.append(
                CalibrationState(
                    input_ids=snap.ids,
                    attention_mask=torch.ones_like(snap.masked),
                    is_masked=snap.masked,
                    mask_ratio=snap.ratio,
                    t=snap.ratio,
                    step=snap.step,
                    source_index=snap.prompt,
                )
            )
    prov = Provenance(
        builder=config.name,
        params={
            **config.to_dict(),
            "snapshots": len(snaps),
            "snapshots_per_bucket": [len(b) for b in by_bucket],
            "drawn_per_bucket": counts,
        },
        seed=config.seed,
        model=describe_model(model),
        sampler=_describe_sampler(config.sampler),
        source={**src.describe(), "prompts_read": len(prompts)},
        notes=tuple(notes),
    )
    return score_confidence(model, CalibrationSet(tuple(states), prov, mask_id), batch_size=config.batch_size)

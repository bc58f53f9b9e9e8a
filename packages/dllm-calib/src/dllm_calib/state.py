"""Calibration states and sets: the data every dLLM calibration method feeds through the model.

A `CalibrationState` is one model input of a (simulated or real) denoising trajectory: a token sequence in
which some positions hold the mask token, plus what is known about it (how much of it is masked, at which
time, which positions are masked and how confident the float model is at each position). A
`CalibrationSet` is an ordered tuple of states plus the `Provenance` that says how it was made.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["CalibrationSet", "CalibrationState", "Provenance"]


@dataclass(frozen=True, eq=False)
class CalibrationState:
    """One calibration input.

    Attributes:
        input_ids: ``[L]`` int64 token ids; masked positions hold the mask token id.
        attention_mask: ``[L]`` bool, True on real tokens, False on padding.
        is_masked: ``[L]`` bool, True where ``input_ids`` holds the mask token.
        mask_ratio: realised fraction, in [0, 1], of the *maskable* positions that are masked. Which
            positions are maskable is the builder's to say (random: all real tokens; MCS: the positions
            after the visible prefix; TMAS: the generated response; plain: none, ratio 0).
        t: the nominal diffusion time in [0, 1] the state was drawn at (the masking probability of the
            builder's forward process: 1 = fully masked, 0 = clean); for TMAS the response mask ratio.
        confidence: ``[L]`` float32 in [0, 1] or None: the float model's ``max_v softmax(logits)`` at each
            position, with the architecture's logit convention applied (for Dream, ``confidence[i]`` is the
            confidence of the prediction of token ``i``, made from the hidden state at ``i - 1``).
        step: the sampler step the state was captured at (TMAS), -1 when not applicable.
        source_index: index of the text/prompt or window the state derives from, -1 when unknown.
    """

    input_ids: Tensor
    attention_mask: Tensor
    is_masked: Tensor
    mask_ratio: float
    t: float
    confidence: Tensor | None = None
    step: int = -1
    source_index: int = -1

    def __post_init__(self) -> None:
        ids = self.input_ids
        if not isinstance(ids, Tensor) or ids.dim() != 1 or ids.dtype != torch.int64:
            raise ValueError(
                f"input_ids must be a 1-D int64 tensor [L], got "
                f"{getattr(ids, 'dtype', type(ids).__name__)} of shape {tuple(getattr(ids, 'shape', ()))}"
            )
        if ids.numel() == 0:
            raise ValueError("a calibration state needs at least one token; got an empty input_ids")
        for name in ("attention_mask", "is_masked"):
            value = getattr(self, name)
            if not isinstance(value, Tensor) or value.dtype != torch.bool or value.shape != ids.shape:
                raise ValueError(
                    f"{name} must be a bool tensor of shape {tuple(ids.shape)} (like input_ids), got "
                    f"{getattr(value, 'dtype', type(value).__name__)} of shape "
                    f"{tuple(getattr(value, 'shape', ()))}"
                )
        if bool((self.is_masked & ~self.attention_mask).any()):
            raise ValueError(
                "is_masked is True at a padding position (attention_mask False); pads are never masked"
            )
        for name in ("mask_ratio", "t"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        conf = self.confidence
        if conf is not None:
            if not isinstance(conf, Tensor) or conf.dtype != torch.float32 or conf.shape != ids.shape:
                raise ValueError(
                    f"confidence must be a float32 tensor of shape {tuple(ids.shape)} or None, got "
                    f"{getattr(conf, 'dtype', type(conf).__name__)} of shape "
                    f"{tuple(getattr(conf, 'shape', ()))}"
                )
            if not bool(((conf >= 0) & (conf <= 1)).all()):
                raise ValueError("confidence values must lie in [0, 1] (a probability); found values outside")

    @property
    def length(self) -> int:
        """``L``, the number of positions (padding included)."""
        return int(self.input_ids.shape[0])

    def with_confidence(self, confidence: Tensor | None) -> CalibrationState:
        """A copy of this state with ``confidence`` ([L] float32 or None) replaced."""
        return replace(self, confidence=confidence)


@dataclass(frozen=True)
class Provenance:
    """How a calibration set was made; stored next to the states and in downstream checkpoints.

    Attributes:
        builder: registry name of the builder ("plain", "random", "mcs", "tmas") or a user label.
        params: the builder's parameters (JSON-serialisable).
        seed: the seed the builder used, None if it used none.
        model: description of the model the states were built for (its name or path and architecture).
        sampler: sampler settings for builders that run the sampler (TMAS), else None.
        source: description of the text source (kind, path, field, ...), else None.
        notes: free-form remarks recorded by the builder (e.g. how a bucket shortfall was resolved).
    """

    builder: str
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    model: str = ""
    sampler: dict[str, Any] | None = None
    source: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            json.dumps(self.to_dict(), allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"provenance must be JSON-serialisable (plain numbers, strings, lists, dicts): {err}"
            ) from err

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``notes`` as a list)."""
        out = asdict(self)
        out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        """Inverse of `to_dict`."""
        known = {"builder", "params", "seed", "model", "sampler", "source", "notes"}
        unknown = set(data) - known
        if unknown or "builder" not in data:
            raise ValueError(
                f"provenance must have keys {sorted(known)} ('builder' required), got {sorted(data)}"
            )
        return cls(**{**data, "notes": tuple(data.get("notes", ()))})


@dataclass(frozen=True, eq=False)
class CalibrationSet:
    """An ordered, non-empty tuple of `CalibrationState` plus provenance.

    Attributes:
        states: the states, in order (collectors and exports keep this order).
        provenance: how the set was built.
        mask_token_id: the id masked positions hold, None for sets without masks (plain windows of a
            model without a mask token). Every state's ``is_masked`` must equal
            ``input_ids == mask_token_id``.
    """

    states: tuple[CalibrationState, ...]
    provenance: Provenance
    mask_token_id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "states", tuple(self.states))
        if not self.states:
            raise ValueError("a calibration set needs at least one state; the builder produced none")
        for i, state in enumerate(self.states):
            if not isinstance(state, CalibrationState):
                raise TypeError(f"state {i} is a {type(state).__name__}, expected CalibrationState")
            if self.mask_token_id is None:
                if bool(state.is_masked.any()):
                    raise ValueError(f"state {i} has masked positions but the set has no mask_token_id")
            elif not torch.equal(state.is_masked, state.input_ids == self.mask_token_id):
                raise ValueError(
                    f"state {i}: is_masked disagrees with input_ids == mask_token_id ({self.mask_token_id})"
                )

    def __len__(self) -> int:
        return len(self.states)

    def __iter__(self) -> Iterator[CalibrationState]:
        return iter(self.states)

    def __getitem__(self, index: int) -> CalibrationState:
        return self.states[index]

    @property
    def has_confidence(self) -> bool:
        """True when every state carries a confidence vector."""
        return all(s.confidence is not None for s in self.states)

    def mask_ratios(self) -> Tensor:
        """``[N]`` float64, each state's ``mask_ratio``."""
        return torch.tensor([s.mask_ratio for s in self.states], dtype=torch.float64)

    def subset(self, indices: Sequence[int], note: str | None = None) -> CalibrationSet:
        """The states at ``indices`` (in that order), same provenance plus an optional note."""
        prov = (
            self.provenance
            if note is None
            else replace(self.provenance, notes=(*self.provenance.notes, note))
        )
        return CalibrationSet(tuple(self.states[i] for i in indices), prov, self.mask_token_id)

    def with_states(self, states: Sequence[CalibrationState]) -> CalibrationSet:
        """A set with the same provenance and mask token holding ``states`` instead."""
        return CalibrationSet(tuple(states), self.provenance, self.mask_token_id)

    def save(self, path: str | Path) -> Path:
        """Write the set to the directory ``path`` (see `dllm_calib.storage`); returns the directory."""
        from dllm_calib.storage import save_calibration_set

        return save_calibration_set(self, path)

    @classmethod
    def load(cls, path: str | Path) -> CalibrationSet:
        """Read a set written by `save`."""
        from dllm_calib.storage import load_calibration_set

        return load_calibration_set(path)

    def to_calibration_list(self) -> list[dict[str, list[int]]]:
        """``[{"input_ids": [...], "attention_mask": [...]}, ...]`` (see `dllm_calib.export`)."""
        from dllm_calib.export import to_calibration_list

        return to_calibration_list(self)

    def to_hf_dataset(self) -> Any:
        """A ``datasets.Dataset`` with ``input_ids`` and ``attention_mask`` columns (needs ``datasets``)."""
        from dllm_calib.export import to_hf_dataset

        return to_hf_dataset(self)

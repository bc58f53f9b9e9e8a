"""Per-token weights ``w_t`` for the collectors: a statistic over tokens becomes ``sum_t f(w_t) g(x_t)``.

The Hessian collector accumulates ``H = sum_t w_t^2 x_t x_t^T`` (so ``w`` scales the activation rows,
``X diag(w)``), the channel collector ``sum_t w_t |x_t|``. Every weighting returns ``w`` ``[B, L]`` with
zeros on padding, indexed by the position of the *activation*.

Dream's logit shift. In Dream the hidden state at position ``j`` produces the logits that predict token
``j + 1`` (docs/references.md#dream-7b), so the mask status and confidence that describe what the
activation at ``j`` is
working on are those of position ``j + 1``. `CertaintyWeight` therefore reads them at ``j + shift``
(``shift = model.logit_shift``: 0 for LLaDA, 1 for Dream). The last real position of a Dream sequence
predicts no token; it still feeds every other position through attention, so it is weighted as an
unmasked token with zero confidence (``unmasked`` under the default form). Confidences themselves are
stored per predicted token (``CalibrationState.confidence``), so no shift is needed to read them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from dllm_calib.batching import Batch

__all__ = ["CertaintyWeight", "TensorWeight", "TokenWeighting", "UniformWeight"]


class TokenWeighting(ABC):
    """Maps a batch to per-activation-position weights ``w`` ``[B, L]`` (float64, >= 0, 0 on padding)."""

    @abstractmethod
    def weights(self, batch: Batch) -> Tensor:
        """``[B, L]`` float64 weights for ``batch`` (collectors cast them to their accumulation dtype)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (recorded by the pipeline next to the statistics)."""


class UniformWeight(TokenWeighting):
    """``w = 1`` on every real token: the plain GPTQ Hessian / activation statistics."""

    def weights(self, batch: Batch) -> Tensor:
        return batch.attention_mask.to(torch.float64)

    def describe(self) -> dict[str, Any]:
        return {"kind": "uniform"}


def _shift(x: Tensor, shift: int, fill: float | bool) -> Tensor:
    """``out[:, j] = x[:, j + shift]``, ``fill`` past the end."""
    if shift == 0:
        return x
    out = torch.full_like(x, fill)
    out[:, :-shift] = x[:, shift:]
    return out


@dataclass(frozen=True)
class CertaintyWeight(TokenWeighting):
    """DLLMQuant's CGQ token weight (docs/references.md#cgq).

    With ``m_j`` the mask status and ``c_j`` the confidence read at ``j + logit_shift``:

    - ``ind_j = masked`` if ``m_j`` else ``unmasked`` (defaults 1.0 / 0.7);
    - ``term_j = c_j ** confidence_exponent`` (default 0.5, the square root; None drops the term), and 0 on
      unmasked tokens when ``confidence_on_unmasked`` is False;
    - ``form="survey"``: ``w_j = ind_j + term_j`` and the Hessian gets ``w_j^2`` (the survey's
      ``H = (X ⊙ w)(X ⊙ w)^T``);
      ``form="linear"``: ``c'_j = ind_j + term_j`` enters the Hessian linearly, ``w_j = sqrt(c'_j)``
      (the DLLMQuaRot reimplementation's ``H = 2 X diag(c) X^T``; see `reimplementation_variant`).

    Needs per-token confidence when ``confidence_exponent`` is not None (TMAS sets carry it; for other
    sets call `dllm_calib.score_confidence` first).
    """

    masked: float = 1.0
    unmasked: float = 0.7
    confidence_exponent: float | None = 0.5
    confidence_on_unmasked: bool = True
    form: Literal["survey", "linear"] = "survey"
    respect_logit_shift: bool = True

    def __post_init__(self) -> None:
        if self.masked < 0 or self.unmasked < 0:
            raise ValueError(
                f"indicator weights must be >= 0, got masked={self.masked}, unmasked={self.unmasked}"
            )
        if self.confidence_exponent is not None and self.confidence_exponent <= 0:
            raise ValueError(f"confidence_exponent must be > 0 or None, got {self.confidence_exponent}")
        if self.form not in ("survey", "linear"):
            raise ValueError(f"form must be 'survey' or 'linear', got {self.form!r}")

    @classmethod
    def reimplementation_variant(cls) -> CertaintyWeight:
        """DLLMQuaRot's weights: ``c = 0.5`` on decoded tokens, ``0.5 + conf`` on masked ones, linear in H.

        (Its normalisation to mean 1 is a global scale, absorbed by the collector's mass normalisation up
        to per-batch differences.)
        """
        return cls(
            masked=0.5, unmasked=0.5, confidence_exponent=1.0, confidence_on_unmasked=False, form="linear"
        )

    def weights(self, batch: Batch) -> Tensor:
        shift = batch.logit_shift if self.respect_logit_shift else 0
        valid = _shift(batch.attention_mask, shift, False)
        masked = _shift(batch.is_masked, shift, False) & valid
        w = torch.full(masked.shape, self.unmasked, dtype=torch.float64, device=masked.device)
        w[masked] = self.masked
        if self.confidence_exponent is not None:
            if batch.confidence is None:
                raise ValueError(
                    "CertaintyWeight needs per-token confidence but the calibration states have none; "
                    "build with "
                    "TMAS, call dllm_calib.score_confidence(model, calibration_set), or set "
                    "confidence_exponent=None"
                )
            term = _shift(batch.confidence.double(), shift, 0.0).clamp(0.0, 1.0) ** self.confidence_exponent
            keep = valid if self.confidence_on_unmasked else masked
            w = w + torch.where(keep, term, torch.zeros_like(term))
        if self.form == "linear":
            w = w.sqrt()
        return w * batch.attention_mask

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "certainty",
            "masked": self.masked,
            "unmasked": self.unmasked,
            "confidence_exponent": self.confidence_exponent,
            "confidence_on_unmasked": self.confidence_on_unmasked,
            "form": self.form,
            "respect_logit_shift": self.respect_logit_shift,
        }


class TensorWeight(TokenWeighting):
    """User-given weights: one ``[L_i]`` tensor of ``w`` per state, indexed like the set (per activation
    position, no shift applied; padding positions get 0 whatever the tensor says)."""

    def __init__(self, weights: Sequence[Tensor], name: str = "user") -> None:
        self._weights = [torch.as_tensor(w, dtype=torch.float64).flatten() for w in weights]
        for i, w in enumerate(self._weights):
            if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise ValueError(f"user weight tensor {i} must be finite and >= 0")
        self.name = name

    def weights(self, batch: Batch) -> Tensor:
        out = torch.zeros(batch.attention_mask.shape, dtype=torch.float64)
        for row, i in enumerate(batch.indices):
            if i >= len(self._weights):
                raise ValueError(f"TensorWeight has {len(self._weights)} tensors but state {i} was requested")
            w, length = self._weights[i], batch.lengths[row]
            if w.numel() != length:
                raise ValueError(
                    f"TensorWeight tensor {i} has {w.numel()} entries but state {i} has length {length}"
                )
            out[row, :length] = w
        return out.to(batch.attention_mask.device) * batch.attention_mask

    def describe(self) -> dict[str, Any]:
        return {"kind": "tensor", "name": self.name, "num_states": len(self._weights)}

"""CGQ (DLLMQuant's Certainty-Guided Quantization): GPTQ on a certainty-weighted Hessian.

CGQ changes only the statistics (docs/references.md#cgq): every calibration token ``t`` contributes
``w_t^2 x_t x_t^T`` to the layer Hessian, where ``w_t = (masked if t is masked else unmasked) +
confidence_t^confidence_exponent`` (defaults 1.0 / 0.7 / 0.5: the survey's ``1[X_t = M] + sqrt(sc_t)``
with the reviewers' "1 and 0.7"). ``dllm_calib.CertaintyWeight`` computes these weights inside its
Hessian collector (with Dream's logit shift); :meth:`CGQConfig.weighting` builds it from this config, so a
recipe names the weighting once, here.

The quantizer is :func:`~dllm_weightquant.gptq.gptq_quantize` unchanged: CGQ with uniform token weights
*is* GPTQ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dllm_calib import CertaintyWeight, MethodConfig, check_bool, check_choice, check_range
from dllm_kernels import QuantSpec
from torch import Tensor

from dllm_weightquant.gptq import GPTQConfig, gptq_quantize
from dllm_weightquant.qweight import QuantizedWeight

__all__ = ["CGQConfig", "cgq_quantize"]


@dataclass(frozen=True)
class CGQConfig(MethodConfig):
    """CGQ: the certainty weighting of the Hessian plus the GPTQ settings that consume it.

    Attributes:
        gptq: the GPTQ settings.
        masked: indicator value on masked tokens.
        unmasked: indicator value on visible tokens.
        confidence_exponent: ``confidence^e`` is added to the indicator (0.5 = square root); None drops it.
        confidence_on_unmasked: add the confidence term on visible tokens too.
        form: ``"survey"`` (the Hessian gets ``w^2``) or ``"linear"`` (it gets ``w`` linearly, as the
            DLLMQuaRot reimplementation; with ``masked = unmasked = 0.5``, exponent 1 and no confidence
            on unmasked tokens this is that variant).
    """

    gptq: GPTQConfig = field(default_factory=GPTQConfig)
    masked: float = 1.0
    unmasked: float = 0.7
    confidence_exponent: float | None = 0.5
    confidence_on_unmasked: bool = True
    form: str = "survey"

    def validate(self) -> None:
        check_range("CGQConfig", "masked", self.masked, 0.0, 1e6)
        check_range("CGQConfig", "unmasked", self.unmasked, 0.0, 1e6)
        if self.confidence_exponent is not None:
            check_range("CGQConfig", "confidence_exponent", self.confidence_exponent, 0.0, 1e6, lo_open=True)
        check_bool("CGQConfig", "confidence_on_unmasked", self.confidence_on_unmasked)
        check_choice("CGQConfig", "form", self.form, ("survey", "linear"))

    def weighting(self) -> CertaintyWeight:
        """The ``dllm_calib`` token weighting whose Hessian this method quantizes against."""
        return CertaintyWeight(
            masked=self.masked,
            unmasked=self.unmasked,
            confidence_exponent=self.confidence_exponent,
            confidence_on_unmasked=self.confidence_on_unmasked,
            form=self.form,  # type: ignore[arg-type]
        )


def cgq_quantize(
    weight: Tensor, hessian: Tensor, spec: QuantSpec, config: CGQConfig | None = None
) -> QuantizedWeight:
    """GPTQ with ``config.gptq`` on ``hessian``, the Hessian collected with ``config.weighting()``."""
    config = config or CGQConfig()
    return gptq_quantize(weight, hessian, spec, config.gptq)

"""Method registry: name -> (config class, function, kind).

Two kinds of methods:

* ``"quantizer"``: ``fn(weight [out, in], hessian [in, in] | None, spec, config) -> QuantizedWeight |
  MultiBinaryWeight`` (RTN ignores the Hessian; the others need it);
* ``"transform"``: ``fn(topology, hessians, act_mean_abs, spec, config) -> results``; changes the model's
  weights without changing its float function (AWQ), to be followed by a quantizer.

A recipe names a method and gives its config as a dict: ``get_method(name).config_cls.from_dict(d)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dllm_weightquant.abmp import ABMPConfig, abmp_quantize
from dllm_weightquant.awq import AWQConfig, apply_awq
from dllm_weightquant.cgq import CGQConfig, cgq_quantize
from dllm_weightquant.daq import DAQConfig, daq_quantize
from dllm_weightquant.gptq import GPTQConfig, gptq_quantize
from dllm_weightquant.rtn import RTNConfig, rtn_quantize

__all__ = ["METHODS", "Method", "get_method"]


@dataclass(frozen=True)
class Method:
    """A registered method: its config class, its function and its kind (``"quantizer"`` or ``"transform"``).

    ``needs_hessian`` says whether a quantizer reads the layer Hessian.
    """

    name: str
    config_cls: type
    fn: Callable[..., Any]
    kind: str
    needs_hessian: bool


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("rtn", RTNConfig, rtn_quantize, "quantizer", needs_hessian=False),
        Method("gptq", GPTQConfig, gptq_quantize, "quantizer", needs_hessian=True),
        Method("cgq", CGQConfig, cgq_quantize, "quantizer", needs_hessian=True),
        Method("daq", DAQConfig, daq_quantize, "quantizer", needs_hessian=True),
        Method("abmp", ABMPConfig, abmp_quantize, "quantizer", needs_hessian=True),
        Method("awq", AWQConfig, apply_awq, "transform", needs_hessian=True),
    )
}


def get_method(name: str) -> Method:
    """The method registered as ``name`` (case-insensitive); ``KeyError`` lists the known names."""
    key = name.lower() if isinstance(name, str) else name
    if key not in METHODS:
        raise KeyError(f"unknown weight-quantization method {name!r}; known: {sorted(METHODS)}")
    return METHODS[key]

"""Layer Hessians and the GPTQ layer objective.

For a Linear ``y = x W^T`` the output error of a quantized weight ``Q`` over calibration inputs
``x_t`` (token weights ``c_t``) is ``sum_t c_t |(W - Q) x_t|^2 = tr((W - Q) H (W - Q)^T)`` with
``H = sum_t c_t x_t x_t^T``. ``dllm_calib``'s collectors stream ``H`` over a calibration set; the helpers here
build it from an in-memory activation matrix (tests, benchmarks, small studies) and evaluate the objective.
"""

from __future__ import annotations

import torch
from dllm_sampler import all_finite
from torch import Tensor

from dllm_weightquant._checks import check_hessian, check_weight

__all__ = ["hessian_from_inputs", "inverse_hessian_factor", "layer_objective"]


def hessian_from_inputs(x: Tensor, token_weights: Tensor | None = None) -> Tensor:
    """``H = X^T diag(c) X / T`` in float64 from inputs ``x [..., in]`` (T tokens) and optional ``c [...]``.

    ``token_weights`` multiply ``x_t x_t^T`` (a CGQ weight ``w_t`` on the activations is ``c_t = w_t^2``).
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError(f"x must be a float tensor [..., in], got {getattr(x, 'shape', type(x))}")
    xf = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
    if not bool(torch.isfinite(xf).all()):
        raise ValueError("x contains NaN or Inf values")
    if token_weights is None:
        return xf.T @ xf / xf.shape[0]
    c = token_weights.detach().reshape(-1).to(xf.device, torch.float64)
    if c.shape[0] != xf.shape[0] or not bool(torch.isfinite(c).all()) or bool((c < 0).any()):
        raise ValueError(
            f"token_weights must be {xf.shape[0]} finite non-negative numbers (one per token), got shape "
            f"{tuple(token_weights.shape)}"
        )
    return (xf * c[:, None]).T @ xf / xf.shape[0]


def layer_objective(weight: Tensor, quantized: Tensor, hessian: Tensor) -> float:
    """``tr((W - Q) H (W - Q)^T)`` (float64) for ``weight``, ``quantized [out, in]``, ``hessian [in, in]``."""
    w = check_weight(weight)
    q = check_weight(quantized, "quantized")
    if q.shape != w.shape:
        raise ValueError(f"quantized has shape {tuple(q.shape)}, expected the weight's {tuple(w.shape)}")
    h = check_hessian(hessian, w.shape[1]).to(w.device, torch.float64)
    e = w.to(torch.float64) - q.to(w.device, torch.float64)
    return float(((e @ h) * e).sum())


def inverse_hessian_factor(
    hessian: Tensor, damp_percent: float, retries: int
) -> tuple[Tensor | None, float, int]:
    """Upper Cholesky factor ``U`` of ``(H + damp I)^-1`` (so ``(H + damp I)^-1 = U^T U``).

    ``damp = damp_percent * mean(diag H)``, multiplied by 10 after each failed factorisation, at most
    ``retries`` times. Returns ``(U, damp used, failed attempts)``; ``U`` is None when every attempt failed
    (H far from positive definite), with the last damping tried.
    """
    damp = float(damp_percent * hessian.diagonal().mean())
    for attempt in range(retries + 1):
        damped = hessian.clone()
        damped.diagonal().add_(damp)
        chol, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            u, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(chol), upper=True)
            if int(info) == 0 and all_finite(u):
                return u, damp, attempt
        if attempt < retries:
            damp *= 10.0
    return None, damp, retries + 1

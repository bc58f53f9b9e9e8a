"""DAQ (Quant-dLLM's Data-aware Any-order Quantizer): multi-binary planes fitted with DOR and RSR.

docs/references.md#daq. For ``W [out, in]`` and the calibration Hessian ``S [in, in]``:

* **DOR** importance: ``D = diag((S + delta I)^-1)`` (delta = damp_percent * mean(diag S), raised x10 on a
  failed Cholesky), ``Z_ij = (W_ij / D_jj)^2``; within each column group ``Z`` is standardised
  (``(Z - mu) / sigma`` over the group) and entries beyond ``sigma_threshold`` (3-sigma rule) get the weight
  ``lam``, the rest 1: ``Lambda = 1 + (lam - 1) * 1[|Z~| > 3]``. The fit minimises
  ``|Lambda * (W - W^)|_F^2``.
* **Any order** (K planes = bits): greedy residual fitting (plane k starts from ``B = sign(R)``,
  ``alpha_r = mean_j |R_ij|``, ``alpha_c = 1`` on the residual ``R`` of the planes before it, then one RSR
  step), followed by ``iterations`` sweeps that refit every plane against ``W`` minus the others.
* **RSR** (row-column successive rescaling): for one plane against target ``T`` the closed-form weighted
  least squares ``alpha_r = [(L2 * T * B) alpha_c] / [L2 (alpha_c^2)]``, then ``alpha_c`` likewise, then
  re-rounding ``B = sign(T * alpha_r alpha_c^T)`` (``L2 = Lambda^2``). Each update exactly minimises the
  objective in its variables, so the error never increases; a zero denominator leaves the scale at 0 and
  a zero product keeps the previous sign (instead of an epsilon that would break monotonicity).
* **Error compensation** between column groups (``compensate``, on by default following the
  reproduction, docs/references.md#daq): after group ``g`` is fixed, the remaining columns absorb its error by
  the exact block OBS update ``W[:, after] -= (W_g - Q_g) U_gg^-1 U_g,after`` with ``U`` the upper Cholesky
  factor of ``S^-1`` (the reproduction uses ``diag(U_gg)`` in place of ``U_gg``). ``Z`` and ``Lambda`` are
  computed once from the uncompensated weights.

Dead inputs (``S_jj = 0``) are masked as in GPTQ (``S_jj = 1``, ``W[:, j] = 0``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from dllm_calib import MethodConfig, check_bool, check_choice, check_range
from dllm_kernels import QuantSpec
from torch import Tensor

from dllm_weightquant._checks import check_hessian, check_weight
from dllm_weightquant.gptq import COMPUTE_DTYPES, prepare_hessian
from dllm_weightquant.hessian import inverse_hessian_factor
from dllm_weightquant.multibinary import MultiBinaryWeight, combine_planes

__all__ = [
    "DAQConfig",
    "DORContext",
    "check_daq_spec",
    "daq_group_size",
    "daq_quantize",
    "dor_weights",
    "fit_multibinary",
    "prepare_dor",
    "quantize_groups",
    "weighted_error",
]

MAX_ORDER = 4


@dataclass(frozen=True)
class DAQConfig(MethodConfig):
    """DAQ settings.

    Attributes:
        lam: DOR weight of the salient (3-sigma) entries, >= 1 (2.0).
        sigma_threshold: the outlier threshold in standard deviations (3.0).
        iterations: RSR refit sweeps over all planes after the greedy fit (10).
        damp_percent: damping of ``S`` as a fraction of ``mean(diag S)`` (0.01).
        damp_retries: x10 damping retries after a failed Cholesky.
        compensate: GPTQ-style error compensation between column groups.
        compute_dtype: ``"float32"`` or ``"float64"``.
    """

    lam: float = 2.0
    sigma_threshold: float = 3.0
    iterations: int = 10
    damp_percent: float = 0.01
    damp_retries: int = 3
    compensate: bool = True
    compute_dtype: str = "float32"

    def validate(self) -> None:
        check_range("DAQConfig", "lam", self.lam, 1.0, 1e6)
        check_range("DAQConfig", "sigma_threshold", self.sigma_threshold, 0.0, 1e6, lo_open=True)
        for name in ("iterations", "damp_retries"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"DAQConfig.{name} must be a non-negative integer, got {v!r}")
        check_range("DAQConfig", "damp_percent", self.damp_percent, 0.0, 1e6, lo_open=True)
        check_bool("DAQConfig", "compensate", self.compensate)
        check_choice("DAQConfig", "compute_dtype", self.compute_dtype, tuple(COMPUTE_DTYPES))


def dor_weights(importance: Tensor, group_size: int, lam: float, sigma_threshold: float) -> Tensor:
    """``Lambda [out, in]``: ``lam`` where ``|Z - mu_g| > sigma_threshold * sd_g`` in group g, else 1."""
    out, inp = importance.shape
    z = importance.reshape(out, inp // group_size, group_size)
    mu = z.mean(dim=(0, 2), keepdim=True)
    sd = z.std(dim=(0, 2), keepdim=True, correction=0)
    salient = (z - mu).abs() > sigma_threshold * sd
    return (1.0 + (lam - 1.0) * salient.to(importance.dtype)).reshape(out, inp)


def weighted_error(target: Tensor, lam2: Tensor, positive: Tensor, alpha_r: Tensor, alpha_c: Tensor) -> float:
    """``sum Lambda^2 * (T - sum_k alpha_r alpha_c^T * B_k)^2`` in the dtype of ``target``."""
    signs = positive.to(target.dtype) * 2 - 1
    approx = (alpha_r[:, :, None] * alpha_c[:, None, :] * signs).sum(0)
    return float((lam2 * (target - approx) ** 2).sum())


def _rsr_step(t: Tensor, lam2: Tensor, b: Tensor, ar: Tensor, ac: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One RSR update of a single plane against target ``t``: alpha_r, then alpha_c, then the signs."""
    ltb = lam2 * t * b
    den_r = lam2 @ (ac * ac)
    ar = torch.where(den_r > 0, (ltb @ ac) / torch.where(den_r > 0, den_r, 1), torch.zeros_like(den_r))
    den_c = lam2.T @ (ar * ar)
    ac = torch.where(den_c > 0, (ltb.T @ ar) / torch.where(den_c > 0, den_c, 1), torch.zeros_like(den_c))
    prod = t * ar[:, None] * ac[None, :]
    b = torch.where(prod > 0, torch.ones_like(b), torch.where(prod < 0, -torch.ones_like(b), b))
    return b, ar, ac


def fit_multibinary(
    target: Tensor, lam2: Tensor, order: int, iterations: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Fit ``order`` planes to ``target [out, G]`` under weights ``lam2 [out, G]``.

    Returns ``(positive bool [K, out, G], alpha_r [K, out], alpha_c [K, G])`` in the dtype of ``target``.
    """
    if not 1 <= order <= 8:
        raise ValueError(f"order must be in [1, 8], got {order}")
    bs: list[Tensor] = []
    ars: list[Tensor] = []
    acs: list[Tensor] = []
    resid = target.clone()
    for _ in range(order):
        b = torch.where(resid >= 0, 1.0, -1.0).to(target.dtype)
        ar = resid.abs().mean(dim=1)
        ac = torch.ones(target.shape[1], dtype=target.dtype, device=target.device)
        b, ar, ac = _rsr_step(resid, lam2, b, ar, ac)
        resid = resid - ar[:, None] * ac[None, :] * b
        bs.append(b)
        ars.append(ar)
        acs.append(ac)
    for _ in range(iterations):
        for k in range(order):
            t = resid + ars[k][:, None] * acs[k][None, :] * bs[k]
            bs[k], ars[k], acs[k] = _rsr_step(t, lam2, bs[k], ars[k], acs[k])
            resid = t - ars[k][:, None] * acs[k][None, :] * bs[k]
    return torch.stack(bs) > 0, torch.stack(ars), torch.stack(acs)


@dataclass(frozen=True, eq=False)
class DORContext:
    """A layer prepared for multi-binary quantization: compute-dtype ``weight`` (dead inputs zeroed), the
    upper Cholesky factor ``u`` of the damped inverse Hessian, and the DOR importance ``z`` ``[out, in]``."""

    weight: Tensor
    u: Tensor
    z: Tensor


def prepare_dor(weight: Tensor, hessian: Tensor, config: DAQConfig, method: str) -> DORContext:
    """Validate the inputs and compute the inverse-Hessian factor and ``Z = (W / diag(S^-1))^2``."""
    w_in = check_weight(weight)
    h_in = check_hessian(hessian, w_in.shape[1])
    w, h = prepare_hessian(w_in, h_in, COMPUTE_DTYPES[config.compute_dtype])
    u, damp, failures = inverse_hessian_factor(h, config.damp_percent, config.damp_retries)
    if u is None:
        raise ValueError(
            f"{method}: the Hessian is not positive definite even with damping {damp:.3g}; check the "
            "calibration statistics (or raise damp_percent / damp_retries)"
        )
    if failures:
        warnings.warn(
            f"{method}: Cholesky failed {failures} time(s); succeeded after raising the damping to "
            f"{damp:.3g}",
            RuntimeWarning,
            stacklevel=3,
        )
    d = (u * u).sum(dim=0)
    return DORContext(weight=w, u=u, z=(w / d) ** 2)


def quantize_groups(
    ctx: DORContext, orders: list[int], group_size: int, config: DAQConfig
) -> MultiBinaryWeight:
    """Fit every column group with its order (planes), compensating later groups if configured."""
    w = ctx.weight.clone()
    out, inp = w.shape
    lam2 = dor_weights(ctx.z, group_size, config.lam, config.sigma_threshold) ** 2
    signs: list[Tensor] = []
    alphas_r: list[Tensor] = []
    alphas_c: list[Tensor] = []
    for g, order in enumerate(orders):
        lo, hi = g * group_size, (g + 1) * group_size
        target = w[:, lo:hi]
        positive, ar, ac = fit_multibinary(target, lam2[:, lo:hi], order, config.iterations)
        signs.append(positive)
        alphas_r.append(ar.float())
        alphas_c.append(ac.float())
        if config.compensate and hi < inp:
            err = target - combine_planes(positive, ar, ac).to(w.dtype)
            e = torch.linalg.solve_triangular(ctx.u[lo:hi, lo:hi], err, upper=True, left=False)
            w[:, hi:] -= e @ ctx.u[lo:hi, hi:]
    return MultiBinaryWeight.from_planes(signs, alphas_r, alphas_c, (out, inp), group_size)


def check_daq_spec(spec: object, method: str = "DAQ", max_bits: int = MAX_ORDER) -> QuantSpec:
    """``spec`` if a multi-binary quantizer can fit it: one binary plane per bit, 2 to ``max_bits`` bits,
    symmetric (planes have no zero point), integer, granularity group or channel.

    Raises:
        ValueError: naming what does not fit and the settings that do.
    """
    if not isinstance(spec, QuantSpec):
        raise ValueError(f"{method}: spec must be a dllm_kernels.QuantSpec, got {type(spec).__name__}")
    if spec.is_fp8 or spec.granularity not in ("group", "channel"):
        raise ValueError(
            f"{method}: needs an integer spec with granularity 'group' (column groups, e.g. 128) or "
            f"'channel' (one group), got {spec}"
        )
    if not spec.symmetric:
        raise ValueError(
            f"{method}: multi-binary planes have no zero point; use a symmetric spec (symmetric=True)"
        )
    if not 2 <= spec.bits <= max_bits:
        labels = ", ".join(f"W{b}A16" for b in range(2, max_bits + 1))
        raise ValueError(
            f"{method} supports 2 to {max_bits} bits (binary planes), got bits={spec.bits}; use one of "
            f"{labels}"
        )
    return spec


def daq_group_size(spec: QuantSpec, inp: int, method: str) -> int:
    """Column group width of a multi-binary quantizer for a checked ``spec`` (``in`` per channel)."""
    group = int(spec.group_size) if spec.granularity == "group" and spec.group_size else inp
    if inp % group:
        raise ValueError(
            f"{method}: group_size={group} does not divide the input width {inp}; pick a group size that "
            "divides it"
        )
    return group


def daq_quantize(
    weight: Tensor, hessian: Tensor, spec: QuantSpec, config: DAQConfig | None = None
) -> MultiBinaryWeight:
    """DAQ with ``K = spec.bits`` planes in every column group of ``spec.group_size`` (or one group per row).

    Supports 2..4 bits (symmetric, granularity group or channel); raises ``ValueError`` otherwise.
    """
    config = config or DAQConfig()
    spec = check_daq_spec(spec)
    inp = check_weight(weight).shape[1]
    group = daq_group_size(spec, inp, "DAQ")
    ctx = prepare_dor(weight, hessian, config, "DAQ")
    return quantize_groups(ctx, [spec.bits] * (inp // group), group, config)

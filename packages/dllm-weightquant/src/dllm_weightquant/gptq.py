"""GPTQ: column-by-column quantization with optimal error compensation (Frantar et al., 2022).

For a weight ``W [out, in]`` and a layer Hessian ``H [in, in]`` (any: plain ``X^T X``, DLLMQuant's
certainty-weighted one, ...), GPTQ quantizes one input column at a time and moves each column's rounding
error onto the columns not quantized yet, weighted by the inverse Hessian, which greedily minimises
``tr((W - Q) H (W - Q)^T)``. This implementation:

* masks dead inputs (``H_ii = 0``): ``H_ii = 1`` and ``W[:, i] = 0``;
* damps ``H += damp_percent * mean(diag H) * I``; if a Cholesky factorisation fails the damping is raised
  x10 up to ``damp_retries`` times (with a warning), then it falls back to RTN (with a warning);
* works on the upper Cholesky factor ``U`` of ``H^-1`` in blocks of ``block_size`` columns with lazy
  batch updates of the columns after the block (numerically the same as updating every column at
  every step: the tests hold it to a plain dense implementation);
* fixes each group's scale by a policy (``scales``): ``"static"`` computes every group's min/max scale from
  the original weights before the sweep (llm-compressor's and AutoGPTQ's ``static_groups``: the scales are
  exactly RTN's), ``"mse"`` does the same with a per-group MSE clip search (``clip``'s settings: the scales
  are exactly RTN's with that search), ``"dynamic"`` computes a group's scale lazily, when the first column
  of the group is reached, from the group's *current* (error-updated) weights (the original GPTQ code and
  AutoGPTQ's default, optionally with ``clip``'s search as QuaRot's GPTQ); columns of the group that lie
  after the running block get the pending updates of the block applied on the fly, so the result does not
  depend on ``block_size``. Per channel or per tensor the three differ only by the search: the one group
  starts with the first processed column, before any update;
* static act-order (``actorder="static"``, compressed-tensors' ``"static"`` = ``"weight"``): columns are
  processed by descending ``diag(H)``, but scale groups stay the contiguous column groups of the original
  order (a group's scale is computed when its first column in processing order is reached). Codes are
  written back in the original column order, so the checkpoint format is exactly that of no act-order:
  no ``g_idx`` is stored and the group-wise GEMM runs unchanged. (The alternative, groups formed in the
  permuted order and mapped back through ``g_idx`` = compressed-tensors' deprecated ``"group"``, costs a
  gather at inference and is not produced here.)

Dead inputs are masked before any scale is computed, so a static scale ignores a dead column's weights
(llm-compressor's observer sees them; they are zero in the result either way).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from dllm_calib import MethodConfig, check_choice, check_positive_int, check_range
from dllm_kernels import GGUFSpec, QuantSpec, torch_grid
from dllm_kernels.cpu.gptq_block import gptq_block
from torch import Tensor

from dllm_weightquant._checks import check_hessian, check_uniform_spec, check_weight, n_groups
from dllm_weightquant.gguf.quantize import GGUFGroupParams, gguf_spec_for
from dllm_weightquant.gguf.weight import GGUFWeight
from dllm_weightquant.grid import ClipSearch, search_params
from dllm_weightquant.hessian import inverse_hessian_factor
from dllm_weightquant.qweight import QuantizedWeight
from dllm_weightquant.rtn import RTNConfig, rtn_quantize, weight_cells

__all__ = ["COMPUTE_DTYPES", "SCALE_POLICIES", "GPTQConfig", "gptq_quantize", "gptq_sweep", "prepare_hessian"]

COMPUTE_DTYPES = {"float32": torch.float32, "float64": torch.float64}
SCALE_POLICIES = ("static", "dynamic", "mse")
"""When and how group scales are fixed (see the module docstring)."""


@dataclass(frozen=True)
class GPTQConfig(MethodConfig):
    """GPTQ settings.

    Attributes:
        block_size: columns per lazy-update block (128).
        damp_percent: damping as a fraction of ``mean(diag H)`` (0.01).
        actorder: ``"static"`` (process columns by descending ``diag(H)``, groups unchanged) or None.
        scales: the scale policy, one of ``SCALE_POLICIES``: ``"static"`` (min/max of the original weights,
            before the sweep), ``"mse"`` (``clip``'s search on the original weights, before the sweep) or
            ``"dynamic"`` (min/max, or ``clip``'s search, of the current weights when the sweep reaches
            the group).
        clip: the MSE clip search's settings: used by ``"mse"`` (None: ``ClipSearch()``) and, when set, by
            ``"dynamic"``; must be None with ``"static"``.
        damp_retries: how many times the damping is multiplied by 10 after a failed Cholesky.
        compute_dtype: ``"float32"`` or ``"float64"`` for the weights and the inverse Hessian.
    """

    block_size: int = 128
    damp_percent: float = 0.01
    actorder: str | None = "static"
    scales: str = "mse"
    clip: ClipSearch | None = None
    damp_retries: int = 3
    compute_dtype: str = "float32"

    def validate(self) -> None:
        check_positive_int("GPTQConfig", "block_size", self.block_size)
        check_range("GPTQConfig", "damp_percent", self.damp_percent, 0.0, 1e6, lo_open=True)
        check_choice("GPTQConfig", "actorder", self.actorder, ("static", None))
        check_choice("GPTQConfig", "scales", self.scales, SCALE_POLICIES)
        if self.scales == "static" and self.clip is not None:
            raise ValueError(
                "GPTQConfig: scales 'static' takes the plain min/max of the original weights, so clip "
                f"({self.clip!r}) would be ignored; set scales: mse for a clip search on the original "
                "weights (or scales: dynamic for one on the error-updated weights)"
            )
        if (
            isinstance(self.damp_retries, bool)
            or not isinstance(self.damp_retries, int)
            or self.damp_retries < 0
        ):
            raise ValueError(
                f"GPTQConfig.damp_retries must be a non-negative integer, got {self.damp_retries!r}"
            )
        check_choice("GPTQConfig", "compute_dtype", self.compute_dtype, tuple(COMPUTE_DTYPES))

    def search(self) -> ClipSearch | None:
        """The clip search this config's scales use (None: plain min/max)."""
        if self.scales == "mse":
            return self.clip or ClipSearch()
        return self.clip


def prepare_hessian(weight: Tensor, hessian: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Copies of ``W`` and ``H`` in ``dtype`` (on the weight's device) with dead inputs masked.

    Dead input ``i`` (``H_ii == 0``: the input was always zero) gets ``H_ii = 1`` and ``W[:, i] = 0``.
    """
    w = weight.to(dtype).clone()
    h = hessian.to(weight.device, dtype).clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    return w, h


class _GroupParams:
    """Scale and signed zero of every group; ``position_group[j]`` is the group of processed column j.

    Static policies fill every group up front (:meth:`fill_all`); the dynamic one fills a group when the
    sweep reaches it (:meth:`fill`).
    """

    def __init__(
        self, spec: QuantSpec, clip: ClipSearch | None, out: int, perm: Tensor, device: torch.device
    ) -> None:
        inp = perm.shape[0]
        self.spec = spec
        self.clip = clip
        size = int(spec.group_size) if spec.granularity == "group" and spec.group_size else inp
        count = n_groups(spec, inp)
        self.position_group: list[int] = (perm // size).tolist()
        inv = torch.argsort(perm)
        self.members = [torch.sort(inv[g * size : (g + 1) * size]).values.to(device) for g in range(count)]
        # stored transposed, [groups, out]: the sweep reads one group's row per column
        self.scale_t = torch.empty(count, out, dtype=torch.float32, device=device)
        self.zero_t = None if spec.symmetric else torch.empty(count, out, dtype=torch.int32, device=device)
        self.done = [False] * count

    def fill_all(self, weight: Tensor) -> None:
        """Set every group from ``weight [out, in]`` in the original column order (RTN's parameters)."""
        s, z = search_params(weight_cells(weight, self.spec), self.spec.bits, self.spec.symmetric, self.clip)
        self.scale_t.copy_(s.T.expand_as(self.scale_t))
        if self.zero_t is not None and z is not None:
            self.zero_t.copy_(z.T.expand_as(self.zero_t))
        self.done = [True] * len(self.done)

    def fill(self, g: int, current: Tensor) -> None:
        """Set group ``g`` from its current weights ``[out, size]`` (tensor granularity: one cell for all)."""
        cells = current.reshape(1, -1) if self.spec.granularity == "tensor" else current
        s, z = search_params(cells, self.spec.bits, self.spec.symmetric, self.clip)
        self.scale_t[g] = s
        if self.zero_t is not None and z is not None:
            self.zero_t[g] = z
        self.done[g] = True

    def encode(self, g: int, column: Tensor) -> Tensor:
        """Signed int8 codes ``[out]`` of one column of group ``g``."""
        return torch_grid.encode(
            column, self.scale_t[g], None if self.zero_t is None else self.zero_t[g], self.spec.bits
        )

    def decode(self, g: int, codes: Tensor) -> Tensor:
        """float32 values ``[out]`` of one column's codes in group ``g``."""
        return torch_grid.decode(codes, self.scale_t[g], None if self.zero_t is None else self.zero_t[g])

    def result(self) -> tuple[Tensor, Tensor | None]:
        """(scale, signed zero) shaped as ``QuantizedWeight`` wants."""
        if self.spec.granularity == "tensor":
            return self.scale_t[0, :1].clone(), None if self.zero_t is None else self.zero_t[0, :1].clone()
        return self.scale_t.T.contiguous(), None if self.zero_t is None else self.zero_t.T.contiguous()


def gptq_quantize(
    weight: Tensor, hessian: Tensor, spec: QuantSpec, config: GPTQConfig | None = None
) -> QuantizedWeight | GGUFWeight:
    """GPTQ-quantize ``weight [out, in]`` against ``hessian [in, in]``; returns a CPU ``QuantizedWeight``.

    Runs on the device of ``weight``. Raises ``ValueError`` for non-finite inputs, a Hessian of the wrong
    shape or a spec that cannot describe a weight (fp8, token granularity, group size not dividing ``in``).
    A ``GGUFSpec`` gives a ``GGUFWeight``: the sweep encodes and decodes on the GGUF grid
    (``gguf.GGUFGroupParams``), with the format's scale rounding inside the error compensation.
    """
    return _sweep(weight, hessian, spec, config, keep_values=False)[0]


def gptq_sweep(
    weight: Tensor, hessian: Tensor, spec: QuantSpec, config: GPTQConfig | None = None
) -> tuple[QuantizedWeight, Tensor]:
    """:func:`gptq_quantize` plus the values ``[out, in]`` (compute dtype, original column order, on the
    weight's device) that the sweep rounded each column to and compensated the error of; the quantized
    weight dequantizes to exactly these values."""
    quantized, values = _sweep(weight, hessian, spec, config, keep_values=True)
    assert values is not None
    return quantized, values


def _sweep(
    weight: Tensor, hessian: Tensor, spec: QuantSpec, config: GPTQConfig | None, keep_values: bool
) -> tuple[QuantizedWeight, Tensor | None]:
    """The GPTQ sweep; the values come back (un-permuted, a full ``[out, in]`` gather) only if asked."""
    config = config or GPTQConfig()
    w_in = check_weight(weight)
    out, inp = w_in.shape
    spec = check_uniform_spec(spec, inp, "GPTQ")
    h_in = check_hessian(hessian, inp)
    dtype = COMPUTE_DTYPES[config.compute_dtype]
    w, h = prepare_hessian(w_in, h_in, dtype)
    gguf = isinstance(spec, GGUFSpec)
    if gguf:
        if config.clip is not None:
            raise ValueError(f"GPTQ on the GGUF grid {spec.gguf_type} has no clip search; drop clip")
        spec = gguf_spec_for(spec, inp)
    search = None if gguf else config.search()

    if config.actorder == "static":
        perm = torch.argsort(h.diagonal(), descending=True, stable=True)
    else:
        perm = torch.arange(inp, device=w.device)
    params: _GroupParams | GGUFGroupParams
    if gguf:
        params = GGUFGroupParams(spec, w, perm.cpu(), w.device)  # the format's super-block parameters
    else:
        params = _GroupParams(spec, search, out, perm.cpu(), w.device)
        if config.scales != "dynamic":
            params.fill_all(w)
    if config.actorder == "static":
        w, h = w[:, perm], h.index_select(0, perm).index_select(1, perm)

    u, damp, failures = inverse_hessian_factor(h, config.damp_percent, config.damp_retries)
    if u is None:
        warnings.warn(
            f"GPTQ: the Hessian is not positive definite even with damping {damp:.3g}; falling back to RTN "
            "for this layer (check the calibration statistics)",
            RuntimeWarning,
            stacklevel=2,
        )
        w_rtn = torch.empty_like(w)
        w_rtn[:, perm] = w
        rtn = rtn_quantize(w_rtn, None, spec, RTNConfig(clip=search))
        return rtn, rtn.dequantize().to(w.device, dtype)
    if failures:
        warnings.warn(
            f"GPTQ: Cholesky failed {failures} time(s); succeeded after raising the damping to {damp:.3g}",
            RuntimeWarning,
            stacklevel=2,
        )

    codes, values = _solve(w, u, params, config.block_size)
    inv = torch.argsort(perm)
    codes, values = codes[:, inv], values[:, inv] if keep_values else None
    if isinstance(params, GGUFGroupParams):
        return params.weight(codes), values
    scale, zero = params.result()
    if zero is not None:
        codes, zero = torch_grid.to_unsigned(codes, zero, spec.bits)
    return QuantizedWeight.from_codes(codes, scale, zero, spec), values


def _solve(
    w: Tensor, u: Tensor, params: _GroupParams | GGUFGroupParams, block_size: int
) -> tuple[Tensor, Tensor]:
    """The blocked GPTQ sweep over the (permuted) columns of ``w [out, in]``; returns the grid codes and their
    values ``[out, in]`` in processing order. ``params`` fills a group's parameters and encodes / decodes a
    column on its grid. Works on ``W^T`` so that every column is a contiguous row; the values overwrite the
    processed rows of ``W^T``."""
    out, inp = w.shape
    wt = w.T.contiguous()
    codes = torch.empty(inp, out, dtype=torch.int8, device=w.device)
    fixed = _fixed_grid(params, w)
    for i1 in range(0, inp, block_size):
        i2 = min(i1 + block_size, inp)
        w1 = wt[i1:i2].clone()
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        if fixed is not None:
            scale_t, zero_t, groups = fixed
            rows = groups[i1:i2]
            gptq_block(
                w1.numpy(),
                u1.contiguous().numpy(),
                scale_t.index_select(0, rows).numpy(),
                zero_t.index_select(0, rows).numpy(),
                params.spec.bits,
                min(out, 16),
                codes[i1:i2].numpy(),
                err1.numpy(),
            )
        else:
            for i in range(i2 - i1):
                g = params.position_group[i1 + i]
                if not params.done[g]:
                    params.fill(g, _current_columns(wt, w1, err1, u, i1, i, params.members[g]).T)
                col = w1[i]
                c = params.encode(g, col)
                codes[i1 + i] = c
                q = params.decode(g, c).to(w.dtype)
                err = torch.sub(col, q, out=err1[i]).div_(u1[i, i])
                w1[i:].addr_(u1[i, i:], err, alpha=-1.0)
                w1[i] = q
        wt[i2:].addmm_(u[i1:i2, i2:].T, err1, alpha=-1.0)
        wt[i1:i2] = w1
    return codes.T, wt.T


def _fixed_grid(params: _GroupParams | GGUFGroupParams, w: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """``(scale_t [groups, out] float32, zero_t as float32, group of each processed column)`` when the sweep
    can run block by block in the CPU kernel (`dllm_kernels.cpu.gptq_block`): a CPU weight and every group's
    grid fixed before the sweep (static policies). None otherwise (the per-column torch loop)."""
    if w.device.type != "cpu" or not isinstance(params, _GroupParams) or not all(params.done):
        return None
    zero = torch.zeros_like(params.scale_t) if params.zero_t is None else params.zero_t.float()
    return params.scale_t, zero, torch.tensor(params.position_group, dtype=torch.int64)


def _current_columns(
    wt: Tensor, w1: Tensor, err1: Tensor, u: Tensor, i1: int, i: int, positions: Tensor
) -> Tensor:
    """Fully updated values ``[len(positions), out]`` (rows of ``W^T``) of processed-order columns
    ``positions`` (all >= i1 + i).

    Columns inside the running block are read from its working copy ``w1``; later ones still miss the
    block's pending update ``u[i1:i1+i, col]^T err1[:i]``, which is applied here.
    """
    i2 = i1 + w1.shape[0]
    inside = positions < i2
    values = torch.empty(positions.shape[0], wt.shape[1], dtype=wt.dtype, device=wt.device)
    values[inside] = w1[positions[inside] - i1]
    later = positions[~inside]
    if later.numel():
        values[~inside] = wt[later] - u[i1 : i1 + i, later].T @ err1[:i]
    return values

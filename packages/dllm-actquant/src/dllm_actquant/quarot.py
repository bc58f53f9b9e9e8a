"""QuaRot: Hadamard rotations that spread outliers over all channels, folded into the weights.

Steps (each leaves the float model's outputs unchanged up to rounding):

1. fuse the RMSNorm gains into the linears that read them (``Topology.fuse_norms``; a tied head is untied
   first when the final norm has a non-unit gain);
2. R1: rotate the residual stream by ``Q = diag(d) H_D`` (random signs ``d``, normalized Hadamard of the
   hidden size D) (``Topology.rotate_residual``);
3. R2: rotate every value head by ``H_Dh`` (random signs too when ``randomize``), absorbed by v's output rows
   and o's input columns (``Topology.rotate_vo``);
4. full rotation of the o-projection input (``online_o``): o absorbs ``C kron I_Dh`` and its input is
   mixed across heads online (`HeadRotation`), so with R2 the input o quantizes has passed ``C kron H_Dh``,
   the full Hadamard of ``H * Dh`` when ``C = H_H`` (QuaRot's ``had_dim=-1`` fold plus its online
   cross-head Hadamard). Head counts without a Hadamard order (odd ones) get a seeded random orthogonal
   ``C`` instead, which keeps the model exact but mixes heads less evenly;
5. R3 (``rotate_qk``): the queries and keys after RoPE pass the normalised ``H_Dh`` online (`QKHadamard`
   around the block's q/k site): ``(q H)(k H)^T = q k^T``, and K quantizes with its outliers spread;
6. R4: the down projection absorbs ``H_I`` (``W <- W H_I``) and its input is rotated online by an
   `OnlineHadamard` wrapper (``dllm_kernels.hadamard_transform``, fused with per-token quantization on
   the integer kernel path). Kronecker widths such as 768 = 12 * 64 or LLaDA's 12288 = 12 * 1024 work.

Every Hadamard order is checked before any weight changes, so an unsupported width leaves the model as it
was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import dllm_kernels
import torch
from dllm_calib import MethodConfig
from dllm_sampler import DiffusionLM, Topology
from torch import Tensor, nn

from dllm_actquant.attention import rotate_qk
from dllm_actquant.guards import require_float_linears
from dllm_actquant.hadamard import check_hadamard_size, hadamard, random_hadamard
from dllm_actquant.modules import as_topology, check_transformable, replace_module
from dllm_actquant.rotation import HadamardRotation, HeadRotation, fold_rotation

__all__ = [
    "QuaRotConfig",
    "QuaRotResult",
    "apply_quarot",
    "check_quarot_sizes",
    "head_mixing_matrix",
    "quarot_wrapped_roles",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuaRotConfig(MethodConfig):
    """QuaRot settings.

    Attributes:
        seed: seed of the random signs.
        randomize: random-sign Hadamards (QuaRot's "random Hadamard") for R1 and R2; plain ones if False.
        rotate_residual: apply R1 (needs the hidden size to have a Hadamard matrix).
        rotate_vo: apply the head-wise R2 (needs the head dim to have one).
        online_down: apply R4, an `OnlineHadamard` on every down projection (needs a Hadamard of the MLP
            width).
        online_o: rotate the o-projection input across heads online (with ``rotate_vo``, the full
            Hadamard of QuaRot's o_proj).
        rotate_qk: apply R3, the online Hadamard of q and k after RoPE (needs a Hadamard of the head dim).
    """

    seed: int = 0
    randomize: bool = True
    rotate_residual: bool = True
    rotate_vo: bool = True
    online_down: bool = True
    online_o: bool = True
    rotate_qk: bool = True

    def validate(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"QuaRotConfig.seed must be an int, got {self.seed!r}")
        for flag in ("randomize", "rotate_residual", "rotate_vo", "online_down", "online_o", "rotate_qk"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"QuaRotConfig.{flag} must be a bool, got {getattr(self, flag)!r}")


@dataclass
class QuaRotResult:
    """What `apply_quarot` did: the R1 ``[D, D]`` and R2 ``[Dh, Dh]`` matrices and the cross-head ``C
    [H, H]`` of the o input (float64, None if skipped), the names of the linears now wrapped in online
    rotations (o and down projections) and of the q/k sites wrapped by R3."""

    r1: Tensor | None = None
    r2: Tensor | None = None
    heads: Tensor | None = None
    online: list[str] = field(default_factory=list)
    qk: list[str] = field(default_factory=list)


def quarot_wrapped_roles(config: QuaRotConfig) -> frozenset[str]:
    """The linear roles ``config`` wraps in online rotations."""
    return frozenset(role for role, on in (("o", config.online_o), ("down", config.online_down)) if on)


def head_mixing_matrix(n_heads: int, generator: torch.Generator) -> Tensor:
    """The cross-head rotation ``C [H, H]`` float64: the normalised Hadamard of order ``H`` when one
    exists, else a random orthogonal matrix (QR of a Gaussian draw from ``generator``, signs fixed by R's
    diagonal)."""
    if dllm_kernels.supported_hadamard_size(n_heads):
        return hadamard(n_heads)
    gauss = torch.randn(n_heads, n_heads, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    return q * torch.sign(torch.diagonal(r))[None, :]


def check_quarot_sizes(topology: Topology, config: QuaRotConfig) -> None:
    """Raise ValueError when a rotation ``config`` asks for has no Hadamard construction at the model's
    sizes (hidden size for R1, head dim for R2 and R3, MLP width for R4)."""
    dims = topology.model.config.dims()  # type: ignore[union-attr]
    if config.rotate_residual:
        check_hadamard_size(dims.hidden_size, "QuaRot R1: the hidden size")
    if config.rotate_vo:
        check_hadamard_size(dims.head_dim, "QuaRot R2: the head dim")
    if config.rotate_qk:
        check_hadamard_size(dims.head_dim, "QuaRot R3: the head dim")
    if config.online_down:
        check_hadamard_size(dims.intermediate_size, "QuaRot R4: the MLP width (down-projection input)")


def apply_quarot(
    model: DiffusionLM | Topology | nn.Module, config: QuaRotConfig | None = None
) -> QuaRotResult:
    """Rotate ``model`` in place (see module docstring); returns the rotations used."""
    config = config or QuaRotConfig()
    topology = as_topology(model)
    check_transformable(topology, "QuaRot")
    if topology.head is not None:
        require_float_linears([(topology.head_name or "head", topology.head)], "QuaRot")
    check_quarot_sizes(topology, config)
    dims = topology.model.config.dims()  # type: ignore[union-attr]
    gen = torch.Generator().manual_seed(config.seed)
    result = QuaRotResult()
    if config.rotate_residual:
        if topology.head is None and not bool((topology.final_norm.weight == 1).all()):
            logger.info("QuaRot: untying the LM head so the final norm gain can be fused into it")
            topology.untie_head()
        topology.fuse_norms()
        q = random_hadamard(dims.hidden_size, gen) if config.randomize else hadamard(dims.hidden_size)
        topology.rotate_residual(q)
        result.r1 = q
    if config.rotate_vo:
        h = random_hadamard(dims.head_dim, gen) if config.randomize else hadamard(dims.head_dim)
        topology.rotate_vo(h)
        result.r2 = h
    if config.online_o:
        result.heads = head_mixing_matrix(dims.num_heads, gen)
        for b in topology:
            wrapper = fold_rotation(b.o_proj, HeadRotation(result.heads, dims.head_dim))
            replace_module(topology.model, b.names["o"], wrapper)
            result.online.append(b.names["o"])
    if config.online_down:
        for b in topology:
            name = b.names["down"]
            wrapper = fold_rotation(b.down_proj, HadamardRotation(dims.intermediate_size))
            replace_module(topology.model, name, wrapper)
            result.online.append(name)
    if config.rotate_qk:
        result.qk = rotate_qk(topology)
    return result

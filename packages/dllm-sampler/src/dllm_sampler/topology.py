"""Model topology: which norm feeds which linears, v -> o, up -> down, embedding, final norm, head.

Quantization transforms use this map instead of hard-coding module names, and its edits instead of
touching weights by hand. Every edit keeps the float model's function unchanged (up to rounding): the
arithmetic runs in float64 and the result is cast back to each parameter's dtype.

Conventions: a linear computes y = x W^T + b with W [out, in]; "columns" of W index its inputs and "rows"
its outputs. D hidden size, I MLP width, H query heads, K key/value heads, Dh head dim, G = H / K.

LLaDA's name clash is explicit here: the block-level ``...blocks.{i}.ff_out`` is the down projection and
``model.transformer.ff_out`` is the LM head. Modules are addressed by qualified name, never by substring,
and ``linear_names()`` leaves the head out unless asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import torch
from torch import Tensor, nn

from dllm_sampler.models.layers import RMSNorm
from dllm_sampler.models.spec import ArchSpec, TopologyNames, spec_for_model

__all__ = ["INPUT_GROUPS", "LINEAR_ROLES", "BlockTopology", "Topology", "weight_holder"]

_ROLES = ("attn_norm", "q", "k", "v", "qk", "o", "mlp_norm", "gate", "up", "down")
LINEAR_ROLES = ("q", "k", "v", "o", "gate", "up", "down")
"""The roles of a block's linears, in forward order."""
INPUT_GROUPS: tuple[tuple[str, ...], ...] = (("q", "k", "v"), ("o",), ("gate", "up"), ("down",))
"""The block linears grouped by the activation they read, in forward order."""
_MAX_WRAPPERS = 16
_ROW_CHUNK = 8192  # rows per float64 matmul chunk when rotating big matrices (embedding, head)


@dataclass(frozen=True)
class BlockTopology:
    """One transformer block: qualified names by role and the modules behind them.

    Roles: attn_norm -> (q, k, v); v -> o; mlp_norm -> (gate, up); up -> down. Attention shape:
    ``n_heads`` query heads and ``n_kv_heads`` key/value heads of ``head_dim`` channels.
    """

    index: int
    names: dict[str, str]
    n_heads: int
    n_kv_heads: int
    head_dim: int
    model: nn.Module = field(repr=False, compare=False)

    def module(self, role: str) -> nn.Module:
        """The module playing ``role`` (one of attn_norm, q, k, v, qk, o, mlp_norm, gate, up, down; ``qk``
        is the attention's query/key site after RoPE, ``dllm_sampler.models.layers.QKSite``)."""
        if role not in self.names:
            raise KeyError(f"unknown block role {role!r}; roles are {list(_ROLES)}")
        return self.model.get_submodule(self.names[role])

    @property
    def gqa_groups(self) -> int:
        """Query heads per key/value head."""
        return self.n_heads // self.n_kv_heads

    @property
    def attn_norm(self) -> RMSNorm:
        return self.module("attn_norm")  # type: ignore[return-value]

    @property
    def mlp_norm(self) -> RMSNorm:
        return self.module("mlp_norm")  # type: ignore[return-value]

    @property
    def q_proj(self) -> nn.Linear:
        return self.module("q")  # type: ignore[return-value]

    @property
    def k_proj(self) -> nn.Linear:
        return self.module("k")  # type: ignore[return-value]

    @property
    def v_proj(self) -> nn.Linear:
        return self.module("v")  # type: ignore[return-value]

    @property
    def o_proj(self) -> nn.Linear:
        return self.module("o")  # type: ignore[return-value]

    @property
    def gate_proj(self) -> nn.Linear:
        return self.module("gate")  # type: ignore[return-value]

    @property
    def up_proj(self) -> nn.Linear:
        return self.module("up")  # type: ignore[return-value]

    @property
    def down_proj(self) -> nn.Linear:
        return self.module("down")  # type: ignore[return-value]

    @property
    def attn_inputs(self) -> list[nn.Linear]:
        """The linears reading attn_norm's output: [q, k, v]."""
        return [self.q_proj, self.k_proj, self.v_proj]

    @property
    def mlp_inputs(self) -> list[nn.Linear]:
        """The linears reading mlp_norm's output: [gate, up]."""
        return [self.gate_proj, self.up_proj]

    def norm_consumers(self, which: str) -> tuple[RMSNorm, list[nn.Linear]]:
        """``which`` "attn" -> (attn_norm, [q, k, v]); "mlp" -> (mlp_norm, [gate, up])."""
        if which == "attn":
            return self.attn_norm, self.attn_inputs
        if which == "mlp":
            return self.mlp_norm, self.mlp_inputs
        raise ValueError(f"which must be 'attn' or 'mlp', got {which!r}")

    @property
    def routes(self) -> dict[str, tuple[str, int]]:
        """Routed expert roles -> (routing site, expert): none in a dense block (see
        `dllm_sampler.moe_topology.MoEBlockTopology.routes`)."""
        return {}

    def linear_roles(self) -> tuple[str, ...]:
        """The block's linear roles, `LINEAR_ROLES`."""
        return LINEAR_ROLES

    def input_groups(self) -> tuple[tuple[str, ...], ...]:
        """The linear roles grouped by the activation they read, `INPUT_GROUPS`."""
        return INPUT_GROUPS

    def linear_names(self) -> list[str]:
        """Qualified names of the block's seven linears, in order q, k, v, o, gate, up, down."""
        return [self.names[r] for r in LINEAR_ROLES]

    def weight_holder(self, role: str) -> str:
        """Qualified name of the module holding the weight of linear ``role`` (see `weight_holder`)."""
        return weight_holder(self.model, self.names[role])


def weight_holder(model: nn.Module, name: str) -> str:
    """The qualified name of the module that holds the weight of the layer at ``name``.

    Run-time wrappers (online rotations, activation or output quantizers) keep the layer they wrap as
    ``.inner``; this follows that chain, so ``"...v_proj"`` wrapped twice gives ``"...v_proj.inner.inner"``.
    Hooks there see the input the weight is multiplied with; an unwrapped layer is its own holder.
    """
    module, path = model.get_submodule(name), name
    for _ in range(_MAX_WRAPPERS):
        inner = getattr(module, "inner", None)
        if not isinstance(inner, nn.Module):
            return path
        module, path = inner, f"{path}.inner"
    raise RuntimeError(
        f"{name}: wrapper chain deeper than {_MAX_WRAPPERS} levels; is a module wrapping itself?"
    )


def _f64(t: Tensor) -> Tensor:
    return t.detach().to(torch.float64)


def _assign(param: Tensor, value: Tensor) -> None:
    """Write a float64 result back into a parameter, in the parameter's dtype."""
    with torch.no_grad():
        param.copy_(value.to(param.dtype))


def _right_matmul(weight: Tensor, q: Tensor) -> None:
    """weight <- weight @ q in float64, ``_ROW_CHUNK`` rows at a time (bounded extra memory)."""
    for start in range(0, weight.shape[0], _ROW_CHUNK):
        rows = weight[start : start + _ROW_CHUNK]
        _assign(rows, _f64(rows) @ q)


def _as_vector(s: Tensor | float, n: int, what: str, device: torch.device) -> Tensor:
    """A float64 scale vector [n]; rejects wrong shapes and zero or non-finite entries."""
    v = torch.as_tensor(s, dtype=torch.float64, device=device)
    if v.dim() == 0:
        v = v.expand(n)
    if v.shape != (n,):
        raise ValueError(f"{what}: scale must have shape ({n},) or be a scalar, got {tuple(v.shape)}")
    if not torch.isfinite(v).all() or (v == 0).any():
        raise ValueError(f"{what}: scale entries must be finite and non-zero")
    return v


def _check_orthogonal(q: Tensor, n: int, what: str) -> Tensor:
    """``q`` as float64 [..., n, n], after checking q^T q = I up to the precision of its dtype."""
    if q.shape[-2:] != (n, n):
        raise ValueError(f"{what}: expected a [{n}, {n}] matrix, got shape {tuple(q.shape)}")
    if not q.is_floating_point():
        raise ValueError(f"{what}: the rotation must be a float tensor, got {q.dtype}")
    q64 = _f64(q)
    err = (q64.transpose(-1, -2) @ q64 - torch.eye(n, dtype=torch.float64, device=q.device)).abs().max()
    tol = min(100 * n**0.5 * torch.finfo(q.dtype).eps, 1e-2)
    if err > tol:
        raise ValueError(f"{what}: matrix is not orthogonal (max |Q^T Q - I| = {err:.3g} > {tol:.3g})")
    return q64


B = TypeVar("B")
"""A block map's block type (`BlockTopology`, `dllm_sampler.moe_topology.MoEBlockTopology`)."""


class BlockMap(Generic[B]):
    """What every model's block map offers (`Topology`, `dllm_sampler.moe_topology.MoETopology`): the model,
    its ``ArchSpec``, ``blocks`` (one per transformer block, in order), the embedding and head, and the
    qualified names of the block linears. Subclasses build ``blocks``."""

    model: nn.Module
    spec: ArchSpec
    blocks: list[B]

    @property
    def arch(self) -> str:
        """The architecture's `ArchSpec` name ("llada", "dream", "llada2")."""
        return self.spec.name

    @property
    def embedding_name(self) -> str:
        return self.spec.names.embedding

    @property
    def head_name(self) -> str | None:
        """Qualified name of the LM head, None when it is tied to the embedding."""
        return None if self.head is None else self.spec.names.head

    @property
    def embedding(self) -> nn.Embedding:
        return self.model.get_submodule(self.embedding_name)  # type: ignore[return-value]

    @property
    def head(self) -> nn.Linear | None:
        """The LM head module, None when tied (logits then use the embedding matrix)."""
        return self.model.head  # type: ignore[return-value]

    def __iter__(self) -> Iterator[B]:
        return iter(self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def block(self, block: int | B) -> B:
        """A block by index (negative counts from the end) or the block itself."""
        if not isinstance(block, int):
            return block
        if not -len(self.blocks) <= block < len(self.blocks):
            raise IndexError(f"block {block} out of range for a model with {len(self.blocks)} blocks")
        return self.blocks[block]

    def linear_names(self, include_head: bool = False) -> list[str]:
        """Qualified names of every block linear (block order, then each block's `linear_roles` order:
        q, k, v, o, gate, up, down for a dense block). The LM head is listed last only with
        ``include_head=True`` (and only when untied)."""
        names = [name for b in self.blocks for name in b.linear_names()]
        if include_head and self.head_name is not None:
            names.append(self.head_name)
        return names

    def weight_holders(self, include_head: bool = False) -> dict[str, str]:
        """`linear_names` -> the name of the module holding each weight through wrappers (`weight_holder`)."""
        return {name: weight_holder(self.model, name) for name in self.linear_names(include_head)}


class Topology(BlockMap[BlockTopology]):
    """The topology of a ``LLaDAModelLM`` or ``DreamModel`` plus invariance-preserving edits.

    Built from the model's ``ArchSpec``; holds no weights of its own, so it always reflects the model.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.spec: ArchSpec = spec_for_model(model)
        if not isinstance(self.spec.names, TopologyNames):
            raise NotImplementedError(
                f"{self.spec.display_name} is a mixture-of-experts model with fused QKV; the dense-block "
                "Topology does not describe it (use its ArchSpec.names, MoETopologyNames)"
            )
        dims = model.config.dims()  # type: ignore[union-attr]
        n = self.spec.names
        self.blocks: list[BlockTopology] = [
            BlockTopology(
                index=i,
                names={role: f"{n.blocks}.{i}.{getattr(n, role)}" for role in _ROLES},
                n_heads=dims.num_heads,
                n_kv_heads=dims.num_kv_heads,
                head_dim=dims.head_dim,
                model=model,
            )
            for i in range(dims.num_layers)
        ]

    # ----- model-level structure -------------------------------------------------------------------

    @property
    def final_norm_name(self) -> str:
        return self.spec.names.final_norm

    @property
    def final_norm(self) -> RMSNorm:
        return self.model.get_submodule(self.final_norm_name)  # type: ignore[return-value]

    def untie_head(self) -> None:
        """Give a tied model its own head (a copy of the embedding); edits to the head need this."""
        self.model.untie_head()  # type: ignore[operator]

    # ----- diagonal scale folding ------------------------------------------------------------------

    def fold_norm_scale(self, block: int | BlockTopology, which: str, s: Tensor | float) -> None:
        """Move a per-channel scale s [D] from an RMSNorm gain into the linears that read it.

        Math: the linears see W (g * n(x)) with n(x) = x / rms(x). Setting g <- g / s and
        W <- W diag(s) (column j times s_j) gives W diag(s) (g / s * n(x)) = W (g * n(x)). This is the
        SmoothQuant/AWQ fold: the activations are divided by s and the weights' input channels multiplied.
        ``which`` is "attn" (attn_norm -> q, k, v) or "mlp" (mlp_norm -> gate, up).
        """
        norm, linears = self.block(block).norm_consumers(which)
        v = _as_vector(s, norm.weight.shape[0], f"fold_norm_scale({which})", norm.weight.device)
        _assign(norm.weight, _f64(norm.weight) / v)
        for lin in linears:
            _assign(lin.weight, _f64(lin.weight) * v)

    def fold_vo_scale(self, block: int | BlockTopology, s: Tensor | float) -> None:
        """Scale v's output channels by 1/s and o's matching input channels by s; s [K * Dh].

        Math: attention mixes values over tokens only, so a per-channel factor on v passes through:
        head h's output att_h (channels of kv head j = h // G) becomes att_h / s_j. With GQA each kv channel
        (j, d) feeds the o columns (h, d) of the G query heads h in group j, so o's column (h, d) is
        multiplied by s[j, d] (s expanded over the group): W_o diag(s_exp) (att / s_exp) = W_o att.
        v's bias (Dream) is divided by s together with its rows.
        """
        b = self.block(block)
        v_proj, o_proj = b.v_proj, b.o_proj
        n_kv = b.n_kv_heads * b.head_dim
        sv = _as_vector(s, n_kv, "fold_vo_scale", v_proj.weight.device)
        _assign(v_proj.weight, _f64(v_proj.weight) / sv[:, None])
        if v_proj.bias is not None:
            _assign(v_proj.bias, _f64(v_proj.bias) / sv)
        s_exp = sv.view(b.n_kv_heads, b.head_dim).repeat_interleave(b.gqa_groups, dim=0).reshape(-1)
        _assign(o_proj.weight, _f64(o_proj.weight) * s_exp)

    def fold_up_down_scale(self, block: int | BlockTopology, s: Tensor | float) -> None:
        """Scale up's output channels by 1/s and down's input channels by s; s [I].

        Math: the MLP computes down(silu(gate(h)) * up(h)); the gate product is linear in up(h) per channel,
        so (silu(g) * u / s) fed to W_down diag(s) gives the same output.
        """
        b = self.block(block)
        up, down = b.up_proj, b.down_proj
        v = _as_vector(s, up.weight.shape[0], "fold_up_down_scale", up.weight.device)
        _assign(up.weight, _f64(up.weight) / v[:, None])
        if up.bias is not None:
            _assign(up.bias, _f64(up.bias) / v)
        _assign(down.weight, _f64(down.weight) * v)

    # ----- norm fusion and rotations ---------------------------------------------------------------

    def fuse_norms(self) -> None:
        """Multiply every RMSNorm gain into the linears that read it and set the gains to 1.

        Math: W (g * n(x)) = (W diag(g)) n(x); block norms go into q, k, v and gate, up, the final norm into
        the head. A tied head shares the embedding, so a non-unit final gain needs ``untie_head()`` first.
        Afterwards every norm is a pure x / rms(x), which commutes with orthogonal maps (``rotate_residual``).
        """
        final = self.final_norm
        if self.head is None and not bool((final.weight == 1).all()):
            raise ValueError(
                "fuse_norms: the head is tied to the embedding, so the final norm gain cannot be folded into "
                "it; call topology.untie_head() first"
            )
        pairs: list[tuple[RMSNorm, list[nn.Linear]]] = []
        for b in self.blocks:
            pairs += [b.norm_consumers("attn"), b.norm_consumers("mlp")]
        if self.head is not None:
            pairs.append((final, [self.head]))
        for norm, linears in pairs:
            g = _f64(norm.weight)
            for lin in linears:
                _assign(lin.weight, _f64(lin.weight) * g)
            with torch.no_grad():
                norm.weight.fill_(1.0)

    def _norms(self) -> list[tuple[str, RMSNorm]]:
        out = [(b.names[r], b.module(r)) for b in self.blocks for r in ("attn_norm", "mlp_norm")]
        return [*out, (self.final_norm_name, self.final_norm)]  # type: ignore[list-item]

    def rotate_residual(self, q: Tensor) -> None:
        """Rotate the residual stream by an orthogonal Q [D, D]: every hidden state x becomes x Q.

        Requires unit norm gains (``fuse_norms()``): then rms(x Q) = rms(x) and the norm commutes with Q.
        Edits: embedding E <- E Q; every linear reading the residual (q, k, v, gate, up, head)
        W <- W Q, since (x Q)(W Q)^T = x W^T; every linear writing it (o, down) W <- Q^T W and b <- b Q,
        so its output becomes y Q. A tied head is the embedding, already rotated. Logits are unchanged.
        """
        norms = self._norms()
        bad = [name for name, norm in norms if not bool((norm.weight == 1).all())]
        if bad:
            raise ValueError(
                f"rotate_residual needs unit RMSNorm gains, but {bad[:3]}{'...' if len(bad) > 3 else ''} "
                "are not; call fuse_norms() first"
            )
        dim = self.embedding.weight.shape[1]
        q64 = _check_orthogonal(q, dim, "rotate_residual").to(self.embedding.weight.device)
        _right_matmul(self.embedding.weight, q64)
        readers = [lin for b in self.blocks for lin in (*b.attn_inputs, *b.mlp_inputs)]
        if self.head is not None:
            readers.append(self.head)
        for lin in readers:
            _right_matmul(lin.weight, q64.to(lin.weight.device))
        for b in self.blocks:
            for lin in (b.o_proj, b.down_proj):
                qd = q64.to(lin.weight.device)
                _assign(lin.weight, qd.T @ _f64(lin.weight))
                if lin.bias is not None:
                    _assign(lin.bias, _f64(lin.bias) @ qd)

    def rotate_vo(self, h: Tensor, block: int | BlockTopology | None = None) -> None:
        """Rotate each value head by an orthogonal H [Dh, Dh] (or one per kv head, [K, Dh, Dh]).

        Math: kv head j's values v_j become H_j^T v_j (rows of W_v and b_v for head j: H_j^T W, H_j^T b);
        attention mixes over tokens, so every query head h of group j outputs H_j^T att_h, and o's columns
        for head h become W_o,h H_j, giving W_o,h H_j H_j^T att_h = W_o,h att_h. RoPE acts on q/k only, so
        v is free to rotate. ``block`` None applies it to every block.
        """
        targets = self.blocks if block is None else [self.block(block)]
        for b in targets:
            hd, k, g = b.head_dim, b.n_kv_heads, b.gqa_groups
            h64 = _check_orthogonal(h, hd, "rotate_vo").to(b.v_proj.weight.device)
            if h64.dim() == 2:
                h64 = h64.expand(k, hd, hd)
            if h64.shape != (k, hd, hd):
                raise ValueError(
                    f"rotate_vo: expected [{hd}, {hd}] or [{k}, {hd}, {hd}], got {tuple(h.shape)}"
                )
            v_proj, o_proj = b.v_proj, b.o_proj
            wv = _f64(v_proj.weight).view(k, hd, -1)
            _assign(v_proj.weight, (h64.transpose(1, 2) @ wv).reshape(k * hd, -1))
            if v_proj.bias is not None:
                bv = _f64(v_proj.bias).view(k, hd, 1)
                _assign(v_proj.bias, (h64.transpose(1, 2) @ bv).reshape(-1))
            per_q_head = h64.repeat_interleave(g, dim=0)  # [H, Dh, Dh]
            wo = _f64(o_proj.weight).view(-1, b.n_heads, hd).transpose(0, 1)  # [H, D, Dh]
            _assign(o_proj.weight, (wo @ per_q_head).transpose(0, 1).reshape(o_proj.weight.shape))

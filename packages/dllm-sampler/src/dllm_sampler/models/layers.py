"""Building blocks shared by the LLaDA and Dream module trees.

Both architectures are pre-norm llama-style transformers that differ only in parameter names, q/k/v bias
and grouped-query attention. The math lives here once: RMSNorm, rotary position embedding (RoPE),
bidirectional self-attention with GQA and a padding key mask, the SiLU-gated MLP, and the decoder body.

Shapes: B batch, L sequence length, D hidden size, H query heads, K key/value heads, Dh head dim,
V number of logits. Position-dependent math (RMSNorm statistics, RoPE) runs in at least float32, except RoPE
under ``rope_rounding="reference"`` (`RopeRounding`), which rounds as the reference implementations do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dllm_sampler.config import ModelDims

__all__ = [
    "AttentionContext",
    "BlockParts",
    "ConcatenatedBias",
    "QKSite",
    "RMSNorm",
    "RopeRounding",
    "add_bias",
    "apply_rope",
    "attention_context",
    "block_forward",
    "decoder_forward",
    "embedding",
    "experts_on",
    "gated_mlp",
    "hooked",
    "init_weights",
    "linears_on",
    "position_ids",
    "rope_and_qk_site",
    "rope_cos_sin",
    "rope_tables",
    "runner_applies",
    "self_attention",
    "swiglu",
]

RopeRounding = Literal["float32", "reference"]
"""How a model applies RoPE to half-precision activations. ``"float32"``: tables and rotation in float32,
the result cast back (accurate). ``"reference"``: as the reference code does: Dream (transformers' Qwen2
code) and LLaDA with ``rope_full_precision: false`` round the float32 cos/sin tables to the activation
dtype and rotate in it; LLaDA with ``rope_full_precision: true`` rotates in float32. Identical for float32
and float64 activations."""


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types, the dtype itself for float32/float64."""
    return torch.promote_types(dtype, torch.float32)


class RMSNorm(nn.Module):
    """y = weight * (x / sqrt(mean(x^2, last dim) + eps)); the statistic is computed in >= float32.

    As in LLaDA and Qwen2, the normalised activations are cast back to the input dtype before the gain.
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """x [..., D] -> [..., D]."""
        y = x.to(_compute_dtype(x.dtype))
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def position_ids(attention_mask: Tensor | None, batch: int, length: int, device: torch.device) -> Tensor:
    """Token positions [B, L] (int64): arange without a mask, cumsum(mask) - 1 with one (pads get 0).

    attention_mask: [B, L], 1 for real tokens and 0 for padding, so left padding shifts the positions of
    the real tokens back to 0, 1, 2, ...
    """
    if attention_mask is None:
        return torch.arange(length, device=device).expand(batch, length)
    mask = attention_mask.to(torch.long)
    return (mask.cumsum(-1) - 1).clamp_min(0)


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos, sin [B, 1, L, Dh] for RoPE in ``dtype`` (use >= float32).

    Frequencies inv_freq[j] = theta^(-2j/Dh), j < Dh/2, duplicated over the two halves (rotate_half layout).
    """
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    exponent = torch.arange(0, head_dim, 2, device=positions.device, dtype=dtype) / head_dim
    inv_freq = 1.0 / (theta**exponent)
    freqs = positions.to(dtype)[..., None] * inv_freq  # [B, L, Dh/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, L, Dh]
    return emb.cos(), emb.sin()


def rope_tables(
    positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype, round_to_dtype: bool
) -> tuple[Tensor, Tensor]:
    """cos, sin [B, 1, L, Dh] for activations of ``dtype``: computed in at least float32, then rounded to
    ``dtype`` when ``round_to_dtype`` (so that `apply_rope` rotates in ``dtype``, as the reference Dream does
    in bfloat16)."""
    cos, sin = rope_cos_sin(positions, head_dim, theta, _compute_dtype(dtype))
    if round_to_dtype:
        return cos.to(dtype), sin.to(dtype)
    return cos, sin


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [B, heads, L, Dh] by position: x*cos + rotate_half(x)*sin, computed in cos's dtype."""
    xc = x.to(cos.dtype)
    x1, x2 = xc.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xc * cos + rotated * sin).to(x.dtype)


class QKSite(nn.Module):
    """The attention's query/key site after RoPE: ``forward(q [B, H, L, Dh], k [B, K, L, Dh]) -> (q, k)``
    (`rope_and_qk_site` calls it).

    The identity in a float model. It exists so that transforms and quantizers can act on the rotated
    queries and keys (QuaRot's R3 Hadamard, K and Q quantization) by wrapping it, the way linear inputs are
    reached by wrapping linears; it holds no parameters, so checkpoints do not see it.
    """

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return q, k


@dataclass(frozen=True)
class AttentionContext:
    """Per-forward inputs shared by all blocks: RoPE tables [B,1,L,Dh] and the key mask [B,1,1,L] or None."""

    cos: Tensor
    sin: Tensor
    key_mask: Tensor | None


def rope_and_qk_site(
    q: Tensor, k: Tensor, ctx: AttentionContext, qk_site: nn.Module | None
) -> tuple[Tensor, Tensor]:
    """RoPE on ``q [B, H, L, Dh]`` and ``k [B, K, L, Dh]``, then ``qk_site`` (if any).

    A site that carries a ``rope_runner`` (a q/k quantizer with a fused CPU kernel,
    ``dllm_actquant.QKQuant``) may do both in one pass, with the same numbers; it returns None when it
    cannot serve the call, and the two steps then run as written."""
    runner = getattr(qk_site, "rope_runner", None)
    if runner is not None:
        out = runner(q, k, ctx.cos, ctx.sin)
        if out is not None:
            return out
    q, k = apply_rope(q, ctx.cos, ctx.sin), apply_rope(k, ctx.cos, ctx.sin)
    return (q, k) if qk_site is None else qk_site(q, k)


def attention_context(
    input_ids: Tensor,
    attention_mask: Tensor | None,
    dims: ModelDims,
    dtype: torch.dtype,
    round_rope: bool = False,
) -> AttentionContext:
    """Positions, RoPE tables and the boolean key mask (True = may be attended) for one forward.

    A mask of all ones is treated as no mask (same math, faster attention kernel). ``round_rope`` rounds the
    RoPE tables to the activation ``dtype`` (`rope_tables`).
    """
    batch, length = input_ids.shape
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} must equal input_ids shape "
                f"{tuple(input_ids.shape)}"
            )
        if bool(attention_mask.all()):
            attention_mask = None
    pos = position_ids(attention_mask, batch, length, input_ids.device)
    cos, sin = rope_tables(pos, dims.head_dim, dims.rope_theta, dtype, round_rope)
    key_mask = None if attention_mask is None else attention_mask.to(torch.bool)[:, None, None, :]
    return AttentionContext(cos=cos, sin=sin, key_mask=key_mask)


def self_attention(
    h: Tensor,
    q_proj: nn.Linear,
    k_proj: nn.Linear,
    v_proj: nn.Linear,
    o_proj: nn.Linear,
    dims: ModelDims,
    ctx: AttentionContext,
    qk_site: nn.Module | None = None,
) -> Tensor:
    """Bidirectional multi-head attention with GQA: h [B, L, D] -> [B, L, D].

    Key/value head j serves query heads j*G .. (j+1)*G - 1 (G = H / K), as in Qwen2's repeat_kv.
    Padded keys (ctx.key_mask False) receive no attention; scores are scaled by 1/sqrt(Dh). ``qk_site``
    (a `QKSite` or a wrapper of one) sees q and k after RoPE, before the kv heads are repeated.
    """
    b, n, _ = h.shape
    hd = dims.head_dim
    q, k, v = linears_on(h, (q_proj, k_proj, v_proj))
    q = q.view(b, n, dims.num_heads, hd).transpose(1, 2)
    k = k.view(b, n, dims.num_kv_heads, hd).transpose(1, 2)
    v = v.view(b, n, dims.num_kv_heads, hd).transpose(1, 2)
    q, k = rope_and_qk_site(q, k, ctx, qk_site)
    if dims.gqa_groups > 1:
        k = k.repeat_interleave(dims.gqa_groups, dim=1)
        v = v.repeat_interleave(dims.gqa_groups, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.key_mask, is_causal=False)
    return o_proj(out.transpose(1, 2).reshape(b, n, dims.num_heads * hd))


def gated_mlp(h: Tensor, gate: nn.Linear, up: nn.Linear, down: nn.Linear) -> Tensor:
    """down(silu(gate(h)) * up(h)): [B, L, D] -> [B, L, D]."""
    return down(swiglu(*linears_on(h, (gate, up))))


def swiglu(g: Tensor, u: Tensor) -> Tensor:
    """``silu(g) * u``: the gated activation between a gated MLP's gate/up and down projections."""
    return F.silu(g) * u


def runner_applies(
    h: Tensor, linears: tuple[nn.Module, ...], layers: tuple[nn.Module, ...], watched: Sequence[nn.Module]
) -> bool:
    """True when a shared-input runner built for ``layers`` may serve ``linears_on(h, linears)``: the same
    layers in the same order, ``h`` on the CPU, and no forward (pre-)hook on any module of ``watched`` (the
    layers and whatever they wrap), since one fused call would bypass the hooks."""
    return (
        len(linears) == len(layers)
        and all(a is b for a, b in zip(linears, layers, strict=True))
        and h.device.type == "cpu"
        and not hooked(watched)
    )


def hooked(modules: Sequence[nn.Module]) -> bool:
    """True when any of ``modules`` has a forward (pre-)hook: a fused runner that would bypass their
    calls must then step aside."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def add_bias(y: Tensor, bias: Tensor | None, dtype: torch.dtype) -> Tensor:
    """A GEMM result ``y [M, N]`` (bfloat16 or float32) plus ``bias [N]`` added in float32, in ``dtype``: one
    pass (a bf16 ``y`` promotes to float32 in the addition) and a cast only where ``dtype`` differs. The
    epilogue of the quantized layers and their shared-input runners."""
    if bias is not None:
        y = torch.add(y, bias.float())
    return y.to(dtype)


class ConcatenatedBias:
    """The biases of layers stacked along N, concatenated in float32 (zeros for a layer without one), kept
    between calls of a shared-input runner and rebuilt when a bias tensor is replaced or changed in place."""

    def __init__(self) -> None:
        self._key: tuple[tuple[int, int], ...] | None = None
        self._value: Tensor | None = None

    def __call__(self, biases: Sequence[Tensor | None], sizes: Sequence[int]) -> Tensor | None:
        """``biases`` of layers with ``sizes`` output features -> float32 ``[sum(sizes)]`` or None."""
        if all(b is None for b in biases):
            return None
        key = tuple((id(b), b._version) for b in biases if b is not None)
        if self._key != key:
            parts = [
                torch.zeros(n) if b is None else b.detach().float().cpu()
                for b, n in zip(biases, sizes, strict=True)
            ]
            self._value, self._key = torch.cat(parts), key
        return self._value


def linears_on(h: Tensor, linears: tuple[nn.Module, ...]) -> tuple[Tensor, ...]:
    """``tuple(m(h) for m in linears)``: several linear layers applied to the same input ``h [..., D]``.

    Layers that can share one GEMM (quantized layers on the CPU, grouped by
    `dllm_weightquant.fuse_shared_inputs` and `dllm_actquant.fuse_act_quant_inputs`) carry a
    ``shared_input_gemm`` runner; it computes all the outputs at once, or returns None when it cannot serve
    this call (`runner_applies`), and the layers then run one by one."""
    runner = getattr(linears[0], "shared_input_gemm", None)
    if runner is not None:
        outs = runner(h, linears)
        if outs is not None:
            return outs
    return tuple(m(h) for m in linears)


def experts_on(xs: Sequence[Tensor], experts: nn.ModuleList, ids: Sequence[int]) -> list[Tensor]:
    """``[experts[e](x) for e, x in zip(ids, xs)]``: routed experts (ascending ``ids``) applied to their
    tokens ``xs[i] [M_i, D]``.

    A mixture-of-experts layer whose experts are quantized on the CPU carries an ``experts_gemm`` runner
    (attached by `dllm_weightquant.fuse_experts` through `dllm_sampler.models.spec.attach_experts_runners`);
    it computes all the outputs with one weight dequantization per chunk of experts, or returns None when it
    cannot serve the call, and the experts then run one by one."""
    runner = getattr(experts, "experts_gemm", None)
    if runner is not None:
        outs = runner(xs, ids)
        if outs is not None:
            return outs
    return [experts[e](x) for e, x in zip(ids, xs, strict=True)]


@dataclass(frozen=True)
class BlockParts:
    """The modules of one pre-norm block, in the roles the shared forward needs."""

    attn_norm: RMSNorm
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    qk: nn.Module
    o: nn.Linear
    mlp_norm: RMSNorm
    gate: nn.Linear
    up: nn.Linear
    down: nn.Linear


def block_forward(x: Tensor, parts: BlockParts, dims: ModelDims, ctx: AttentionContext) -> Tensor:
    """x + attn(attn_norm(x)), then + mlp(mlp_norm(.)): [B, L, D] -> [B, L, D]."""
    x = x + self_attention(parts.attn_norm(x), parts.q, parts.k, parts.v, parts.o, dims, ctx, parts.qk)
    return x + gated_mlp(parts.mlp_norm(x), parts.gate, parts.up, parts.down)


def decoder_forward(
    input_ids: Tensor,
    attention_mask: Tensor | None,
    embedding: nn.Embedding,
    blocks: Sequence[BlockParts],
    final_norm: RMSNorm,
    head: nn.Linear | None,
    dims: ModelDims,
    round_rope: bool = False,
) -> Tensor:
    """Embedding -> blocks -> final norm -> head: input_ids [B, L] -> logits [B, L, V] (>= float32).

    ``head`` None means tied embeddings (logits = h @ embedding.weight^T). ``round_rope``: RoPE rotates in
    the activation dtype (`rope_tables`).
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    x = embedding(input_ids)
    ctx = attention_context(input_ids, attention_mask, dims, x.dtype, round_rope)
    for parts in blocks:
        x = block_forward(x, parts, dims, ctx)
    x = final_norm(x)
    logits = F.linear(x, embedding.weight) if head is None else head(x)
    return logits.to(_compute_dtype(logits.dtype))


def embedding(num_embeddings: int, dim: int) -> nn.Embedding:
    """An uninitialised ``nn.Embedding`` [num_embeddings, dim] (``init_weights`` fills it).

    Skipping nn.Embedding's own N(0, 1) init keeps construction on the meta device cheap.
    """
    return nn.Embedding(num_embeddings, dim, _weight=torch.empty(num_embeddings, dim))


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Random init for fresh models: N(0, std) linears and embeddings, zero biases, unit norm gains.

    A model on the meta device is left alone: loading assigns its tensors.
    """
    if any(p.is_meta for p in module.parameters()):
        return
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
        elif isinstance(m, RMSNorm):
            nn.init.ones_(m.weight)

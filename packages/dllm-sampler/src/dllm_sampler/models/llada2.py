"""LLaDA2 (``LLaDA2MoeModelLM``) module tree with the exact parameter names of the HF checkpoints.

    model.word_embeddings.weight                                   [V, D]
    model.layers.{i}.input_layernorm.weight                        [D]
    model.layers.{i}.attention.query_key_value.weight              [(H + 2K) * Dh, D]   (+ bias: use_qkv_bias)
    model.layers.{i}.attention.query_layernorm.weight              [Dh]                 (if use_qk_norm)
    model.layers.{i}.attention.key_layernorm.weight                [Dh]                 (if use_qk_norm)
    model.layers.{i}.attention.dense.weight                        [D, H * Dh]          (+ .bias if use_bias)
    model.layers.{i}.post_attention_layernorm.weight               [D]
    dense layers (i < first_k_dense_replace):
    model.layers.{i}.mlp.{gate_proj,up_proj}.weight                [I, D]
    model.layers.{i}.mlp.down_proj.weight                          [D, I]
    MoE layers:
    model.layers.{i}.mlp.gate.weight                               [E, D]               (router)
    model.layers.{i}.mlp.gate.expert_bias                          [E]                  (float32 buffer)
    model.layers.{i}.mlp.experts.{e}.{gate_proj,up_proj,down_proj}.weight
    model.layers.{i}.mlp.shared_experts.{gate_proj,up_proj,down_proj}.weight            (if shared experts)
    model.norm.weight                                              [D]
    lm_head.weight                                                 [V, D]               (absent if tied)

The fused ``query_key_value`` output holds the H query heads, then the K key heads, then the K value
heads, each Dh wide. q and k are RMS-normalised per head (over Dh) before RoPE; RoPE rotates the first
``rope_dim = head_dim * partial_rotary_factor`` channels of each head (rotate_half layout within them).

Attention is bidirectional by default. Block diffusion passes ``allowed`` (`block_causal_mask`: a query
sees its own block and every earlier block) and, to reuse finished blocks, a `KVCache` holding their keys
and values after norm and RoPE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dllm_sampler.config_llada2 import LLaDA2MoeConfig
from dllm_sampler.models.layers import (
    QKSite,
    RMSNorm,
    RopeRounding,
    apply_rope,
    embedding,
    init_weights,
    rope_tables,
)
from dllm_sampler.models.llada2_moe import GatedMLP, LLaDA2Router, LLaDA2SparseMoe

__all__ = ["KVCache", "LLaDA2Attention", "LLaDA2DecoderLayer", "LLaDA2MoeModelLM", "block_causal_mask"]


def block_causal_mask(length: int, block_length: int, device: torch.device | str | None = None) -> Tensor:
    """[1, 1, L, L] bool, True where query i may attend key j: ``j // block <= i // block`` (bidirectional
    inside a block, causal across blocks; blocks start at position 0)."""
    if block_length < 1:
        raise ValueError(f"block_length must be >= 1, got {block_length}")
    block = torch.arange(length, device=device) // block_length
    return (block[None, :] <= block[:, None])[None, None]


@dataclass
class KVCache:
    """Keys and values of finished positions, per layer: ``keys[i]``/``values[i]`` [B, K, Lc, Dh] after the
    q/k norm and RoPE (what attention reads). Empty until a forward with ``store=True`` appends to it."""

    keys: list[Tensor] = field(default_factory=list)
    values: list[Tensor] = field(default_factory=list)

    @property
    def length(self) -> int:
        """Cached positions Lc (0 when empty)."""
        return self.keys[0].shape[2] if self.keys else 0

    def layer(self, index: int) -> tuple[Tensor, Tensor] | None:
        """(keys, values) of layer ``index``, None when nothing is cached."""
        return (self.keys[index], self.values[index]) if index < len(self.keys) else None

    def append(self, index: int, k: Tensor, v: Tensor) -> None:
        """Append [B, K, L, Dh] keys/values to layer ``index`` (layers are filled in order)."""
        if index < len(self.keys):
            self.keys[index] = torch.cat([self.keys[index], k], dim=2)
            self.values[index] = torch.cat([self.values[index], v], dim=2)
        elif index == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        else:
            raise IndexError(f"layer {index} appended before layer {len(self.keys)}")


@dataclass(frozen=True)
class _Context:
    """Per-forward inputs of every layer: RoPE tables [B, 1, L, R], the boolean attention mask
    [B|1, 1, L, Lc + L] or None, the cache and whether to store into it."""

    cos: Tensor
    sin: Tensor
    mask: Tensor | None
    cache: KVCache | None
    store: bool


class LLaDA2Attention(nn.Module):
    """Fused-QKV grouped-query attention with per-head q/k RMSNorm and partial RoPE."""

    def __init__(self, config: LLaDA2MoeConfig) -> None:
        super().__init__()
        d, m = config.dims(), config.moe()
        self.num_heads, self.num_kv_heads, self.head_dim = d.num_heads, d.num_kv_heads, d.head_dim
        self.rope_dim = m.rope_dim
        width = (d.num_heads + 2 * d.num_kv_heads) * d.head_dim
        self.query_key_value = nn.Linear(d.hidden_size, width, bias=d.qkv_bias)
        if m.qk_norm:
            self.query_layernorm: RMSNorm | None = RMSNorm(d.head_dim, d.rms_norm_eps)
            self.key_layernorm: RMSNorm | None = RMSNorm(d.head_dim, d.rms_norm_eps)
        else:
            self.query_layernorm = self.key_layernorm = None
        self.qk_site = QKSite()
        self.dense = nn.Linear(d.num_heads * d.head_dim, d.hidden_size, bias=m.o_bias)

    def _rope(self, x: Tensor, ctx: _Context) -> Tensor:
        r = self.rope_dim
        if r == self.head_dim:
            return apply_rope(x, ctx.cos, ctx.sin)
        return torch.cat([apply_rope(x[..., :r], ctx.cos, ctx.sin), x[..., r:]], dim=-1)

    def forward(self, h: Tensor, ctx: _Context, index: int) -> Tensor:
        """h [B, L, D] -> [B, L, D]; layer ``index`` addresses the cache."""
        b, n, _ = h.shape
        qkv = self.query_key_value(h).view(b, n, self.num_heads + 2 * self.num_kv_heads, self.head_dim)
        q, k, v = qkv.transpose(1, 2).split([self.num_heads, self.num_kv_heads, self.num_kv_heads], dim=1)
        if self.query_layernorm is not None and self.key_layernorm is not None:
            q, k = self.query_layernorm(q), self.key_layernorm(k)
        q, k = self._rope(q, ctx), self._rope(k, ctx)
        q, k = self.qk_site(q, k)
        past = ctx.cache.layer(index) if ctx.cache is not None else None
        if ctx.store and ctx.cache is not None:
            ctx.cache.append(index, k, v)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.mask)
        return self.dense(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class LLaDA2DecoderLayer(nn.Module):
    """Pre-norm block: x + attention(input_layernorm(x)), then + mlp(post_attention_layernorm(.)); ``mlp``
    is a dense `GatedMLP` or a `LLaDA2SparseMoe`."""

    def __init__(self, config: LLaDA2MoeConfig, index: int) -> None:
        super().__init__()
        d, m = config.dims(), config.moe()
        self.input_layernorm = RMSNorm(d.hidden_size, d.rms_norm_eps)
        self.attention = LLaDA2Attention(config)
        self.post_attention_layernorm = RMSNorm(d.hidden_size, d.rms_norm_eps)
        if index in m.moe_layers:
            self.mlp: nn.Module = LLaDA2SparseMoe(d.hidden_size, m)
        else:
            self.mlp = GatedMLP(d.hidden_size, d.intermediate_size)

    def forward(self, x: Tensor, ctx: _Context, index: int) -> Tensor:
        x = x + self.attention(self.input_layernorm(x), ctx, index)
        return x + self.mlp(self.post_attention_layernorm(x))


class LLaDA2Model(nn.Module):
    """``word_embeddings``, ``layers`` and the final ``norm``."""

    def __init__(self, config: LLaDA2MoeConfig) -> None:
        super().__init__()
        d = config.dims()
        self.word_embeddings = embedding(d.vocab_size, d.hidden_size)
        self.layers = nn.ModuleList(LLaDA2DecoderLayer(config, i) for i in range(d.num_layers))
        self.norm = RMSNorm(d.hidden_size, d.rms_norm_eps)


class LLaDA2MoeModelLM(nn.Module):
    """LLaDA2 mask predictor: ``forward(input_ids, attention_mask) -> logits [B, L, V]`` (>= float32).

    Position i's logit scores the token at i (no shift). ``rope_rounding`` (plain attribute, not saved):
    ``"reference"`` rounds the RoPE tables to the activation dtype as the reference code does.
    """

    def __init__(self, config: LLaDA2MoeConfig) -> None:
        super().__init__()
        self.config = config
        self.rope_rounding: RopeRounding = "float32"
        self.model = LLaDA2Model(config)
        d = config.dims()
        if not d.tie_embeddings:
            self.lm_head = nn.Linear(d.hidden_size, d.vocab_size, bias=False)
        init_weights(self)
        if not any(p.is_meta for p in self.parameters()):
            for module in self.modules():
                if isinstance(module, LLaDA2Router):
                    nn.init.normal_(module.weight, std=0.02)

    @property
    def head(self) -> nn.Linear | None:
        """The LM head, None when tied to the embedding."""
        return getattr(self, "lm_head", None)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        allowed: Tensor | None = None,
        positions: Tensor | None = None,
        cache: KVCache | None = None,
        store: bool = False,
    ) -> Tensor:
        """Logits [B, L, V] for input_ids [B, L].

        Args:
            attention_mask: [B, Lc + L] (1 real, 0 pad) over the cached and the new positions, or None.
                Pad keys get no attention; without ``positions``, positions are cumsum(mask) - 1.
            allowed: bool [B|1, 1, L, Lc + L], True where a query may attend a key (e.g.
                `block_causal_mask`); None: every key.
            positions: [B, L] int positions; default ``Lc .. Lc + L - 1`` (or from ``attention_mask``).
            cache: keys/values of Lc earlier positions that the new ones attend to.
            store: append the new positions' keys/values to ``cache``.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        if store and cache is None:
            raise ValueError("store=True needs a cache to store into; pass cache=KVCache()")
        b, n = input_ids.shape
        past = cache.length if cache is not None else 0
        mask = self._attention_mask(attention_mask, allowed, b, n, past)
        if positions is None:
            positions = self._positions(attention_mask, b, n, past, input_ids.device)
        x = self.model.word_embeddings(input_ids)
        cos, sin = rope_tables(
            positions,
            self.config.moe().rope_dim,
            self.config.rope_theta,
            x.dtype,
            self.rope_rounding == "reference",
        )
        ctx = _Context(cos=cos, sin=sin, mask=mask, cache=cache, store=store)
        for index, layer in enumerate(self.model.layers):
            x = layer(x, ctx, index)
        x = self.model.norm(x)
        logits = F.linear(x, self.model.word_embeddings.weight) if self.head is None else self.head(x)
        return logits.to(torch.promote_types(logits.dtype, torch.float32))

    @staticmethod
    def _positions(mask: Tensor | None, b: int, n: int, past: int, device: torch.device) -> Tensor:
        if mask is None:
            return torch.arange(past, past + n, device=device).expand(b, n)
        return (mask.to(torch.long).cumsum(-1) - 1).clamp_min(0)[:, past:]

    @staticmethod
    def _attention_mask(
        attention_mask: Tensor | None, allowed: Tensor | None, b: int, n: int, past: int
    ) -> Tensor | None:
        keys = past + n
        if attention_mask is not None:
            if attention_mask.shape != (b, keys):
                raise ValueError(
                    f"attention_mask must be [batch, cached + new] = [{b}, {keys}], got "
                    f"{tuple(attention_mask.shape)}"
                )
            attention_mask = None if bool(attention_mask.all()) else attention_mask.to(torch.bool)
        if allowed is not None and (allowed.dim() != 4 or allowed.shape[-2:] != (n, keys)):
            raise ValueError(f"allowed must be [batch|1, 1, {n}, {keys}] bool, got {tuple(allowed.shape)}")
        if attention_mask is None:
            return allowed
        key_mask = attention_mask[:, None, None, :]
        return key_mask if allowed is None else key_mask & allowed

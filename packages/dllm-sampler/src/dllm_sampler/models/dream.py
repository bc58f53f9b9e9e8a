"""Dream (``DreamModel``) module tree with the Qwen2 parameter names of the HF checkpoints.

    model.embed_tokens.weight                             [V, D]
    model.layers.{i}.input_layernorm.weight               [D]
    model.layers.{i}.self_attn.{q,k,v}_proj.{weight,bias} [H*Dh | K*Dh, D], [H*Dh | K*Dh]
    model.layers.{i}.self_attn.o_proj.weight              [D, H*Dh]
    model.layers.{i}.post_attention_layernorm.weight      [D]
    model.layers.{i}.mlp.{gate,up}_proj.weight            [I, D]
    model.layers.{i}.mlp.down_proj.weight                 [D, I]
    model.norm.weight                                     [D]
    lm_head.weight                                        [V, D]   (absent if tie_word_embeddings)

The forward returns raw logits: the prediction for position i sits at i - 1. ``DiffusionLM.logits``
applies Dream's one-position shift.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dllm_sampler.config import DreamConfig
from dllm_sampler.models.layers import (
    BlockParts,
    QKSite,
    RMSNorm,
    RopeRounding,
    decoder_forward,
    embedding,
    init_weights,
)

__all__ = ["DreamAttention", "DreamBaseModel", "DreamDecoderLayer", "DreamMLP", "DreamModel"]


class DreamAttention(nn.Module):
    """q/k/v projections with bias (GQA: k/v have K heads), the `QKSite` ``qk_site``, o_proj without bias."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        d = config.dims()
        self.q_proj = nn.Linear(d.hidden_size, d.num_heads * d.head_dim, bias=True)
        self.k_proj = nn.Linear(d.hidden_size, d.num_kv_heads * d.head_dim, bias=True)
        self.v_proj = nn.Linear(d.hidden_size, d.num_kv_heads * d.head_dim, bias=True)
        self.qk_site = QKSite()
        self.o_proj = nn.Linear(d.num_heads * d.head_dim, d.hidden_size, bias=False)


class DreamMLP(nn.Module):
    """gate_proj / up_proj [I, D] and down_proj [D, I], no biases."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        d = config.dims()
        self.gate_proj = nn.Linear(d.hidden_size, d.intermediate_size, bias=False)
        self.up_proj = nn.Linear(d.hidden_size, d.intermediate_size, bias=False)
        self.down_proj = nn.Linear(d.intermediate_size, d.hidden_size, bias=False)


class DreamDecoderLayer(nn.Module):
    """input_layernorm -> self_attn, post_attention_layernorm -> mlp."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        d = config.dims()
        self.self_attn = DreamAttention(config)
        self.mlp = DreamMLP(config)
        self.input_layernorm = RMSNorm(d.hidden_size, d.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(d.hidden_size, d.rms_norm_eps)

    def parts(self) -> BlockParts:
        """The modules in their architectural roles."""
        return BlockParts(
            attn_norm=self.input_layernorm,
            q=self.self_attn.q_proj,
            k=self.self_attn.k_proj,
            v=self.self_attn.v_proj,
            qk=self.self_attn.qk_site,
            o=self.self_attn.o_proj,
            mlp_norm=self.post_attention_layernorm,
            gate=self.mlp.gate_proj,
            up=self.mlp.up_proj,
            down=self.mlp.down_proj,
        )


class DreamBaseModel(nn.Module):
    """embed_tokens, layers, norm."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        d = config.dims()
        self.embed_tokens = embedding(d.vocab_size, d.hidden_size)
        self.layers = nn.ModuleList(DreamDecoderLayer(config) for _ in range(d.num_layers))
        self.norm = RMSNorm(d.hidden_size, d.rms_norm_eps)


class DreamModel(nn.Module):
    """Dream mask predictor: ``forward(input_ids, attention_mask) -> raw logits [B, L, V]`` (>= float32).

    Fully bidirectional attention; ``attention_mask`` [B, L] (1 real, 0 pad) excludes pad keys and makes
    positions cumsum(mask) - 1. Logits are unshifted (see module docstring). ``rope_rounding`` (a plain
    attribute, not saved; `RopeRounding`): ``"reference"`` rotates q and k in the activation dtype, as
    transformers' Qwen2 code that Dream ships does.
    """

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        d = config.dims()
        self.config = config
        self.rope_rounding: RopeRounding = "float32"
        self.model = DreamBaseModel(config)
        self.lm_head: nn.Linear | None = (
            None if d.tie_embeddings else nn.Linear(d.hidden_size, d.vocab_size, bias=False)
        )
        init_weights(self)

    @property
    def head(self) -> nn.Linear | None:
        """The LM head, None when tied to the embedding."""
        return self.lm_head

    def untie_head(self) -> None:
        """Give the model its own LM head initialised from the embedding (no-op if already untied)."""
        if self.lm_head is not None:
            return
        emb = self.model.embed_tokens.weight
        head = nn.Linear(emb.shape[1], emb.shape[0], bias=False, device=emb.device, dtype=emb.dtype)
        with torch.no_grad():
            head.weight.copy_(emb)
        head.weight.requires_grad_(emb.requires_grad)
        self.lm_head = head
        self.config.tie_word_embeddings = False

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """input_ids [B, L] int64, attention_mask [B, L] or None -> raw logits [B, L, V]."""
        m = self.model
        return decoder_forward(
            input_ids,
            attention_mask,
            embedding=m.embed_tokens,
            blocks=[layer.parts() for layer in m.layers],  # type: ignore[union-attr]
            final_norm=m.norm,
            head=self.lm_head,
            dims=self.config.dims(),
            round_rope=self.rounds_rope(),
        )

    def rounds_rope(self) -> bool:
        """Whether RoPE rotates in the activation dtype: under ``rope_rounding="reference"``."""
        return self.rope_rounding == "reference"

"""LLaDA (``LLaDAModelLM``) module tree with the exact parameter names of the HF checkpoints.

    model.transformer.wte.weight                       [V, D]
    model.transformer.blocks.{i}.attn_norm.weight      [D]
    model.transformer.blocks.{i}.{q,k,v}_proj.weight   [H*Dh | K*Dh, D]  (+ .bias if include_qkv_bias)
    model.transformer.blocks.{i}.attn_out.weight       [D, H*Dh]          (o_proj)
    model.transformer.blocks.{i}.ff_norm.weight        [D]
    model.transformer.blocks.{i}.ff_proj.weight        [I, D]             (gate, goes through SiLU)
    model.transformer.blocks.{i}.up_proj.weight        [I, D]
    model.transformer.blocks.{i}.ff_out.weight         [D, I]             (down_proj)
    model.transformer.ln_f.weight                      [D]
    model.transformer.ff_out.weight                    [V, D]             (LM head; absent if weight_tying)

Note the name clash: block-level ``ff_out`` is the down projection, model-level ``transformer.ff_out`` is
the LM head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dllm_sampler.config import LLaDAConfig
from dllm_sampler.models.layers import (
    BlockParts,
    QKSite,
    RMSNorm,
    RopeRounding,
    decoder_forward,
    embedding,
    init_weights,
)

__all__ = ["LLaDABlock", "LLaDAModel", "LLaDAModelLM"]


class LLaDABlock(nn.Module):
    """One LLaDALlamaBlock: flat attn_norm/q_proj/k_proj/v_proj/attn_out/ff_norm/ff_proj/up_proj/ff_out,
    plus the parameter-free `QKSite` ``qk_site``."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        d = config.dims()
        self.attn_norm = RMSNorm(d.hidden_size, d.rms_norm_eps)
        self.q_proj = nn.Linear(d.hidden_size, d.num_heads * d.head_dim, bias=d.qkv_bias)
        self.k_proj = nn.Linear(d.hidden_size, d.num_kv_heads * d.head_dim, bias=d.qkv_bias)
        self.v_proj = nn.Linear(d.hidden_size, d.num_kv_heads * d.head_dim, bias=d.qkv_bias)
        self.qk_site = QKSite()
        self.attn_out = nn.Linear(d.num_heads * d.head_dim, d.hidden_size, bias=False)
        self.ff_norm = RMSNorm(d.hidden_size, d.rms_norm_eps)
        self.ff_proj = nn.Linear(d.hidden_size, d.intermediate_size, bias=False)
        self.up_proj = nn.Linear(d.hidden_size, d.intermediate_size, bias=False)
        self.ff_out = nn.Linear(d.intermediate_size, d.hidden_size, bias=False)

    def parts(self) -> BlockParts:
        """The modules in their architectural roles."""
        return BlockParts(
            attn_norm=self.attn_norm,
            q=self.q_proj,
            k=self.k_proj,
            v=self.v_proj,
            qk=self.qk_site,
            o=self.attn_out,
            mlp_norm=self.ff_norm,
            gate=self.ff_proj,
            up=self.up_proj,
            down=self.ff_out,
        )


class LLaDAModel(nn.Module):
    """``transformer`` ModuleDict holding wte, blocks, ln_f and (untied) ff_out."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        d = config.dims()
        modules: dict[str, nn.Module] = {
            "wte": embedding(d.vocab_size, d.hidden_size),
            "blocks": nn.ModuleList(LLaDABlock(config) for _ in range(d.num_layers)),
            "ln_f": RMSNorm(d.hidden_size, d.rms_norm_eps),
        }
        if not d.tie_embeddings:
            modules["ff_out"] = nn.Linear(d.hidden_size, d.vocab_size, bias=False)
        self.transformer = nn.ModuleDict(modules)


class LLaDAModelLM(nn.Module):
    """LLaDA mask predictor: ``forward(input_ids, attention_mask) -> logits [B, L, V]`` (>= float32).

    Fully bidirectional attention; ``attention_mask`` [B, L] (1 real, 0 pad) excludes pad keys and makes
    positions cumsum(mask) - 1. V is ``embedding_size`` (= vocab_size in released checkpoints).
    ``rope_rounding`` (a plain attribute, not saved; `RopeRounding`): ``"reference"`` follows the config's
    ``rope_full_precision`` as LLaDA's code does (false: rotate in the activation dtype).
    """

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.config = config
        self.rope_rounding: RopeRounding = "float32"
        self.model = LLaDAModel(config)
        init_weights(self)

    @property
    def head(self) -> nn.Linear | None:
        """The LM head, None when tied to the embedding."""
        return getattr(self.model.transformer, "ff_out", None)

    def untie_head(self) -> None:
        """Give the model its own LM head initialised from the embedding (no-op if already untied)."""
        if self.head is not None:
            return
        wte = self.model.transformer["wte"].weight
        head = nn.Linear(wte.shape[1], wte.shape[0], bias=False, device=wte.device, dtype=wte.dtype)
        with torch.no_grad():
            head.weight.copy_(wte)
        head.weight.requires_grad_(wte.requires_grad)
        self.model.transformer["ff_out"] = head
        self.config.weight_tying = False

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """input_ids [B, L] int64, attention_mask [B, L] or None -> logits [B, L, V]."""
        t = self.model.transformer
        return decoder_forward(
            input_ids,
            attention_mask,
            embedding=t["wte"],  # type: ignore[arg-type]
            blocks=[blk.parts() for blk in t["blocks"]],  # type: ignore[union-attr]
            final_norm=t["ln_f"],  # type: ignore[arg-type]
            head=self.head,
            dims=self.config.dims(),
            round_rope=self.rounds_rope(),
        )

    def rounds_rope(self) -> bool:
        """Whether RoPE rotates in the activation dtype: under ``rope_rounding="reference"`` with
        ``rope_full_precision`` false."""
        return self.rope_rounding == "reference" and not self.config.rope_full_precision

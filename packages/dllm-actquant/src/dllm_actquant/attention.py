"""Attention activation sites: Q and K after RoPE, V at the v-projection output.

The attention matmuls read three activations besides the linear inputs: the queries and keys after RoPE
(``Q K^T``) and the values (``P V``). The seed study quantizes them at the activation width: QuaRot
quantizes K (after its R3 Hadamard) and V, DuQuant and SmoothQuant quantize Q, K and V (QDLM,
``QuaRot/fake_quant/main.py`` ``--k_bits --v_bits``; ``DuQuant/models/int_llada_layer.py``, the
``QuantMatMul`` sites). Here every site is a wrapper module, like the linear wrappers:

* Q and K: the block's ``QKSite`` (topology role ``qk``, the identity on ``(q [B, H, L, Dh], k [B, K, L,
  Dh])`` after RoPE) is wrapped in `QKHadamard` (QuaRot's R3, an exact rotation of both, so ``Q K^T`` is
  unchanged) and/or `QKQuant` (dynamic quantization of q and/or k);
* V: the v projection is wrapped in a ``VQuantOutput`` with a dynamic granularity (``"token"``: per token
  and kv head; ``"row"``: per token over all heads).

Dynamic quantization computes a range per token (``per_head``: per token and head, a row of Dh values;
otherwise per token over all heads of that tensor), shrunk by ``clip_ratio``, on the integer grid of
``dllm_kernels`` (``quantize_per_token``), and dequantizes before the matmul. On the CPU, `QKQuant` offers the
attention a ``rope_runner``: RoPE and the quantization of q and k in one Numba launch, with the numbers of
the two steps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import dllm_kernels
import torch
from dllm_calib import MethodConfig, check_bool, check_range
from dllm_kernels.cpu.rope import rope_fake_quantize_heads
from dllm_kernels.dispatch import fast_cpu_gemms
from dllm_sampler import DiffusionLM, Topology
from dllm_sampler.models.layers import QKSite, hooked
from torch import Tensor, nn

from dllm_actquant.act_quant import ACT_BITS, ActQuantConfig
from dllm_actquant.guards import QUANTIZED_ATTR, mark_quantized
from dllm_actquant.hadamard import check_hadamard_size
from dllm_actquant.modules import as_topology, replace_module
from dllm_actquant.vquant import VQuantConfig, VQuantOutput, VQuantParams, attach_v_quantizers

__all__ = [
    "ATTENTION_SITES",
    "AttnQuantConfig",
    "QKHadamard",
    "QKQuant",
    "attach_attention_quantizers",
    "attention_site_summary",
    "fake_quantize_heads",
    "rotate_qk",
]

logger = logging.getLogger(__name__)

ATTENTION_SITES = ("q", "k", "v")
"""The attention activations a recipe can quantize."""


@dataclass(frozen=True)
class AttnQuantConfig(MethodConfig):
    """Dynamic quantization of the attention activations.

    Attributes:
        bits: 4 or 8 (a recipe binds the scheme's attention width, e.g. 4 for ``W4A4``).
        symmetric: signed codes without a zero point (True) or with one (False).
        per_head: one range per token and head (True) or per token over all heads (False, QuaRot's
            ``k_groupsize = v_groupsize = -1``).
        clip_ratio: range shrink factor in (0, 1].
        sites: which of ``q``, ``k``, ``v`` are quantized.
    """

    bits: int = 8
    symmetric: bool = True
    per_head: bool = True
    clip_ratio: float = 1.0
    sites: tuple[str, ...] = ATTENTION_SITES

    def validate(self) -> None:
        if isinstance(self.bits, bool) or self.bits not in ACT_BITS:
            raise ValueError(f"AttnQuantConfig.bits must be one of {ACT_BITS}, got {self.bits!r}")
        check_bool("AttnQuantConfig", "symmetric", self.symmetric)
        check_bool("AttnQuantConfig", "per_head", self.per_head)
        check_range("AttnQuantConfig", "clip_ratio", self.clip_ratio, 0.0, 1.0, lo_open=True)
        sites = self.sites
        if not isinstance(sites, tuple) or not sites or any(s not in ATTENTION_SITES for s in sites):
            raise ValueError(
                f"AttnQuantConfig.sites must be a non-empty tuple of {list(ATTENTION_SITES)}, got {sites!r}"
            )
        if len(set(sites)) != len(sites):
            raise ValueError(f"AttnQuantConfig.sites repeats an entry: {sites!r}")

    def activation_config(self) -> ActQuantConfig:
        """The per-row activation quantizer applied to each row of q or k."""
        return ActQuantConfig(
            bits=self.bits, symmetric=self.symmetric, granularity="token", clip_ratio=self.clip_ratio
        )

    def v_config(self) -> VQuantConfig:
        """The V quantizer of these settings."""
        granularity = "token" if self.per_head else "row"
        return VQuantConfig(bits=self.bits, symmetric=self.symmetric, granularity=granularity)


def fake_quantize_heads(x: Tensor, config: AttnQuantConfig) -> Tensor:
    """Quantize-dequantize ``x [B, heads, L, Dh]`` per token and head (``per_head``) or per token over all
    heads; same shape and dtype."""
    (out,) = _fake_quantize_heads_each((x,), config)
    return out


def _fake_quantize_heads_each(xs: Sequence[Tensor], config: AttnQuantConfig) -> tuple[Tensor, ...]:
    """`fake_quantize_heads` of each tensor of ``xs`` (q and k), one ``dllm_kernels`` call for all."""
    for x in xs:
        if x.dim() != 4:
            raise ValueError(
                f"fake_quantize_heads expects [batch, heads, length, head_dim], got {tuple(x.shape)}"
            )
    # rows are quantized independently, so they are read in [B, L, H, Dh] order: after RoPE q and k are laid
    # out that way (the projections' outputs viewed per head), and the reshape is then free
    rows = [
        x.transpose(1, 2).reshape(-1, x.shape[3] if config.per_head else x.shape[1] * x.shape[3]) for x in xs
    ]
    outs = dllm_kernels.fake_quantize_per_token_each(rows, config.bits, config.symmetric, config.clip_ratio)
    return tuple(
        out.to(x.dtype).reshape(x.shape[0], x.shape[2], x.shape[1], x.shape[3]).transpose(1, 2)
        for out, x in zip(outs, xs, strict=True)
    )


class QKHadamard(nn.Module):
    """``inner`` (a ``QKSite`` or a wrapper of one) followed by the normalised Hadamard of the head dim on q
    and k: ``(q H)(k H)^T = q k^T``, so the attention is unchanged while K's outliers spread over its
    channels (QuaRot's R3)."""

    def __init__(self, inner: nn.Module, head_dim: int) -> None:
        super().__init__()
        check_hadamard_size(head_dim, "QuaRot R3: the head dim")
        self.inner = inner
        self.head_dim = head_dim

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        q, k = self.inner(q, k)
        return (
            dllm_kernels.hadamard_transform(q.contiguous()),
            dllm_kernels.hadamard_transform(k.contiguous()),
        )

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}"


class QKQuant(nn.Module):
    """``inner`` followed by dynamic quantization of q and/or k (``config.sites``). Marked ``"qk"``."""

    def __init__(self, inner: nn.Module, config: AttnQuantConfig) -> None:
        super().__init__()
        if not {"q", "k"} & set(config.sites):
            raise ValueError("QKQuant needs 'q' or 'k' among the sites")
        self.inner = inner
        self.config = config
        mark_quantized(self, "qk")

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        q, k = self.inner(q, k)
        sites = self.config.sites
        done = iter(
            _fake_quantize_heads_each([t for s, t in (("q", q), ("k", k)) if s in sites], self.config)
        )
        return (next(done) if "q" in sites else q, next(done) if "k" in sites else k)

    def rope_runner(self, q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor] | None:
        """RoPE (``cos``, ``sin`` ``[B or 1, 1, L, Dh]``) and this site's quantization of ``q [B, H, L, Dh]``
        and ``k [B, K, L, Dh]`` in one CPU pass (`dllm_kernels.cpu.rope`): ``apply_rope`` followed by
        `forward`, bit for bit. None when it cannot serve the call (see `_rope_fusable`), and
        ``dllm_sampler.models.layers.rope_and_qk_site`` then runs the steps one by one."""
        if not self._rope_fusable(q, k, cos, sin):
            return None
        c = self.config
        out_q, out_k = rope_fake_quantize_heads(
            (q, k), cos, sin, c.bits, c.symmetric, c.clip_ratio, c.per_head
        )
        return out_q, out_k

    def _rope_fusable(self, q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> bool:
        """Both q and k quantized right after RoPE (the inner site is a bare ``QKSite``), no hook on this site
        or its inner one, float32 CPU tensors without gradients, the fast CPU path on (`fast_cpu_gemms`)."""
        tensors = (q, k, cos, sin)
        return (
            "q" in self.config.sites
            and "k" in self.config.sites
            and type(self.inner) is QKSite
            and not hooked((self, self.inner))
            and fast_cpu_gemms()
            and all(
                t.dtype == torch.float32 and t.device.type == "cpu" and not t.requires_grad for t in tensors
            )
            and q.shape[-1] % 2 == 0
        )

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"sites={list(c.sites)}, bits={c.bits}, symmetric={c.symmetric}, per_head={c.per_head}, "
            f"clip_ratio={c.clip_ratio}"
        )


def rotate_qk(model: DiffusionLM | Topology | nn.Module) -> list[str]:
    """Wrap every block's q/k site in `QKHadamard` (QuaRot's R3); returns the wrapped site names."""
    topology = as_topology(model)
    for block in topology:
        check_hadamard_size(block.head_dim, "QuaRot R3: the head dim")
    names = []
    for block in topology:
        name = block.names["qk"]
        replace_module(topology.model, name, QKHadamard(block.module("qk"), block.head_dim))
        names.append(name)
    return names


def _has_v_quantizer(module: nn.Module) -> bool:
    """True when the v projection's output already passes a V quantizer (the ``"v-output"`` mark)."""
    return isinstance(module, VQuantOutput) or getattr(module, QUANTIZED_ATTR, "") == "v-output"


def attach_attention_quantizers(
    model: DiffusionLM | Topology | nn.Module, config: AttnQuantConfig, blocks: Sequence[int] | None = None
) -> list[str]:
    """Quantize the attention sites ``config.sites`` of ``blocks`` (default all); returns the names of the
    wrapped modules (q/k sites and v projections).

    A V that already carries a quantizer (IA-AQ's calibrated one) is left as it is and logged.
    """
    topology = as_topology(model)
    chosen = [topology.block(i) for i in (range(len(topology)) if blocks is None else blocks)]
    wrapped: list[str] = []
    qk_sites = {"q", "k"} & set(config.sites)
    for block in chosen:
        if qk_sites:
            name = block.names["qk"]
            replace_module(topology.model, name, QKQuant(block.module("qk"), config))
            wrapped.append(name)
    if "v" in config.sites:
        params: dict[int, VQuantParams] = {}
        for block in chosen:
            if _has_v_quantizer(block.module("v")):
                logger.info("attention quantization: %s already has a V quantizer; kept", block.names["v"])
                continue
            params[block.index] = VQuantParams(
                alpha=torch.full((block.n_kv_heads,), float(config.clip_ratio))
            )
        if params:
            attach_v_quantizers(topology, config.v_config(), params)
            wrapped += [topology.block(i).names["v"] for i in params]
    return wrapped


def attention_site_summary(model: DiffusionLM | Topology | nn.Module) -> dict[str, str]:
    """What quantizes each attention site of ``model``, read from its modules: ``{"q" | "k" | "v": text}``
    with ``"float"`` for an unquantized site and ``"mixed"`` when blocks differ; ``"qk_rotation"`` says
    whether q and k pass a Hadamard (R3)."""
    per_site: dict[str, set[str]] = {"q": set(), "k": set(), "v": set(), "qk_rotation": set()}
    for block in as_topology(model):
        q = k = "float"
        rotated = "none"
        site = block.module("qk")
        while hasattr(site, "inner"):
            if isinstance(site, QKQuant):
                c = site.config
                text = _describe(c.bits, c.symmetric, c.per_head, c.clip_ratio)
                q = text if "q" in c.sites and q == "float" else q
                k = text if "k" in c.sites and k == "float" else k
            elif isinstance(site, QKHadamard):
                rotated = "hadamard"
            site = site.inner
        v = block.module("v")
        v_text = "float"
        if isinstance(v, VQuantOutput):
            c = v.config
            v_text = _describe(
                c.bits, c.symmetric, c.granularity != "row", float(v.params.alpha.min()), c.granularity
            )
        for key, text in (("q", q), ("k", k), ("v", v_text), ("qk_rotation", rotated)):
            per_site[key].add(text)
    return {key: next(iter(texts)) if len(texts) == 1 else "mixed" for key, texts in per_site.items()}


def _describe(bits: int, symmetric: bool, per_head: bool, clip: float, granularity: str | None = None) -> str:
    """``"a4 asym per-token-head clip0.9"``-style text of one quantizer."""
    kind = f"int{bits} {'sym' if symmetric else 'asym'}"
    if granularity in ("head", "channel"):
        return f"{kind} static per-{granularity} (calibrated ranges)"
    text = f"{kind} {'per-token-head' if per_head else 'per-token'}"
    return text if clip == 1.0 else f"{text} clip{clip:g}"

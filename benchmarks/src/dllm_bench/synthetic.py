"""Random-weight models with the real shapes of LLaDA-8B or Dream-7B, for speed and memory measurements.

``synthetic_config("llada", "llada-8b")`` is LLaDA-8B's config.json (docs/references.md#llada-8b: hidden 4096,
32 layers, 32 heads without GQA, MLP 12288, vocabulary 126464, mask 126336, EOS 126081);
``synthetic_config("dream", "dream-7b")`` is Dream-v0-7B's (docs/references.md#dream-7b, Qwen2-7B shapes:
hidden 3584, 28 layers, 28 query / 4 key-value heads, MLP 18944, vocabulary 152064, mask 151666); both are
the config class's ``published()``, named by its ``PUBLISHED_NAME``. ``"tiny"`` is
``dllm_sampler.tiny_config(arch)``. ``n_layers`` keeps the per-layer shapes with fewer blocks (a CPU can
hold one or two 8B-shaped blocks); ``vocab_size`` shrinks the embedding and head (the special ids move to
the top of the smaller vocabulary), for tests only: it changes the per-step cost of the head.

`synthetic_model` allocates the model directly in the target dtype on the target device and fills it once
(no float32 copy of 8B weights); `synthetic_checkpoint` writes it with ``dllm_sampler.save`` (no
tokenizer: samplers and benchmarks take token ids).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from dllm_sampler import DiffusionLM, DreamConfig, LLaDAConfig, save, tiny_config
from dllm_sampler.models import ARCH_SPECS, arch_spec
from dllm_sampler.models.spec import TopologyNames
from torch import Tensor, nn

__all__ = [
    "ARCH_OF_SHAPES",
    "SHAPES",
    "STD",
    "synthetic_checkpoint",
    "synthetic_config",
    "synthetic_model",
]

DENSE_ARCHS = tuple(name for name, spec in ARCH_SPECS.items() if isinstance(spec.names, TopologyNames))
"""Architectures a synthetic model can take (dense blocks; the MoE LLaDA2 has no synthetic builder yet)."""
ARCH_OF_SHAPES = {ARCH_SPECS[name].config_cls.PUBLISHED_NAME: name for name in DENSE_ARCHS}
"""The published shapes (each config class's ``PUBLISHED_NAME``) and the architecture they belong to."""
SHAPES = (*ARCH_OF_SHAPES, "tiny")
STD = 0.02
"""Standard deviation of the random matrices (``DiffusionLM.from_config``'s)."""


def _resolve_shapes(arch: str, shapes: str | None) -> str:
    spec = arch_spec(arch)  # an unknown arch raises first
    if shapes is None:
        return spec.config_cls.PUBLISHED_NAME
    if shapes not in SHAPES:
        raise ValueError(f"unknown shapes {shapes!r}; choose one of {', '.join(SHAPES)}")
    if shapes in ARCH_OF_SHAPES and ARCH_OF_SHAPES[shapes] != arch:
        raise ValueError(f"shapes {shapes!r} are a {ARCH_OF_SHAPES[shapes]} model, not {arch}")
    return shapes


def _positive(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


def synthetic_config(
    arch: str, shapes: str | None = None, n_layers: int | None = None, vocab_size: int | None = None
) -> LLaDAConfig | DreamConfig:
    """The config of a synthetic model.

    Args:
        arch: ``"llada"`` or ``"dream"``.
        shapes: ``"llada-8b"`` / ``"dream-7b"`` (must match ``arch``), ``"tiny"``, or None for the arch's
            published shapes.
        n_layers: number of blocks (default: the shapes' own).
        vocab_size: rows of the embedding and head (default: the shapes' own; >= 2). The mask id becomes
            ``vocab_size - 1`` and EOS / pad (and Dream's BOS) ``vocab_size - 2``.

    Raises:
        ValueError: unknown arch or shapes, shapes of the other arch, a non-positive size.
    """
    shapes = _resolve_shapes(arch, shapes)
    _positive("n_layers", n_layers)
    _positive("vocab_size", vocab_size)
    if vocab_size is not None and vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2 (mask and EOS ids), got {vocab_size}")
    config_cls = arch_spec(arch).config_cls
    base = tiny_config(arch) if shapes == "tiny" else config_cls.published()
    data = base.to_dict()
    if n_layers is not None:
        data[config_cls.LAYER_COUNT_KEY] = n_layers
    if vocab_size is not None:
        special = vocab_size - 2
        data |= dict.fromkeys(config_cls.VOCAB_KEYS, vocab_size) | {"mask_token_id": vocab_size - 1}
        data |= {"eos_token_id": special, "pad_token_id": special}
        # BOS keeps its published role: Dream's is its EOS token, LLaDA's config.json has none
        published = config_cls.published()
        data["bos_token_id"] = special if published.bos_token_id == published.eos_token_id else None
    return config_cls.from_dict(data)  # type: ignore[return-value]


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create new float tensors in ``dtype`` inside the block (restores the previous default after)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _allocate(model: nn.Module, device: torch.device) -> None:
    """Give a meta-device model uninitialised tensors of the same shapes and dtypes on ``device`` (tensors
    shared between names, e.g. tied weights, stay shared)."""
    fresh: dict[int, Tensor] = {}
    state = {
        name: fresh.setdefault(id(t), torch.empty(t.shape, dtype=t.dtype, device=device))
        for name, t in model.state_dict(keep_vars=True).items()
    }
    model.load_state_dict(state, assign=True)


@torch.no_grad()
def _init_random(model: nn.Module, seed: int) -> None:
    """N(0, STD) matrices (linears, embedding, head), zero biases, unit norm gains, from a generator on the
    model's device seeded with ``seed``."""
    if any(True for _ in model.buffers()):
        raise RuntimeError("the model has buffers, which a synthetic build would leave uninitialised")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, param in model.named_parameters():
        if param.dim() > 1:
            param.normal_(0.0, STD, generator=generator)
        elif name.endswith("bias"):
            param.zero_()
        else:
            param.fill_(1.0)


def synthetic_model(
    arch: str,
    shapes: str | None = None,
    n_layers: int | None = None,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    seed: int = 0,
    vocab_size: int | None = None,
) -> DiffusionLM:
    """A random-weight ``DiffusionLM`` of `synthetic_config`'s shapes: N(0, 0.02) matrices, zero biases,
    unit norm gains (as ``DiffusionLM.from_config``).

    The model is laid out on the meta device and its tensors are then allocated in ``dtype`` on ``device``
    and filled once (no float32 copy, no default init to overwrite); ``device="meta"`` gives the shapes
    only. ``seed`` makes the weights reproducible on a given device type. LLaDA-8B in bfloat16 takes
    16 GB, one of its blocks 0.44 GB and its embedding plus head 2.1 GB.
    """
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype (bfloat16, float16, float32), got {dtype}")
    config = synthetic_config(arch, shapes, n_layers, vocab_size)
    with torch.device("meta"), _default_dtype(dtype):
        dlm = DiffusionLM.from_config(config, device="meta")
    if torch.device(device).type != "meta":
        _allocate(dlm.model, torch.device(device))
        _init_random(dlm.model, seed)
    dlm.model.eval().requires_grad_(False)  # as dllm_sampler.load returns a checkpoint
    return dlm


def synthetic_checkpoint(
    arch: str,
    shapes: str | None = None,
    n_layers: int | None = None,
    *,
    folder: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    vocab_size: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a `synthetic_model` (built on the CPU) to ``folder`` with ``dllm_sampler.save``; returns it.

    The folder has ``config.json`` and the safetensors weights and no tokenizer (``dllm_sampler.load``
    warns about that and loads it). An existing non-empty ``folder`` needs ``overwrite=True``.
    """
    dlm = synthetic_model(arch, shapes, n_layers, dtype=dtype, seed=seed, vocab_size=vocab_size)
    return save(dlm, folder, overwrite=overwrite)

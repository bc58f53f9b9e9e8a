"""Exports read by compressed-tensors: each kind is decompressed with compressed-tensors' own checkpoint
converter and run as a float model from only what its config.json declares (activation quantizers and
online Hadamards, applied with compressed-tensors' own quantization and transform code); the logits
match dllmq's loader within KL 1e-3. Exports with computation compressed-tensors cannot express are
refused, by compressed-tensors and by transformers, with a message.

The harness builds the float model with ``dllm_sampler.load`` from the converted folder (our module names
are the published checkpoints'), since LLaDA/Dream are remote-code models transformers cannot build
offline. compressed-tensors hooks q/k transforms only into transformers' attention; those (QuaRot's R3)
are computed by compressed-tensors' Hadamard transform and hooked here at the model's q/k site.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dllm_bench.loading import load_any
from dllm_bench.pipeline import export_model, quantize_model
from dllm_bench.recipes import Recipe, load_recipe
from dllm_bench.recipes.scheme import parse_scheme
from dllm_sampler import DiffusionLM
from dllm_sampler import load as load_float
from dllm_sampler.testing import CHAR_VOCAB, random_char_model
from dllm_weightquant import load_quantized
from torch import Tensor, nn

ct = pytest.importorskip("compressed_tensors")
from compressed_tensors.entrypoints.convert import convert_checkpoint  # noqa: E402
from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import (  # noqa: E402
    CompressedTensorsDequantizer,
)
from compressed_tensors.quantization import (  # noqa: E402
    QuantizationConfig,
    QuantizationStatus,
    apply_quantization_config,
)
from compressed_tensors.transform import TransformConfig, TransformFactory, apply_transform_config  # noqa: E402
from transformers.quantizers.auto import AutoQuantizationConfig  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

SMALL_CALIBRATION = {"builder": "random", "params": {"num_samples": 6, "seq_len": 24}, "batch_size": 4}
QK_LOCATIONS = ("q_attn", "k_cache")
CT_REFUSAL = "does not match expected compressed-tensors quantization format"

# kind -> (architecture, recipe, scheme, step changes, reasons compressed-tensors cannot express)
KINDS: dict[str, tuple[str, str, str, dict[int, dict], list[str]]] = {
    "W4A16": ("llada", "gptq", "W4A16g16", {}, []),
    "W3A16": ("dream", "gptq", "W3A16g16", {}, []),
    "W8A8": ("dream", "smoothquant", "W8A8", {}, ["Q/K quantizers", "V quantizers (attention values)"]),
    "W8A8KV16": ("llada", "smoothquant", "W8A8KV16", {}, []),
    "QuaRot-W4A16": ("dream", "quarot", "W4A16", {}, []),
    "QuaRot-W4A4": (
        "llada",
        "quarot",
        "W4A4",
        {},
        [
            "Q/K quantizers",
            "V quantizers (attention values)",
            "activation quantizers clipped at 0.9 of the token range",
        ],
    ),
    "QuaRot-W4A4KV16-noclip": ("llada", "quarot", "W4A4KV16", {2: {"clip_ratio": 1.0}}, []),
    "DuQuant-W4A4KV16": (
        "dream",
        "duquant",
        "W4A4KV16",
        {0: {"block_size": 8, "max_rotation_step": 4}},
        ["DuQuant block rotations and permutations of linear inputs"],
    ),
}


def small(name: str, scheme: str, step_changes: dict[int, dict]) -> Recipe:
    """The shipped recipe ``name`` at ``scheme`` with a few random calibration states."""
    data = load_recipe(name).with_scheme(scheme).to_dict()
    data["calibration"] = SMALL_CALIBRATION
    for index, changes in step_changes.items():
        data["steps"][index] = {**data["steps"][index], **changes}
    return Recipe.model_validate(data)


def kl(reference: Tensor, other: Tensor) -> float:
    """Mean over positions of KL(softmax(reference) || softmax(other))."""
    p = torch.log_softmax(reference.double(), -1)
    q = torch.log_softmax(other.double(), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


class HookedQK(nn.Module):
    """The model's q/k site followed by compressed-tensors' transforms of the queries and/or keys."""

    def __init__(self, inner: nn.Module, transforms: dict[str, nn.Module]) -> None:
        super().__init__()
        self.inner = inner
        self.transforms = nn.ModuleDict(transforms)

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        q, k = self.inner(q, k)
        if "q_attn" in self.transforms:
            q = self.transforms["q_attn"](q)
        if "k_cache" in self.transforms:
            k = self.transforms["k_cache"](k)
        return q, k


def apply_declared_transforms(model: nn.Module, data: dict) -> None:
    """The online transforms of a ``transform_config``: linear ones with ``apply_transform_config``, q/k
    ones with compressed-tensors' transform objects hooked at the attention module's q/k site."""
    config = TransformConfig.model_validate(data)
    qk: dict[str, dict[str, nn.Module]] = {}
    for name, scheme in config.config_groups.items():
        factory = TransformFactory.from_scheme(scheme, name=name)
        for args in scheme.apply:
            assert args.is_online(), "offline transforms are already in the stored weights"
            if args.location in QK_LOCATIONS:
                for target in args.targets:
                    transform = factory.create_transform(model.get_submodule(target), args)
                    qk.setdefault(target, {})[args.location] = transform
        scheme.apply = [a for a in scheme.apply if a.location not in QK_LOCATIONS]
    apply_transform_config(model, config)
    for attention, transforms in qk.items():
        site = attention + ".qk_site"  # where dllm_sampler's models expose q and k after RoPE
        model.set_submodule(site, HookedQK(model.get_submodule(site), transforms))


def compressed_tensors_model(folder: Path, dense: Path, *, online: bool = True) -> DiffusionLM:
    """``folder`` decompressed by compressed-tensors' checkpoint converter into ``dense``, with the
    transforms and input activation quantizers its config declares applied by compressed-tensors (none
    with ``online=False``)."""
    if not dense.exists():
        convert_checkpoint(
            folder, dense, CompressedTensorsDequantizer(folder, dtype=torch.float32), device="cpu"
        )
    assert "quantization_config" not in json.loads((dense / "config.json").read_text())
    dlm = load_float(dense)
    if not online:
        return dlm
    declared = json.loads((folder / "config.json").read_text())["quantization_config"]
    if declared["transform_config"]:
        apply_declared_transforms(dlm.model, declared["transform_config"])
    qconfig = QuantizationConfig.model_validate(declared)
    for scheme in qconfig.config_groups.values():
        scheme.weights = None  # the converter already decompressed them
    qconfig.config_groups = {k: s for k, s in qconfig.config_groups.items() if s.input_activations}
    if qconfig.config_groups:
        qconfig.quantization_status = QuantizationStatus.FROZEN
        apply_quantization_config(dlm.model, qconfig, show_progress=False)
    return dlm


@pytest.mark.parametrize("kind", list(KINDS))
def test_compressed_tensors_runs_the_export_or_refuses_it(tmp_path: Path, kind: str) -> None:
    arch, recipe, scheme, changes, reasons = KINDS[kind]
    result = quantize_model(random_char_model(arch), small(recipe, scheme, changes), progress=False)
    folder = export_model(result, tmp_path / "q")
    shards = {p.name for p in folder.glob("*safetensors*")}
    assert shards == {"model.safetensors"}, "only weight shards carry a safetensors name"
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    ids = torch.randint(4, CHAR_VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))

    if reasons:
        assert qc["quant_method"] == "dllmq" and qc["unsupported_by_compressed_tensors"] == sorted(reasons)
        with pytest.raises(ValueError, match=CT_REFUSAL):
            CompressedTensorsDequantizer(folder)
        with pytest.raises(ValueError, match="Unknown quantization type, got dllmq"):
            AutoQuantizationConfig.from_dict(qc)
        with pytest.raises(ValueError, match="declares computation that runs online besides the weights"):
            load_quantized(folder)  # dllmq's weights-only loader refuses too
        load_any(folder)
        return

    assert qc["quant_method"] == "compressed-tensors"
    activations = parse_scheme(scheme).activation_bits < 16
    assert all(bool(g["input_activations"]) == activations for g in qc["config_groups"].values())
    assert bool(qc["transform_config"]) == (recipe == "quarot")
    with torch.no_grad():
        reference = load_any(folder).logits(ids)
        theirs = compressed_tensors_model(folder, tmp_path / "dense").logits(ids)
        weights_only = compressed_tensors_model(folder, tmp_path / "dense", online=False).logits(ids)
    assert kl(reference, theirs) < 1e-3
    if activations or qc["transform_config"]:  # what the config declares is what makes them agree
        assert kl(reference, weights_only) > max(100 * kl(reference, theirs), 1e-9)

"""Export of a quantized LLaDA2 (``LLaDA2MoeModelLM``) for SGLang, checked against SGLang's loading code.

What SGLang does with each checkpoint tensor was read in sgl-project/sglang (file @ commit):

* python/sglang/srt/models/llada2.py @ 02ceb3b3bfd2e7683f827f273d1d4b2f4233563e (``load_weights``: the
  name rules, silent skipping of unknown names; the modules and their parameters; the config keys read);
* python/sglang/srt/layers/moe/fused_moe_triton/layer.py @ 9af3c47b70fa13269891063624d658bb1be1b6b9
  (``make_expert_params_mapping``: ``experts.{e}.gate_proj.`` -> ``experts.w13_`` shard w1, ``up_proj`` ->
  ``w13_`` w3, ``down_proj`` -> ``w2_``);
* python/sglang/srt/layers/quantization/compressed_tensors/compressed_tensors_moe.py
  @ 014a324bde886ae185710e9f3fd3c066674e5545 and .../schemes/compressed_tensors_wNa16_moe.py
  @ 02a580880ee625d1d4a8c317ad913dcc0506cf79 (the WNA16 MoE parameters and constraints: the "Linear"
  group, symmetric, pack-quantized, 4 or 8 bits);
* .../compressed_tensors/compressed_tensors.py @ b5535699b732af5d2e049cc5b70112718964b774 and
  .../compressed_tensors/utils.py @ 06b5b1906a851fe3a207d85963aaea2c48347139 (``ignore`` is checked first,
  by exact name, ``re:`` or case-insensitive substring of SGLang's module names);
* python/sglang/srt/layers/quantization/marlin_utils.py @ 653d85493bdfcdb8389c5d91845d73be8a15d2e9 (the
  Marlin group sizes and the Linear / MoE shape conditions, which only warn).

The tables below are that reading written down as data (our words, not SGLang's code). A GPU run with
SGLang is what verifies the kernels; these tests verify names, layout, config and the scheme rules.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from dllm_kernels import QuantSpec
from dllm_sampler import DiffusionLM
from dllm_sampler.testing import random_llada2
from dllm_weightquant import (
    OnlineComputation,
    QuantLinear,
    export_quantized,
    load_quantized,
    replace_linear,
    rtn_quantize,
)
from dllm_weightquant.checkpoint.qconfig import ModuleFormat
from dllm_weightquant.checkpoint.sglang import SGLANG_SOURCES, sglang_parameter, sglang_shape_notes
from safetensors.torch import load_file
from torch import nn

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*has no tokenizer.json"),
    pytest.mark.filterwarnings("ignore:.*shapes SGLang's Marlin kernels"),  # the tiny widths; tested below
]

W4G32 = QuantSpec(4, True, "group", 32)
TINY = {
    "hidden_size": 64,
    "head_dim": 16,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "num_shared_experts": 1,
    "first_k_dense_replace": 1,
    "moe_intermediate_size": 32,
    "intermediate_size": 64,
}
"""2 layers (layer 0 dense, layer 1 MoE), 4 heads / 2 kv heads of 16, 4 experts of width 32, top-2, one
shared expert, untied LM head."""
EXPERTS = range(TINY["num_experts"])
PROJ = ("gate_proj", "up_proj", "down_proj")

# --- what SGLang reads, as data ----------------------------------------------------------------------

PACKED = ("weight_packed", "weight_scale", "weight_shape")
"""Tensors of a symmetric pack-quantized Linear without act-order (compressed-tensors' WNA16 layout)."""

SGLANG_CONFIG_KEYS = (
    "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "use_bias", "use_qkv_bias",
    "rms_norm_eps", "max_position_embeddings", "num_experts", "first_k_dense_replace", "num_hidden_layers",
    "intermediate_size", "moe_intermediate_size", "num_experts_per_tok", "norm_topk_prob",
    "num_shared_experts", "hidden_act", "vocab_size", "embedding_dropout", "tie_word_embeddings",
    "use_qk_norm", "partial_rotary_factor", "routed_scaling_factor", "score_function", "router_dtype",
    "n_group", "topk_group", "moe_router_enable_expert_bias", "rope_theta",
)  # fmt: skip
"""config.json keys SGLang's llada2.py reads (attributes and getattr with a default)."""


def checkpoint_names() -> set[str]:
    """Every tensor name the tiny W4 g32 export must hold (the checkpoint side of SGLang's load_weights)."""
    names = {"model.word_embeddings.weight", "model.norm.weight", "lm_head.weight"}
    for i in range(2):
        p = f"model.layers.{i}."
        names |= {p + n for n in ("input_layernorm.weight", "post_attention_layernorm.weight")}
        names |= {p + f"attention.{n}.weight" for n in ("query_layernorm", "key_layernorm")}
        names |= {p + f"attention.{m}.{t}" for m in ("query_key_value", "dense") for t in PACKED}
    names |= {f"model.layers.0.mlp.{m}.{t}" for m in PROJ for t in PACKED}
    moe = "model.layers.1.mlp."
    names |= {moe + "gate.weight", moe + "gate.expert_bias"}
    names |= {moe + f"experts.{e}.{m}.{t}" for e in EXPERTS for m in PROJ for t in PACKED}
    names |= {moe + f"shared_experts.{m}.{t}" for m in PROJ for t in PACKED}
    return names


def sglang_parameters() -> set[str]:
    """The parameters SGLang's LLaDA2MoeModelLM registers for this config under the WNA16 scheme (dense
    MLP and shared expert fused into gate_up_proj; experts in one FusedMoE with w13 = gate|up, w2 = down)."""
    params = {"model.word_embeddings.weight", "model.norm.weight", "lm_head.weight"}
    for i in range(2):
        p = f"model.layers.{i}."
        params |= {p + n for n in ("input_layernorm.weight", "post_attention_layernorm.weight")}
        params |= {p + f"attention.{n}.weight" for n in ("query_layernorm", "key_layernorm")}
        params |= {p + f"attention.{m}.{t}" for m in ("query_key_value", "dense") for t in PACKED}
    params |= {f"model.layers.0.mlp.{m}.{t}" for m in ("gate_up_proj", "down_proj") for t in PACKED}
    moe = "model.layers.1.mlp."
    params |= {moe + "gate.weight", moe + "gate.expert_bias"}
    params |= {moe + f"experts.{w}_{t}" for w in ("w13", "w2") for t in PACKED}
    params |= {moe + f"shared_experts.{m}.{t}" for m in ("gate_up_proj", "down_proj") for t in PACKED}
    return params


SGLANG_QUANTIZED_MODULES = (
    "model.layers.0.attention.query_key_value",
    "model.layers.0.attention.dense",
    "model.layers.0.mlp.gate_up_proj",
    "model.layers.0.mlp.down_proj",
    "model.layers.1.attention.query_key_value",
    "model.layers.1.attention.dense",
    "model.layers.1.mlp.experts",
    "model.layers.1.mlp.shared_experts.gate_up_proj",
    "model.layers.1.mlp.shared_experts.down_proj",
)
"""SGLang's module names (prefixes) that ask the compressed-tensors config for a quantization method."""


def sglang_ignores(module: str, ignore: list[str]) -> bool:
    """SGLang's ignore test: exact name, ``re:`` pattern, or case-insensitive substring."""
    return any(
        re.match(t[3:], module) if t.startswith("re:") else t.lower() in module.lower() for t in ignore
    )


# --- helpers ------------------------------------------------------------------------------------------


def tiny(seed: int = 0, **overrides: object) -> DiffusionLM:
    return random_llada2(seed, **{**TINY, **overrides})


def quantize(dlm: DiffusionLM, spec: QuantSpec = W4G32, skip: tuple[str, ...] = ("lm_head",)) -> list[str]:
    """RTN-quantize every Linear (not the routers, which are no Linears) except ``skip``; fake mode."""
    names = [n for n, m in dlm.model.named_modules() if isinstance(m, nn.Linear) and n not in skip]
    for name in names:
        lin = dlm.model.get_submodule(name)
        q = rtn_quantize(lin.weight.detach(), None, spec)
        replace_linear(dlm.model, name, QuantLinear.from_linear(lin, q, mode="fake"))  # type: ignore[arg-type]
    return names


IDS = torch.randint(0, 40, (2, 10), generator=torch.Generator().manual_seed(3))

# --- tests --------------------------------------------------------------------------------------------


def test_sources_cited_here_are_the_ones_the_rules_name() -> None:
    doc = __doc__ or ""
    for path, commit in SGLANG_SOURCES.items():
        assert path.rsplit("/", 1)[1] in doc and commit in doc, path


def test_exported_names_are_the_ones_sglang_maps_and_fill_every_parameter(tmp_path: Path) -> None:
    dlm = tiny()
    quantize(dlm)
    export_quantized(dlm, tmp_path / "q")
    state = load_file(str(tmp_path / "q" / "model.safetensors"))
    assert set(state) == checkpoint_names()
    params = sglang_parameters()
    landed = {name: sglang_parameter(name) for name in state}
    stray = sorted(name for name, p in landed.items() if p not in params)
    assert not stray, f"SGLang would skip these silently: {stray}"
    assert set(landed.values()) == params  # nothing SGLang allocates is left unfilled
    # each expert gives both shards of w13 (gate = w1, up = w3) and its w2
    for e in EXPERTS:
        for proj, param in (("gate_proj", "w13"), ("up_proj", "w13"), ("down_proj", "w2")):
            name = f"model.layers.1.mlp.experts.{e}.{proj}.weight_packed"
            assert landed[name] == f"model.layers.1.mlp.experts.{param}_weight_packed"
    # layout SGLang's loaders expect: int32 codes packed along the input dim, int64 shapes, float32 bias
    qkv = "model.layers.0.attention.query_key_value."
    assert state[qkv + "weight_packed"].shape == ((4 + 2 * 2) * 16, 64 // 8)
    assert state[qkv + "weight_packed"].dtype == torch.int32
    assert state[qkv + "weight_scale"].shape == (128, 64 // 32)
    down = "model.layers.1.mlp.experts.0.down_proj."
    assert state[down + "weight_packed"].shape == (64, 32 // 8)
    assert state[down + "weight_shape"].tolist() == [64, 32]
    assert state[down + "weight_shape"].dtype == torch.int64
    assert state["model.layers.1.mlp.gate.expert_bias"].dtype == torch.float32


def test_sglang_name_rules_on_examples() -> None:
    assert sglang_parameter("model.layers.3.mlp.experts.11.up_proj.weight_scale") == (
        "model.layers.3.mlp.experts.w13_weight_scale"
    )
    assert sglang_parameter("model.layers.3.mlp.experts.1.down_proj.weight_g_idx") == (
        "model.layers.3.mlp.experts.w2_weight_g_idx"
    )
    assert sglang_parameter("model.layers.3.mlp.shared_experts.up_proj.weight_packed") == (
        "model.layers.3.mlp.shared_experts.gate_up_proj.weight_packed"
    )
    assert sglang_parameter("model.layers.3.mlp.gate.expert_bias") == "model.layers.3.mlp.gate.expert_bias"
    assert sglang_parameter("lm_head.weight", tied_embeddings=True) is None


def test_config_is_what_sglang_reads(tmp_path: Path) -> None:
    dlm = tiny()
    quantize(dlm)
    export_quantized(dlm, tmp_path / "q")
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["architectures"] == ["LLaDA2MoeModelLM"] and config["model_type"] == "llada2_moe"
    assert [k for k in SGLANG_CONFIG_KEYS if k not in config] == []
    assert config["moe_router_enable_expert_bias"] is True and config["score_function"] == "sigmoid"
    qc = config["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    assert list(qc["config_groups"]) == ["group_0"]
    group = qc["config_groups"]["group_0"]
    assert group["targets"] == ["Linear"] and group["input_activations"] is None
    weights = {k: group["weights"][k] for k in ("num_bits", "type", "symmetric", "strategy", "group_size")}
    assert weights == {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32}
    assert qc["ignore"] == ["lm_head", "model.layers.1.mlp.gate"]
    for module in SGLANG_QUANTIZED_MODULES:
        assert not sglang_ignores(module, qc["ignore"]), module
    assert sglang_ignores("lm_head", qc["ignore"])


def test_round_trip_logits_equal_the_in_memory_fake_quantized_model(tmp_path: Path) -> None:
    dlm = tiny(seed=1)
    quantize(dlm)
    with torch.no_grad():
        want = dlm.logits(IDS)
    export_quantized(dlm, tmp_path / "q")
    loaded = load_quantized(tmp_path / "q", mode="fake")
    assert {n for n, m in loaded.model.named_modules() if isinstance(m, QuantLinear)} == {
        n for n, m in dlm.model.named_modules() if isinstance(m, QuantLinear)
    }
    with torch.no_grad():
        assert torch.equal(loaded.logits(IDS), want)


def test_expert_bias_is_written_in_float32_from_a_bfloat16_model(tmp_path: Path) -> None:
    dlm = tiny()
    dlm.model.to(torch.bfloat16)
    quantize(dlm)
    export_quantized(dlm, tmp_path / "q")
    state = load_file(str(tmp_path / "q" / "model.safetensors"))
    assert state["model.layers.1.mlp.gate.expert_bias"].dtype == torch.float32
    assert state["model.layers.1.mlp.gate.weight"].dtype == torch.bfloat16


def test_a_float_gate_up_pair_is_ignored_under_sglangs_fused_name(tmp_path: Path) -> None:
    dlm = tiny()
    quantize(dlm, skip=("lm_head", "model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"))
    export_quantized(dlm, tmp_path / "q")
    ignore = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]["ignore"]
    assert "model.layers.0.mlp.gate_up_proj" in ignore
    assert sglang_ignores("model.layers.0.mlp.gate_up_proj", ignore)
    for module in SGLANG_QUANTIZED_MODULES:
        if module != "model.layers.0.mlp.gate_up_proj":
            assert not sglang_ignores(module, ignore), module
    loaded = load_quantized(tmp_path / "q", mode="fake")  # our own loader ignores the fused name
    assert isinstance(loaded.model.get_submodule("model.layers.0.mlp.gate_proj"), nn.Linear)


BAD = [
    ("asymmetric", {"spec": QuantSpec(4, False, "group", 32)}, "symmetric=True"),
    ("3 bits", {"spec": QuantSpec(3, True, "group", 32)}, "3-bit weights"),
    ("group 16", {"spec": QuantSpec(4, True, "group", 16)}, "group_size 16"),
    ("per tensor", {"spec": QuantSpec(4, True, "tensor")}, "granularity 'tensor'"),
    ("float expert", {"skip": ("lm_head", "model.layers.1.mlp.experts.2.down_proj")}, "every routed expert"),
    ("quantized head", {"skip": ()}, "lm_head is quantized"),
    ("half a pair", {"skip": ("lm_head", "model.layers.1.mlp.shared_experts.up_proj")}, "quantize both"),
]


@pytest.mark.parametrize(("case", "kwargs", "message"), BAD, ids=[b[0] for b in BAD])
def test_schemes_sglang_cannot_serve_raise_naming_the_fix(
    tmp_path: Path, case: str, kwargs: dict, message: str
) -> None:
    dlm = tiny()
    quantize(dlm, **kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        export_quantized(dlm, tmp_path / "q")
    assert not (tmp_path / "q").exists()
    export_quantized(dlm, tmp_path / "q", check_serving=False)  # written anyway on request
    assert isinstance(load_quantized(tmp_path / "q", mode="fake"), DiffusionLM)


def test_two_weight_formats_raise() -> None:
    dlm = tiny()
    quantize(dlm)
    name = "model.layers.0.attention.dense"
    lin = dlm.model.get_submodule(name)
    q = rtn_quantize(lin.qweight.dequantize(), None, QuantSpec(8, True, "channel"))  # type: ignore[operator]
    replace_linear(dlm.model, name, QuantLinear(q, None, "fake", torch.float32))
    with pytest.raises(ValueError, match="one weight format"):
        export_quantized(dlm, "/nonexistent/never-written")


def test_a_dllmq_format_llada2_export_warns_that_sglang_cannot_load_it(tmp_path: Path) -> None:
    dlm = tiny()
    quantize(dlm)
    with pytest.warns(UserWarning, match="SGLang cannot load"):
        export_quantized(dlm, tmp_path / "q", online=OnlineComputation(inexpressible=("V quantizers",)))
    qc = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "dllmq"


def test_widths_below_the_marlin_kernels_warn_and_marlin_sized_ones_do_not(tmp_path: Path) -> None:
    dlm = tiny()
    quantize(dlm)
    formats = {
        n: ModuleFormat("uniform", spec=W4G32)
        for n, m in dlm.model.named_modules()
        if isinstance(m, QuantLinear)
    }
    notes = sglang_shape_notes(dlm.model, formats)
    assert notes[0].startswith("model.layers.1.mlp.experts: the Marlin MoE kernel needs hidden % 128")
    named = {note.split(":")[0] for note in notes}
    assert "model.layers.0.attention.dense [64, 64]" in named
    assert "model.layers.1.mlp.shared_experts.gate_up_proj [64, 64]" in named  # fused: 2 x 32 wide
    assert len(notes) == 1 + 2 * 2 + 2 + 2  # MoE; qkv, dense x 2 layers; dense MLP; shared expert
    with pytest.warns(UserWarning, match="SGLang's Marlin kernels"):
        export_quantized(dlm, tmp_path / "small")
    wide = tiny(hidden_size=128, head_dim=32, moe_intermediate_size=128, intermediate_size=128)
    quantize(wide)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", ".*has no tokenizer.json")
        export_quantized(wide, tmp_path / "wide")

"""What SGLang's loader needs from a compressed-tensors LLaDA2 (``LLaDA2MoeModelLM``) checkpoint.

Read in SGLang's source (sgl-project/sglang; file -> the commit read, `SGLANG_SOURCES`):

* ``srt/models/llada2.py``: ``load_weights`` takes every checkpoint tensor by name. Names holding
  ``mlp.experts.{e}.{gate,up,down}_proj.`` go to the fused expert parameters of ``FusedMoE``
  (``experts.w13_<leaf>`` for gate (shard w1) and up (w3), ``experts.w2_<leaf>`` for down); other names
  holding ``gate_proj``/``up_proj`` (the dense first layers' MLP and the shared expert) go to the fused
  ``gate_up_proj`` (shards 0 and 1); everything else keeps its name (``attention.query_key_value`` is fused
  in the checkpoint already). A name that matches no parameter is **skipped without a message**, so a
  wrong name loads as an uninitialised weight. ``lm_head`` is skipped when the embeddings are tied. The
  router ``mlp.gate`` is a plain module (``weight`` in ``router_dtype``, ``expert_bias`` float32 when
  ``moe_router_enable_expert_bias``); no quantization method is ever asked for it.
* ``srt/layers/moe/fused_moe_triton/layer.py``: ``make_expert_params_mapping`` and ``weight_loader``:
  packed expert weights are transposed on load (``[out, in*b/32]`` -> ``[in*b/32, out]``), ``weight_scale``
  and ``weight_g_idx`` are loaded per expert and shard, ``weight_shape`` as one value per expert.
* ``compressed_tensors/compressed_tensors_moe.py`` (``CompressedTensorsWNA16MoEMethod``) and, after the
  schemes were split out, ``compressed_tensors/schemes/compressed_tensors_wNa16_moe.py``
  (``CompressedTensorsWNA16MoE``): the expert scheme is read from the config group targeting ``"Linear"``;
  weights must be symmetric (an assert), the checkpoint's top-level ``format`` ``pack-quantized`` and the
  bits in ``WNA16_SUPPORTED_BITS`` (4 and 8); strategy ``channel`` or ``group``; no zero-point parameter
  exists; ``actorder`` ``group`` reads ``weight_g_idx``. Parameters are allocated as ``in // (32 / b)``
  packed rows and ``in // group_size`` scale groups. Weight-and-activation int8 (W8A8) MoE has no GPU
  method there (older: "Unsupported FusedMoe scheme"; newer: NPU only).
* ``compressed_tensors/compressed_tensors.py`` and ``compressed_tensors/utils.py``: the ``ignore`` list is
  checked before anything else, against SGLang's (fused) module names, as an exact name, ``re:`` regex or
  **case-insensitive substring**; a Linear without an exact-name target falls back to the ``"Linear"``
  target (its class name contains it), so fused ``gate_up_proj`` layers cannot carry a per-name scheme.

* ``layers/quantization/marlin_utils.py``: the Marlin kernels take group sizes -1 (channel), 32, 64, 128;
  a Linear needs ``out % 64 == 0``, ``in % 128 == 0`` and ``in % group == 0`` per tensor-parallel part
  (``verify_marlin_supports_shape``); the MoE kernel ``hidden % 128 == 0`` and
  ``intermediate % max(64, group) == 0`` (``check_moe_marlin_supports_layer``).

From this the rules `sglang_problems` checks (the fix is named in each message) and the tensor-name map
`sglang_parameter`; `sglang_shape_notes` lists the kernel shape conditions a model misses at tensor
parallel size 1 (warnings: they depend on the GPU run's kernel choice and parallel split). What only a
GPU run with SGLang shows (that it starts and serves, tensor parallel splits of the fused QKV and of
group scales, numerics) is listed in docs/llada2.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from dllm_weightquant.checkpoint.qconfig import ModuleFormat, OnlineComputation

__all__ = [
    "MOE_GROUP_SIZES",
    "MOE_WEIGHT_BITS",
    "SGLANG_CONFIG_DEFAULTS",
    "SGLANG_SOURCES",
    "sglang_extra_ignore",
    "sglang_parameter",
    "sglang_problems",
    "sglang_shape_notes",
]

SGLANG_SOURCES: Mapping[str, str] = {
    "python/sglang/srt/models/llada2.py": "02ceb3b3bfd2e7683f827f273d1d4b2f4233563e",
    "python/sglang/srt/layers/moe/fused_moe_triton/layer.py": "9af3c47b70fa13269891063624d658bb1be1b6b9",
    "python/sglang/srt/layers/quantization/compressed_tensors/compressed_tensors_moe.py": (
        "014a324bde886ae185710e9f3fd3c066674e5545"
    ),
    "python/sglang/srt/layers/quantization/compressed_tensors/schemes/compressed_tensors_wNa16_moe.py": (
        "02a580880ee625d1d4a8c317ad913dcc0506cf79"
    ),
    "python/sglang/srt/layers/quantization/compressed_tensors/compressed_tensors.py": (
        "b5535699b732af5d2e049cc5b70112718964b774"
    ),
    "python/sglang/srt/layers/quantization/compressed_tensors/utils.py": (
        "06b5b1906a851fe3a207d85963aaea2c48347139"
    ),
    "python/sglang/srt/layers/quantization/marlin_utils.py": "653d85493bdfcdb8389c5d91845d73be8a15d2e9",
}
"""SGLang file -> the commit whose text the rules in this module were read from."""

SGLANG_CONFIG_DEFAULTS: Mapping[str, Any] = {"embedding_dropout": 0.0}
"""config.json keys SGLang's ``llada2.py`` reads as plain attributes (no default) that dllmq's
``LLaDA2MoeConfig`` does not model, with the published checkpoints' value; an export writes them when its
config lacks them."""

MOE_WEIGHT_BITS = (4, 8)
"""Weight bits SGLang's WNA16 MoE method accepts (``WNA16_SUPPORTED_BITS``)."""

MOE_GROUP_SIZES = (32, 64, 128)
"""Group sizes the Marlin kernels that SGLang's WNA16 MoE method repacks into are built for (besides
per-channel scales; ``MARLIN_SUPPORTED_GROUP_SIZES``)."""

MARLIN_MIN_N = 64
MARLIN_MIN_K = 128
"""A Marlin Linear's output and input sizes must be multiples of these (``GPTQ_MARLIN_MIN_THREAD_N/K``)."""

_EXPERT = re.compile(r"^(?P<moe>.*\.mlp\.experts)\.(?P<e>\d+)\.(?P<proj>gate_proj|up_proj|down_proj)$")
_EXPERT_TENSOR = re.compile(
    r"^(?P<moe>.*\.mlp\.experts)\.\d+\.(?P<proj>gate_proj|up_proj|down_proj)\.(?P<leaf>\w+)$"
)
_FUSED_SHARDS = {"gate_proj": "w13", "up_proj": "w13", "down_proj": "w2"}


def sglang_parameter(name: str, tied_embeddings: bool = False) -> str | None:
    """The SGLang ``LLaDA2MoeModelLM`` parameter a checkpoint tensor ``name`` is loaded into (the name
    rules of ``load_weights``, see the module docstring); None for a tensor SGLang skips on purpose (the
    LM head of a tied model, rotary ``inv_freq``)."""
    if "inv_freq" in name or "v_head" in name or (tied_embeddings and "lm_head" in name):
        return None
    expert = _EXPERT_TENSOR.match(name)
    if expert:
        return f"{expert['moe']}.{_FUSED_SHARDS[expert['proj']]}_{expert['leaf']}"
    for shard in ("gate_proj", "up_proj"):
        if shard in name:
            return name.replace(shard, "gate_up_proj")
    return name


def _pairs(linears: Iterable[str]) -> list[tuple[str, str]]:
    """(gate_proj, up_proj) name pairs outside the routed experts (dense MLPs, shared experts)."""
    names = set(linears)
    pairs = [(n, n.removesuffix("gate_proj") + "up_proj") for n in names if n.endswith(".gate_proj")]
    return sorted((gate, up) for gate, up in pairs if up in names and not _EXPERT.match(gate))


def sglang_extra_ignore(linears: Iterable[str], quantized: Iterable[str]) -> list[str]:
    """SGLang's fused ``gate_up_proj`` names of the float (gate, up) pairs: SGLang checks ``ignore`` against
    its fused module names, so the float pair is named as SGLang builds it besides its two checkpoint
    names."""
    done = set(quantized)
    return [
        gate.removesuffix("gate_proj") + "gate_up_proj"
        for gate, up in _pairs(linears)
        if gate not in done and up not in done
    ]


def _scheme_problems(fmt: ModuleFormat) -> list[str]:
    spec = fmt.spec
    assert spec is not None, "a compressed-tensors export holds uniform weights only"
    out = []
    if spec.type != "int":
        out.append(f"{spec.type} weights: SGLang's WNA16 MoE method takes integer weights; use type 'int'")
    if not spec.symmetric:
        out.append(
            "asymmetric weights: SGLang's WNA16 MoE method accepts symmetric weights only (an assert, and no "
            "zero-point parameter exists); quantize with symmetric=True"
        )
    if spec.bits not in MOE_WEIGHT_BITS:
        out.append(
            f"{spec.bits}-bit weights: SGLang's WNA16 MoE method takes bits {MOE_WEIGHT_BITS}; quantize to 4 "
            "or 8 bits"
        )
    if spec.granularity not in ("channel", "group"):
        out.append(
            f"granularity {spec.granularity!r}: SGLang's WNA16 MoE method takes 'channel' or 'group' scales"
        )
    elif spec.granularity == "group" and spec.group_size not in MOE_GROUP_SIZES:
        out.append(
            f"group_size {spec.group_size}: the Marlin MoE kernels take group sizes {MOE_GROUP_SIZES} (or "
            "per-channel scales); pick one of them"
        )
    if fmt.layout != "pack-quantized":
        out.append(
            "quantized linear inputs (W8A8, int-quantized layout): SGLang has no GPU MoE method for int8 "
            "weights and activations; export weight-only (W4A16 / W8A16)"
        )
    return out


def sglang_problems(
    model: nn.Module,
    formats: Mapping[str, ModuleFormat],
    online: OnlineComputation | None = None,
) -> list[str]:
    """Why SGLang could not serve ``model`` (a ``LLaDA2MoeModelLM``) exported as compressed-tensors with the
    quantized Linears ``formats`` (name -> format) and ``online`` computation; empty when it can. Each
    entry names the rule and the fix (see the module docstring for where each rule is read)."""
    # the quantized Linears are QuantLinear modules by now, the float ones still nn.Linear
    linears = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)} | set(formats)
    problems: list[str] = []
    experts = sorted(n for n in linears if _EXPERT.match(n))
    float_experts = [n for n in experts if n not in formats]
    if float_experts:
        problems.append(
            f"{float_experts[0]} (and {len(float_experts) - 1} more) left in float while SGLang's FusedMoE "
            "holds one quantization scheme for all experts: quantize every routed expert linear"
        )
    distinct = sorted({f for f in formats.values()}, key=repr)
    if len(distinct) > 1:
        problems.append(
            f"{len(distinct)} different weight formats: SGLang reads the experts' scheme from the single "
            "config group targeting 'Linear' and gives its fused gate_up_proj layers that group too; use one "
            "weight format for every quantized linear (leave the others in float)"
        )
    for fmt in distinct[:1]:
        problems.extend(_scheme_problems(fmt))
    for name, fmt in sorted(formats.items()):
        spec = fmt.spec
        in_features = int(model.get_submodule(name).in_features)
        if spec is not None and spec.bits in MOE_WEIGHT_BITS and in_features % (32 // spec.bits):
            problems.append(
                f"{name}: {in_features} input features do not fill whole int32 words of {32 // spec.bits} "
                f"{spec.bits}-bit codes; SGLang allocates in // {32 // spec.bits} packed rows"
            )
    if "lm_head" in formats:
        problems.append(
            "lm_head is quantized: SGLang's LM head (ParallelLMHead) is loaded unquantized; leave it in float"
        )
    for gate, up in _pairs(linears):
        if (gate in formats) != (up in formats):
            problems.append(
                f"{gate} and {up}: one quantized, one float, but SGLang fuses them into one gate_up_proj "
                "with one scheme; quantize both or neither"
            )
    if online is not None and (online.hadamards or online.input_activations):
        problems.append(
            "online computation (" + "; ".join(online.parts()) + "): SGLang's compressed-tensors loader "
            "reads no transform_config and no GPU MoE method quantizes activations to int8; export "
            "weight-only without online rotations"
        )
    return problems


def sglang_shape_notes(model: nn.Module, formats: Mapping[str, ModuleFormat]) -> list[str]:
    """The Marlin shape conditions (`MARLIN_MIN_N`, `MARLIN_MIN_K`, the MoE kernel's) that the quantized
    layers of ``model`` miss at tensor-parallel size 1, by SGLang's module names (a fused ``gate_up_proj``
    is twice as wide as its parts), the MoE layers first; empty when none."""
    moe_notes: list[str] = []
    linears: dict[str, tuple[int, int]] = {}
    for name, fmt in sorted(formats.items()):
        spec = fmt.spec
        group = spec.group_size if spec is not None and spec.granularity == "group" else None
        module = model.get_submodule(name)
        out, inp = int(module.out_features), int(module.in_features)
        expert = _EXPERT.match(name)
        if expert:
            if (
                expert["e"] == "0"
                and expert["proj"] == "down_proj"
                and (out % 128 or inp % max(64, group or 0))
            ):
                moe_notes.append(
                    f"{expert['moe']}: the Marlin MoE kernel needs hidden % 128 == 0 and intermediate % "
                    f"{max(64, group or 0)} == 0, got hidden {out}, intermediate {inp}"
                )
            continue
        for part in ("gate_proj", "up_proj"):
            if name.endswith("." + part):
                name, out = name.removesuffix(part) + "gate_up_proj", 2 * out
        linears[name] = (out, inp)
    notes = [
        f"{name} [{out}, {inp}]: Marlin needs out % {MARLIN_MIN_N} == 0 and in % {MARLIN_MIN_K} == 0"
        for name, (out, inp) in sorted(linears.items())
        if out % MARLIN_MIN_N or inp % MARLIN_MIN_K
    ]
    return moe_notes + notes

"""Weight memory and sampler speed measurement: byte accounting against independent sums, timing invariants.

No assertion here depends on how fast the machine is.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from dllm_actquant import ActQuantConfig, ActQuantLinear, BlockRotation, OnlineRotation
from dllm_bench.evaluation.memory import weight_memory
from dllm_bench.evaluation.speed import PEAK_SOURCES, random_prompt, sampler_speed, speed_config
from dllm_bench.pipeline import quantize_model
from dllm_bench.recipes import load_recipe
from dllm_kernels import QuantSpec
from dllm_sampler import DiffusionLM, DreamGenerationConfig, LLaDAGenerationConfig, tiny_config
from dllm_weightquant import QuantLinear, replace_linear, rtn_quantize

HIDDEN, MLP = 64, 128


def _model(arch: str, dtype: torch.dtype = torch.float32, **overrides: object) -> DiffusionLM:
    keys = {"llada": ("d_model", "mlp_hidden_size"), "dream": ("hidden_size", "intermediate_size")}[arch]
    config = tiny_config(arch, **{keys[0]: HIDDEN, keys[1]: MLP}, **overrides)
    return DiffusionLM.from_config(config, seed=0, dtype=dtype)


def _block_linears(dlm: DiffusionLM) -> list[torch.nn.Linear]:
    return [dlm.model.get_submodule(n) for n in dlm.topology.linear_names()]


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


# ------------------------------------------------------------------------------------------------------
# weight memory
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llada", "dream"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_float_model_memory_is_its_parameter_bytes(arch: str, dtype: torch.dtype) -> None:
    dlm = _model(arch, dtype)
    memory = weight_memory(dlm)
    linears = _block_linears(dlm)
    assert memory.total_bytes == sum(_nbytes(p) for p in dlm.model.parameters())
    assert memory.n_weights == sum(m.in_features * m.out_features for m in linears)
    assert memory.linear_weight_bytes == sum(_nbytes(m.weight) for m in linears)
    assert memory.linear_bias_bytes == sum(_nbytes(m.bias) for m in linears if m.bias is not None)
    assert (memory.linear_bias_bytes > 0) == (arch == "dream")  # Qwen2's q/k/v biases
    assert memory.wrapper_bytes == 0
    assert memory.bits_per_weight == 8 * dtype.itemsize
    assert memory.float_dtype == dtype
    assert memory.float_total_bytes == memory.total_bytes and memory.ratio_to_float == 1.0
    assert memory.resident_bytes == memory.total_bytes


def test_tied_embedding_is_counted_once() -> None:
    tied = weight_memory(_model("dream", tie_word_embeddings=True))
    untied = weight_memory(_model("dream"))
    head = _model("dream").topology.head
    assert untied.other_bytes - tied.other_bytes == _nbytes(head.weight)
    assert tied.linear_bytes == untied.linear_bytes


def _expected_quant_bytes(linears: list[torch.nn.Linear], bits: int, group: int, symmetric: bool) -> int:
    """Packed int32 words per row, float32 scales and (asymmetric) int32 zero points, per group."""
    total = 0
    for m in linears:
        words = math.ceil(m.in_features * bits / 32)
        groups = m.in_features // group
        total += m.out_features * (4 * words + 4 * groups * (1 if symmetric else 2))
    return total


@pytest.mark.parametrize(
    ("bits", "group", "symmetric"), [(4, 32, True), (3, 64, False), (2, 32, False), (8, 64, True)]
)
def test_quant_linear_bytes_are_codes_scales_and_zero_points(bits: int, group: int, symmetric: bool) -> None:
    dlm = _model("dream")
    float_memory = weight_memory(dlm)
    spec = QuantSpec(bits, symmetric, "group", group_size=group)
    linears = _block_linears(dlm)
    for name, linear in zip(dlm.topology.linear_names(), linears, strict=True):
        replace_linear(
            dlm.model, name, QuantLinear.from_linear(linear, rtn_quantize(linear.weight, None, spec))
        )
    memory = weight_memory(dlm)
    assert memory.linear_weight_bytes == _expected_quant_bytes(linears, bits, group, symmetric)
    assert memory.linear_bias_bytes == float_memory.linear_bias_bytes  # the biases stay float
    assert memory.other_bytes == float_memory.other_bytes
    assert memory.n_weights == float_memory.n_weights
    assert memory.float_total_bytes == float_memory.total_bytes
    scale_bits = 32 * (1 if symmetric else 2) / group
    assert memory.bits_per_weight >= bits + scale_bits  # 3-bit rows may end in a partly used word
    assert memory.bits_per_weight < bits + scale_bits + 32 / HIDDEN


def test_rtn_w4_pipeline_copy_stores_four_and_a_half_bits() -> None:
    dlm = _model("llada")
    float_memory = weight_memory(dlm)
    result = quantize_model(dlm, load_recipe("rtn", scheme="W4A16g64"), progress=False)
    assert all(isinstance(m, QuantLinear) for m in _block_linears(result.dlm))
    memory = weight_memory(result.dlm)
    assert 4.0 < memory.bits_per_weight <= 5.0
    assert memory.bits_per_weight == pytest.approx(4.0 + 32 / 64)
    assert memory.total_bytes < float_memory.total_bytes
    assert memory.other_bytes == float_memory.other_bytes  # embedding, head and norms stay float
    assert memory.float_total_bytes == float_memory.total_bytes
    assert memory.ratio_to_float == pytest.approx(memory.total_bytes / float_memory.total_bytes)
    # the pipeline's fake-mode layers keep a dense weight beside the codes: resident, not stored
    assert memory.resident_bytes > memory.total_bytes


def _wrap(dlm: DiffusionLM, name: str, wrapper: type[torch.nn.Module], *args: object) -> None:
    """Put ``wrapper(<module at name>, *args)`` at ``name``."""
    parent, _, child = name.rpartition(".")
    setattr(dlm.model.get_submodule(parent), child, wrapper(dlm.model.get_submodule(name), *args))


def test_wrapper_tensors_are_counted_apart_and_shared_ones_once() -> None:
    dlm = _model("llada")
    before = weight_memory(dlm)
    block = dlm.topology.block(0)
    blocks = torch.linalg.qr(torch.randn(4, HIDDEN // 4, HIDDEN // 4, dtype=torch.float64)).Q
    rotation = BlockRotation([blocks])  # one rotation shared by q, k and v, as DuQuant does
    for role in ("q", "k", "v"):
        _wrap(dlm, block.names[role], OnlineRotation, rotation)
    _wrap(dlm, block.names["o"], ActQuantLinear, ActQuantConfig(bits=8))  # fake mode: no tensors of its own
    memory = weight_memory(dlm)
    assert memory.wrapper_bytes == _nbytes(blocks)
    assert memory.linear_weight_bytes == before.linear_weight_bytes
    assert memory.n_weights == before.n_weights
    assert memory.total_bytes == before.total_bytes + _nbytes(blocks)


# ------------------------------------------------------------------------------------------------------
# sampler speed
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_sampler_speed_runs_the_sampler_and_reports_consistent_numbers(
    arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dlm = _model(arch)
    calls: list[tuple[int, ...]] = []
    real = dlm.logits

    def counting(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        calls.append(tuple(input_ids.shape))
        return real(input_ids, attention_mask)

    monkeypatch.setattr(dlm, "logits", counting)
    speed = sampler_speed(dlm, batch_size=2, gen_length=4, steps=2, prompt_len=3, warmup=1, repeats=2)
    assert len(calls) == (1 + 2) * 2  # (warmup + repeats) calls x steps forwards
    assert set(calls) == {(2, 3 + 4)}
    assert speed.steps_per_token == 2 / 4
    assert 0 < speed.step_ms_min <= speed.step_ms <= speed.step_ms_max
    seconds = speed.step_ms * speed.steps / 1000
    assert speed.tokens_per_s == pytest.approx(2 * 4 / seconds)
    assert speed.peak_memory_bytes >= 0 and speed.peak_memory_source in PEAK_SOURCES
    assert (speed.device, speed.dtype, speed.sampler) == ("cpu", "float32", arch)
    assert speed.to_dict()["steps"] == 2


def test_speed_config_sets_length_and_steps() -> None:
    llada = speed_config("llada", 8, 3)
    assert isinstance(llada, LLaDAGenerationConfig)
    assert (llada.gen_length, llada.block_length, llada.steps, llada.temperature) == (8, 8, 3, 0.0)
    dream = speed_config("dream", 8, 3)
    assert isinstance(dream, DreamGenerationConfig) and (dream.max_new_tokens, dream.steps) == (8, 3)


def test_random_prompt_covers_the_vocabulary_without_the_mask() -> None:
    stub = SimpleNamespace(vocab_size=8, mask_token_id=5, device=torch.device("cpu"))
    ids = random_prompt(stub, 64, 32, seed=1)  # type: ignore[arg-type]
    assert ids.shape == (64, 32) and ids.dtype == torch.long
    assert set(ids.unique().tolist()) == {0, 1, 2, 3, 4, 6, 7}
    assert torch.equal(ids, random_prompt(stub, 64, 32, seed=1))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [{"batch_size": 0}, {"gen_length": 0}, {"steps": -1}, {"prompt_len": 0}, {"repeats": 0}, {"warmup": -1}],
)
def test_bad_sizes_are_refused(bad: dict[str, int]) -> None:
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        sampler_speed(_model("llada"), **bad)


@pytest.mark.gpu
def test_cuda_peak_memory_includes_the_weights() -> None:
    dlm = _model("llada").to("cuda")
    speed = sampler_speed(dlm, gen_length=4, steps=2, prompt_len=3, warmup=1, repeats=2)
    assert speed.peak_memory_source == "cuda_max_allocated"
    assert speed.peak_memory_bytes >= weight_memory(dlm).total_bytes
    assert speed.device.startswith("cuda")

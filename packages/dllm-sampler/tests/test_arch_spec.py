"""Per-architecture facts answered by `ArchSpec` and the config classes: each equals the value the code
hard-coded per architecture name before, and an unknown architecture is a clear ValueError."""

from __future__ import annotations

import pytest
import torch
from dllm_sampler import (
    DreamGenerationConfig,
    LLaDAGenerationConfig,
    generate_dream,
    generate_llada,
    tiny_config,
)
from dllm_sampler.config import DreamConfig, LLaDAConfig
from dllm_sampler.models import ARCH_SPECS, EvalDefaults, arch_spec
from dllm_sampler.tasks import answer_generation_config
from dllm_sampler.testing import CHAR_VOCAB, char_model_config


def test_arch_spec_looks_up_by_name_and_names_the_known_archs() -> None:
    assert list(ARCH_SPECS) == ["llada", "dream", "llada2"]
    for name, spec in ARCH_SPECS.items():
        assert arch_spec(name) is spec and spec.name == name
    assert [s.display_name for s in ARCH_SPECS.values()] == ["LLaDA", "Dream", "LLaDA2"]
    with pytest.raises(ValueError, match="unknown model arch 'gpt'; known archs: 'llada', 'dream', 'llada2'"):
        arch_spec("gpt")


def test_default_generation_is_the_arch_sampler_default() -> None:
    assert arch_spec("llada").default_generation() == LLaDAGenerationConfig()
    assert arch_spec("dream").default_generation() == DreamGenerationConfig()
    assert type(arch_spec("llada").default_generation()) is LLaDAGenerationConfig
    assert type(arch_spec("dream").default_generation()) is DreamGenerationConfig


def test_generation_configs_name_and_run_their_own_sampler(fake_model) -> None:
    assert (LLaDAGenerationConfig.SAMPLER_NAME, DreamGenerationConfig.SAMPLER_NAME) == ("llada", "dream")
    prompt = torch.tensor([[1, 2, 3]])
    llada = LLaDAGenerationConfig(steps=4, gen_length=8, block_length=4, temperature=1.0)
    dream = DreamGenerationConfig(max_new_tokens=6, steps=3, temperature=1.0)
    for config, sampler in ((llada, generate_llada), (dream, generate_dream)):
        got = config.sample(fake_model, prompt, generator=torch.Generator().manual_seed(0))
        want = sampler(fake_model, prompt, None, config, generator=torch.Generator().manual_seed(0))
        assert torch.equal(got, want)


def test_with_length_sets_tokens_and_steps_in_one_block() -> None:
    llada = LLaDAGenerationConfig(steps=8, gen_length=8, block_length=4, temperature=0.5).with_length(6, 3)
    assert llada == LLaDAGenerationConfig(steps=3, gen_length=6, block_length=6, temperature=0.5)
    dream = DreamGenerationConfig(top_p=0.9).with_length(6, 3)
    assert dream == DreamGenerationConfig(max_new_tokens=6, steps=3, top_p=0.9)
    assert (llada.gen_length, dream.gen_length) == (6, 6)


def test_answer_generation_config_is_the_default_with_one_step_per_token() -> None:
    one_block = LLaDAGenerationConfig(steps=5, gen_length=5, block_length=5)
    assert answer_generation_config("llada", 5) == one_block
    assert answer_generation_config("dream", 5) == DreamGenerationConfig(max_new_tokens=5, steps=5)
    with pytest.raises(ValueError, match="unknown model arch"):
        answer_generation_config("gpt")


def test_likelihood_estimator_is_the_papers() -> None:
    assert {name: spec.likelihood_estimator for name, spec in ARCH_SPECS.items()} == {
        "llada": "llada",
        "dream": "dream",
        "llada2": "llada",
    }


def test_tiny_config_is_the_two_block_test_shape() -> None:
    ids = {"mask_token_id": 47, "eos_token_id": 46, "pad_token_id": 45, "bos_token_id": 44}
    llada = LLaDAConfig(
        d_model=32, n_layers=2, n_heads=4, mlp_hidden_size=64, vocab_size=48, max_sequence_length=256, **ids
    )
    dream = DreamConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=48,
        max_position_embeddings=256,
        **ids,
    )
    assert tiny_config("llada") == LLaDAConfig.tiny() == llada
    assert tiny_config("dream") == DreamConfig.tiny() == dream
    small = tiny_config("llada", vocab_size=20, n_kv_heads=2)
    assert (small.mask_token_id, small.eos_token_id, small.pad_token_id, small.bos_token_id) == (
        19,
        18,
        17,
        16,
    )
    assert small.n_kv_heads == 2
    with pytest.raises(ValueError, match="unknown model arch 'gpt'"):
        tiny_config("gpt")


def test_char_model_config_sets_every_vocab_key() -> None:
    assert (LLaDAConfig.VOCAB_KEYS, DreamConfig.VOCAB_KEYS) == (
        ("vocab_size", "embedding_size"),
        ("vocab_size",),
    )
    llada, dream = char_model_config("llada"), char_model_config("dream")
    assert (llada.vocab_size, llada.embedding_size, dream.vocab_size) == (CHAR_VOCAB, CHAR_VOCAB, CHAR_VOCAB)
    assert "embedding_size" not in dream.extra
    for config in (llada, dream):
        assert (config.pad_token_id, config.bos_token_id, config.eos_token_id, config.mask_token_id) == (
            0,
            1,
            2,
            3,
        )


def test_config_classes_name_their_layer_key_and_published_checkpoint() -> None:
    assert (LLaDAConfig.LAYER_COUNT_KEY, DreamConfig.LAYER_COUNT_KEY) == ("n_layers", "num_hidden_layers")
    assert (LLaDAConfig.MAX_POSITIONS_KEY, DreamConfig.MAX_POSITIONS_KEY) == (
        "max_sequence_length",
        "max_position_embeddings",
    )
    for cls in (LLaDAConfig, DreamConfig):
        assert getattr(cls.tiny(), cls.LAYER_COUNT_KEY) == cls.tiny().dims().num_layers == 2
        assert getattr(cls.tiny(), cls.MAX_POSITIONS_KEY) == 256
    assert (LLaDAConfig.PUBLISHED_NAME, DreamConfig.PUBLISHED_NAME) == ("llada-8b", "dream-7b")
    assert LLaDAConfig.published() == LLaDAConfig(n_kv_heads=32, embedding_size=126464)
    assert DreamConfig.published() == DreamConfig()


def test_eval_defaults_are_the_harness_protocols() -> None:
    llada, dream = arch_spec("llada").eval_defaults, arch_spec("dream").eval_defaults
    assert llada == EvalDefaults(
        sampler=LLaDAGenerationConfig(steps=1024, gen_length=1024, block_length=1024),
        steps_follow_length=True,
        max_length=4096,
        add_bos=False,
        append_eos=False,
        cut_at_eos=False,
    )
    assert dream == EvalDefaults(
        sampler=DreamGenerationConfig(max_new_tokens=128, steps=512, top_p=0.95),
        steps_follow_length=False,
        max_length=2048,
        add_bos=True,
        append_eos=True,
        cut_at_eos=True,
    )
    assert (dream.sampler.alg, dream.sampler.alg_temp, dream.sampler.temperature) == ("entropy", 0.0, 0.0)


def test_greedy_configs_and_guidance() -> None:
    assert (LLaDAGenerationConfig.GUIDANCE, DreamGenerationConfig.GUIDANCE) == (True, False)
    llada = LLaDAGenerationConfig(steps=8, gen_length=8, block_length=4, temperature=0.5, remasking="random")
    assert llada.greedy(5) == LLaDAGenerationConfig(steps=5, gen_length=5, block_length=5)
    dream = DreamGenerationConfig(alg="origin", alg_temp=0.2, temperature=0.9, top_p=0.5, top_k=3, eps=0.01)
    assert dream.greedy(5) == DreamGenerationConfig(
        max_new_tokens=5, steps=5, alg="origin", top_p=0.5, top_k=3, eps=0.01
    )

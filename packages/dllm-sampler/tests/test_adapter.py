"""DiffusionLM adapter: Dream's logit shift, special ids from the config, tokenizer, device/dtype."""

from __future__ import annotations

import pytest
import torch
from dllm_sampler import DiffusionLM, DreamConfig, LLaDAConfig, MoETopology, Topology, tiny_config
from dllm_sampler.models import ARCH_SPECS, TopologyNames
from tokenizers import Tokenizer, models, pre_tokenizers


def make_tokenizer() -> Tokenizer:
    vocab = {w: i for i, w in enumerate(["<unk>", "hello", "world", "mask"])}
    vocab |= {f"<|s{i}|>": i for i in range(4, 48)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


IDS = torch.tensor([[3, 1, 47, 2, 47], [44, 47, 47, 5, 46]])


def test_dream_logits_are_shifted_by_one() -> None:
    dlm = DiffusionLM.from_config(tiny_config("dream"), seed=0)
    raw = dlm.model(IDS)
    out = dlm.logits(IDS)
    assert dlm.logit_shift == 1 and out.shape == raw.shape
    assert torch.equal(out[:, 1:], raw[:, :-1])
    assert torch.equal(out[:, 0], raw[:, 0])


def test_llada_logits_are_unshifted() -> None:
    dlm = DiffusionLM.from_config(tiny_config("llada"), seed=0)
    assert dlm.logit_shift == 0
    assert torch.equal(dlm.logits(IDS), dlm.model(IDS))


def test_attention_mask_is_passed_through() -> None:
    dlm = DiffusionLM.from_config(tiny_config("dream"), seed=0)
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    out = dlm.logits(IDS, mask)
    assert torch.allclose(out[0, 2:], dlm.logits(IDS[:1, 1:])[0, 1:], atol=1e-6)
    assert not torch.allclose(out[0], dlm.logits(IDS)[0], atol=1e-6)


def test_special_ids_and_sizes_come_from_config() -> None:
    dlm = DiffusionLM.from_config(tiny_config("llada", vocab_size=60), seed=0)
    assert (dlm.mask_token_id, dlm.eos_token_id, dlm.pad_token_id, dlm.bos_token_id) == (59, 58, 57, 56)
    assert dlm.vocab_size == 60 and dlm.arch == "llada"
    assert dlm.logits(IDS).shape == (2, 5, 60)
    real = DreamConfig()
    assert (real.mask_token_id, real.pad_token_id, real.eos_token_id) == (151666, 151643, 151643)
    assert LLaDAConfig().mask_token_id == 126336


def test_bos_falls_back_to_the_tokenizer() -> None:
    dlm = DiffusionLM.from_config(tiny_config("llada", bos_token_id=None), seed=0, tokenizer=make_tokenizer())
    assert dlm.bos_token_id is None
    dlm.tokenizer_files = {"special_tokens_map.json": {"bos_token": {"content": "<|s44|>", "lstrip": False}}}
    assert dlm.bos_token_id == 44


def test_encode_decode() -> None:
    dlm = DiffusionLM.from_config(tiny_config("dream"), seed=0, tokenizer=make_tokenizer())
    ids = dlm.encode("hello world")
    assert ids == [1, 2]
    assert dlm.decode(ids) == "hello world"
    assert dlm.decode(torch.tensor(ids)) == "hello world"
    with pytest.raises(ValueError, match="1-D"):
        dlm.decode(torch.tensor([ids]))


def test_from_config_seed_is_reproducible_and_local() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = DiffusionLM.from_config(tiny_config("llada"), seed=5)
    assert torch.equal(torch.rand(3), expected_next)  # the global RNG was not consumed
    b = DiffusionLM.from_config(tiny_config("llada"), seed=5)
    c = DiffusionLM.from_config(tiny_config("llada"), seed=6)
    assert torch.equal(a.logits(IDS), b.logits(IDS))
    assert not torch.equal(a.logits(IDS), c.logits(IDS))


def test_to_changes_dtype_and_reports_device() -> None:
    dlm = DiffusionLM.from_config(tiny_config("dream"), seed=0)
    assert dlm.to(torch.bfloat16) is dlm
    assert dlm.dtype == torch.bfloat16 and dlm.device == torch.device("cpu")
    assert dlm.logits(IDS).dtype == torch.float32


def test_bad_input_ids() -> None:
    dlm = DiffusionLM.from_config(tiny_config("llada"), seed=0)
    with pytest.raises(ValueError, match="integer tensor"):
        dlm.logits(IDS.float())
    with pytest.raises(ValueError, match=r"\[batch, length\]"):
        dlm.logits(IDS[0])
    with pytest.raises(ValueError, match="attention_mask shape"):
        dlm.logits(IDS, torch.ones(2, 4))
    with pytest.raises(TypeError, match="supported"):
        DiffusionLM(torch.nn.Linear(2, 2))


def test_arch_specs_are_the_only_source_of_arch_facts() -> None:
    for name, spec in ARCH_SPECS.items():
        dlm = DiffusionLM.from_config(tiny_config(name), seed=0)
        assert dlm.spec is spec and dlm.arch == name and isinstance(dlm.model, spec.model_cls)
        assert dlm.topology.spec is spec
        if isinstance(spec.names, TopologyNames):
            assert isinstance(dlm.topology, Topology)
        else:  # mixture of experts: its block map; the dense-block topology refuses the model
            assert isinstance(dlm.topology, MoETopology)
            with pytest.raises(NotImplementedError, match="MoETopologyNames"):
                Topology(dlm.model)

"""Float32 parity of dllmq's LLaDA2 with the reference modeling code, and of the block-diffusion sampler
with the reference ``generate()``.

``fixtures/llada2_parity.json`` holds what the reference ``modeling_llada2_moe.py`` (the Hugging Face
repository's modeling file of inclusionAI/LLaDA2.0-mini, as vendored by github ZHZisZZ/dllm and copied in
github yks23/Information-Gain-Sampler e03368da, ``dllm/dllm/pipelines/llada2/models/``) computed on the
seeded random tiny checkpoints of `dllm_sampler.testing.LLADA2_PARITY_CONFIGS` (seed 0: with and without a
shared expert; a dense first layer with 8 experts in 4 groups and biases): logits of full bidirectional
attention, of the block-causal mask (block 4), of the KV-cache path (two blocks cached, the third computed
against the cache), and the tokens of its ``generate()`` for three settings.

To regenerate it, run from the repository root (the reference files stay outside the repository)::

    S=/work/scratch-llada2; REF=$S/ref
    git clone --bare https://github.com/yks23/Information-Gain-Sampler $S/igs.git
    mkdir -p $REF/llada2_ref && touch $REF/llada2_ref/__init__.py
    for F in configuration_llada2_moe.py modeling_llada2_moe.py; do
        git --git-dir=$S/igs.git show e03368da:dllm/dllm/pipelines/llada2/models/$F > $REF/llada2_ref/$F; done
    python3.11 -m venv $S/venv && $S/venv/bin/pip install torch==2.13.0 && \\
        $S/venv/bin/pip install transformers==4.57.1 safetensors
    uv run python tools/record_llada2_parity.py export $S/ckpt
    $S/venv/bin/python tools/record_llada2_parity.py record --ref $REF --ckpt $S/ckpt \\
        --out packages/dllm-sampler/tests/fixtures/llada2_parity.json

(``tools/record_llada2_parity.py``'s docstring describes the cases.)
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from dllm_sampler import BlockDiffusionConfig, DiffusionLM, generate_block, load, save
from dllm_sampler.models import KVCache, block_causal_mask
from dllm_sampler.testing import LLADA2_PARITY_CONFIGS, random_llada2, weights_digest

FIXTURE = Path(__file__).parent / "fixtures" / "llada2_parity.json"
RTOL = 1e-5


@functools.cache
def _fixture() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@functools.cache
def _model(name: str) -> DiffusionLM:
    dlm = random_llada2(0, **LLADA2_PARITY_CONFIGS[name])
    assert weights_digest(dlm) == _fixture()["models"][name]["weights_digest"], (
        "the seeded tiny LLaDA2 changed; re-record the fixture (see the module docstring)"
    )
    return dlm


def _close(actual: torch.Tensor, expected: list[Any]) -> None:
    want = torch.tensor(expected, dtype=torch.float32)
    scale = want.abs().max()
    err = (actual.float() - want).abs().max()
    assert err <= RTOL * scale, f"max abs error {err:.3g} exceeds {RTOL} x max |logit| {scale:.3g}"


NAMES = sorted(LLADA2_PARITY_CONFIGS)


@pytest.mark.parametrize("name", NAMES)
def test_full_attention_logits_match_reference(name: str) -> None:
    ids = torch.tensor([_fixture()["ids"]])
    with torch.no_grad():
        _close(_model(name).model(ids)[0], _fixture()["models"][name]["full"])


@pytest.mark.parametrize("name", NAMES)
def test_block_causal_logits_match_reference(name: str) -> None:
    fx = _fixture()
    ids = torch.tensor([fx["ids"]])
    allowed = block_causal_mask(ids.shape[1], fx["block"])
    with torch.no_grad():
        _close(_model(name).model(ids, allowed=allowed)[0], fx["models"][name]["block_causal"])


@pytest.mark.parametrize("name", NAMES)
def test_kv_cache_logits_match_reference(name: str) -> None:
    fx = _fixture()
    ids, prefix = torch.tensor([fx["ids"]]), fx["prefix"]
    net, cache = _model(name).model, KVCache()
    with torch.no_grad():
        net(ids[:, :prefix], allowed=block_causal_mask(prefix, fx["block"]), cache=cache, store=True)
        assert cache.length == prefix
        _close(net(ids[:, prefix:], cache=cache)[0], fx["models"][name]["kv_cache"])


def test_block_causal_logits_differ_from_full() -> None:
    """The fixture can tell the masks apart (else the block-causal test could pass on full attention)."""
    fx = _fixture()["models"]["shared"]
    assert (torch.tensor(fx["full"]) - torch.tensor(fx["block_causal"])).abs().max() > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_sharded_checkpoint_loads_to_the_same_logits(name: str, tmp_path: Path) -> None:
    fx = _fixture()
    folder = save(_model(name), tmp_path / name, max_shard_bytes=100_000)
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    loaded = load(folder)
    assert loaded.arch == "llada2"
    with torch.no_grad():
        _close(loaded.model(torch.tensor([fx["ids"]]))[0], fx["models"][name]["full"])


def _answer(tokens: torch.Tensor, prompt_length: int, eos: int) -> list[int]:
    """The reference generate()'s return value: the answer up to and including the first EOS."""
    answer = tokens[0, prompt_length:].tolist()
    return answer[: answer.index(eos) + 1] if eos in answer else answer


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_generate_matches_reference(name: str, use_cache: bool) -> None:
    fx = _fixture()
    base = fx["generate_base"]
    prompt = torch.tensor([fx["prompt"]])
    dlm = _model(name)
    assert (dlm.eos_token_id, dlm.mask_token_id) == (base["eos_id"], base["mask_id"])
    for case in fx["models"][name]["generate"].values():
        config = BlockDiffusionConfig(
            gen_length=base["gen_length"],
            block_length=base["block_length"],
            steps=base["steps"],
            use_cache=use_cache,
            reference_exact=True,
            **case["kwargs"],
        )
        torch.manual_seed(case["seed"])
        with torch.no_grad():
            out = generate_block(dlm, prompt, config=config)
        assert _answer(out, prompt.shape[1], dlm.eos_token_id) == case["tokens"], case

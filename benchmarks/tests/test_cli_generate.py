"""``dllmq generate`` end to end on a saved random model: folder defaults, flag overrides, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dllm_bench.cli import main
from dllm_sampler import DiffusionLM, StepState, save, tiny_config
from tokenizers import Tokenizer, models, pre_tokenizers

WORDS = ["<pad>", "<bos>", "<eos>", "<mask>", "<unk>", "two", "plus", "three", "is", "five", "A:"]


def _tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tiny_config(
        "llada",
        vocab_size=len(WORDS),
        embedding_size=len(WORDS),
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        mask_token_id=3,
    )
    dlm = DiffusionLM.from_config(config, seed=0, tokenizer=_tokenizer())
    dlm.tokenizer_files["generation_config.json"] = {
        "steps": 4,
        "gen_length": 4,
        "block_length": 4,
        "dllmq_prompt_template": "{prompt} A:",
        "dllmq_add_bos": True,
    }
    path = tmp_path_factory.mktemp("cli") / "model"
    save(dlm, path)
    return path


def _steps_seen(monkeypatch: pytest.MonkeyPatch) -> list[StepState]:
    import dllm_sampler

    seen: list[StepState] = []
    real = dllm_sampler.generate

    def spy(*args, on_step=None, **kwargs):
        def hook(state: StepState) -> None:
            seen.append(state)
            on_step(state)

        return real(*args, on_step=hook, **kwargs)

    monkeypatch.setattr(dllm_sampler, "generate", spy)
    return seen


def test_generate_uses_folder_defaults_and_template(model_dir, monkeypatch, capsys) -> None:
    seen = _steps_seen(monkeypatch)
    assert (
        main(["generate", "--model", str(model_dir), "--prompt", "two plus three is", "--no-progress"]) == 0
    )
    assert len(seen) == 4  # steps from generation_config.json, not the LLaDA default of 128
    prompt = seen[0].model_input[0, : seen[0].prompt_length].tolist()
    assert prompt == [1, 5, 6, 7, 8, 10]  # <bos> + template applied
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "<mask>" not in out[0]


def test_flags_override_folder_defaults(model_dir, monkeypatch, capsys) -> None:
    seen = _steps_seen(monkeypatch)
    argv = ["generate", "--model", str(model_dir), "--prompt", "two", "--raw", "--no-progress"]
    assert main([*argv, "--steps", "2", "--gen-length", "6", "--block-length", "3"]) == 0
    assert len(seen) == 2
    assert seen[-1].tokens.shape[1] == seen[-1].prompt_length + 6
    assert seen[0].model_input[0, : seen[0].prompt_length].tolist() == [1, 5]  # --raw: no template


def test_bad_sampler_flags_and_missing_model_give_clear_errors(model_dir, tmp_path, capsys) -> None:
    argv = ["generate", "--model", str(model_dir), "--prompt", "two", "--no-progress"]
    assert main([*argv, "--gen-length", "4", "--block-length", "3"]) == 2
    assert "block_length" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path / "absent"), "--prompt", "x"]) == 2
    assert "absent" in capsys.readouterr().err


def test_generation_config_round_trips_through_save(model_dir) -> None:
    saved = json.loads((model_dir / "generation_config.json").read_text())
    assert saved["dllmq_prompt_template"] == "{prompt} A:"
    assert saved["dllmq_add_bos"] is True


def test_a_prompt_longer_than_the_model_fails_before_any_denoising_step(
    model_dir, monkeypatch, capsys
) -> None:
    seen = _steps_seen(monkeypatch)
    argv = ["generate", "--model", str(model_dir), "--raw", "--no-progress", "--gen-length", "4"]
    assert main([*argv, "--prompt", " ".join(["two"] * 253)]) == 2  # 1 BOS + 253 + 4 > 256 positions
    err = capsys.readouterr().err
    assert "the prompt (254 tokens) plus the tokens to generate (4) make 258 positions" in err
    assert "maximum of 256 (max_sequence_length in its config)" in err
    assert seen == []

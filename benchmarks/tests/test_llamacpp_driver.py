"""The llama.cpp benchmark's pieces that run without llama.cpp: output parsing, the command line, the staged
tokenizer config and chat template, prompt token counts, and scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dllm_bench.llamacpp.command import SAMPLERS, diffusion_command
from dllm_bench.llamacpp.output import parse_diffusion_output
from dllm_bench.llamacpp.run import prompt_token_count
from dllm_bench.llamacpp.stage import chat_template, stage_for_converter, tokenizer_config
from dllm_sampler.registry import resolve
from dllm_sampler.tasks.arithmetic import format_answer, format_prompt, heldout_problems, parse_answer
from tokenizers import Tokenizer

LOG = (
    "llama_model_loader: - kv   0: general.architecture str = llada\n"
    "diffusion step: 35/35 [==================================================] 100%\n"
    "total time: 1320.51ms, time per step: 37.73ms, sampling time per step: 0.61ms\n"
    "\n"
    "8190+8040:1010=6231-3550:0110=3770\n"
)


def test_parse_output_reads_text_and_timing() -> None:
    out = parse_diffusion_output(LOG)
    assert out.text == "8190+8040:1010=6231-3550:0110=3770"
    assert out.ms_per_step == pytest.approx(37.73)
    assert out.sampling_ms_per_step == pytest.approx(0.61)
    assert parse_answer(out.text) == 773


def test_parse_output_without_timing_names_the_last_line() -> None:
    with pytest.raises(ValueError, match="failed to load model"):
        parse_diffusion_output("llama_model_load: error\nerror: failed to load model 'x.gguf'\n")


def test_parse_output_empty_generation() -> None:
    log = "total time: 10.00ms, time per step: 1.00ms, sampling time per step: 0.10ms\n\n\n"
    assert parse_diffusion_output(log).text == ""


def test_llada_command_is_one_block_over_prompt_and_answer() -> None:
    argv = diffusion_command(
        Path("cli"), Path("m.gguf"), "Ann has 3 pens.", 20, 35, "llada", SAMPLERS["confidence"]
    )
    assert argv[argv.index("-ub") + 1] == "55" and argv[argv.index("-b") + 1] == "55"
    assert argv[argv.index("--diffusion-block-length") + 1] == "55"
    assert argv[argv.index("--diffusion-steps") + 1] == "35"
    assert "--diffusion-eps" not in argv
    assert argv[argv.index("-t") + 1] == "1"


def test_dream_command_uses_the_timestep_schedule() -> None:
    argv = diffusion_command(Path("cli"), Path("m.gguf"), "p", 20, 35, "dream", SAMPLERS["entropy"])
    assert argv[argv.index("--diffusion-eps") + 1] == "0.001"
    assert "--diffusion-block-length" not in argv
    assert argv[argv.index("--diffusion-algorithm") + 1] == "1"


def test_command_rejects_unknown_arch() -> None:
    with pytest.raises(ValueError, match="arch"):
        diffusion_command(Path("cli"), Path("m.gguf"), "p", 20, 35, "gpt2", SAMPLERS["confidence"])


def _render(template: str, content: str) -> str:
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # as chat templates are rendered
    return env.from_string(template).render(messages=[{"role": "user", "content": content}])


def test_chat_template_renders_the_dllmq_prompt() -> None:
    problem = heldout_problems(1)[0]
    assert _render(chat_template("{prompt}\nA:"), problem.text) == format_prompt(problem)


def test_chat_template_keeps_literal_text_exactly() -> None:
    template = "Q:\n\t'{{x}}' \\ {prompt}\nA: "
    assert _render(chat_template(template), "Hi {% 1 %}") == template.format(prompt="Hi {% 1 %}")


def test_chat_template_needs_one_prompt_field() -> None:
    with pytest.raises(ValueError, match="exactly once"):
        chat_template("no field")


@pytest.mark.parametrize("model", ["tiny-llada", "tiny-dream"])
def test_staged_folder_states_bos_and_template(model: str, tmp_path: Path) -> None:
    staged = stage_for_converter(resolve(model), tmp_path / model)
    config = json.loads((staged / "tokenizer_config.json").read_text())
    assert config == tokenizer_config(resolve(model))
    assert config["add_bos_token"] is True
    assert config["bos_token"] == "<|bos|>" and config["mask_token"] == "<|mdm_mask|>"
    assert (staged / "model.safetensors").is_file() and (staged / "config.json").is_file()


def test_prompt_token_count_counts_bos() -> None:
    tokenizer = Tokenizer.from_file(str(resolve("tiny-llada") / "tokenizer.json"))
    problem = heldout_problems(1)[0]
    ids = tokenizer.encode(format_prompt(problem), add_special_tokens=False).ids
    assert prompt_token_count(tokenizer, problem) == len(ids) + 1
    assert len(tokenizer.encode(format_answer(problem), add_special_tokens=False).ids) == 34

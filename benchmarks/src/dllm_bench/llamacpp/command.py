"""The ``llama-diffusion-cli`` command line that reproduces dllmq's arithmetic decoding of one problem.

dllmq decodes ``ANSWER_TOKENS + 1`` tokens in as many steps (one token per step), in one block (LLaDA) or on
Dream's timestep schedule with ``eps = 1e-3``. The CLI generates ``n_ubatch - n_prompt`` tokens, so the
command sets ``-ub`` (and ``-b``) to the prompt's token count plus the answer length; LLaDA's single block is
``--diffusion-block-length`` equal to that whole length (the CLI's blocks start after the prompt).

Token choice: the CLI's sampler chain always ends in a random draw (``dist``), and ``--temp 0`` only removes
the temperature stage, so no setting reproduces "argmax token, confidence = its softmax probability". The
closest are in `SAMPLERS` (see docs/llamacpp.md for what each does and measures).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["SAMPLERS", "SamplerSettings", "diffusion_command"]


@dataclass(frozen=True)
class SamplerSettings:
    """The CLI's sampling flags.

    Attributes:
        algorithm: ``--diffusion-algorithm`` (0 origin, 1 entropy, 2 margin, 3 random, 4 confidence).
        temp: ``--temp`` (0: no temperature stage; the draw is then from the softmax at temperature 1).
        top_k: ``--top-k`` (0: off; 1: the argmax only, so every confidence is 1).
        top_p: ``--top-p`` (1: off).
        seed: ``--seed`` of the draws.
    """

    algorithm: int = 4
    temp: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def flags(self) -> list[str]:
        """The flags, in CLI syntax."""
        return [
            "--diffusion-algorithm", str(self.algorithm),
            "--temp", str(self.temp),
            "--top-k", str(self.top_k),
            "--top-p", str(self.top_p),
            "--seed", str(self.seed),
        ]  # fmt: skip


SAMPLERS: dict[str, SamplerSettings] = {
    "confidence": SamplerSettings(algorithm=4),
    "greedy-ltr": SamplerSettings(algorithm=4, top_k=1),
    "entropy": SamplerSettings(algorithm=1),
    "margin": SamplerSettings(algorithm=2),
}
"""Named settings: ``confidence`` (a draw at temperature 1, committed by its probability: LLaDA's
low-confidence remasking / Dream's ``maskgit_plus`` up to the draw), ``greedy-ltr`` (argmax tokens; with one
candidate every confidence is 1 and ties commit left to right), ``entropy`` and ``margin`` (the CLI's
versions of Dream's ``entropy`` and ``topk_margin``)."""

DREAM_EPS = 1e-3
"""Dream's final time of the schedule ``linspace(1, eps, steps + 1)`` (`DreamGenerationConfig.eps`)."""


def diffusion_command(
    binary: Path,
    gguf: Path,
    prompt: str,
    prompt_tokens: int,
    gen_length: int,
    arch: str,
    sampler: SamplerSettings,
    threads: int = 1,
) -> list[str]:
    """argv of one ``llama-diffusion-cli`` run that decodes ``gen_length`` tokens in ``gen_length`` steps.

    Args:
        binary: the ``llama-diffusion-cli`` executable.
        gguf: the model file.
        prompt: the user text (the GGUF's chat template turns it into the model's prompt).
        prompt_tokens: tokens of the formatted prompt, BOS included, as llama.cpp tokenizes it.
        gen_length: answer tokens to generate (one per step).
        arch: ``"llada"`` (one block over the answer) or ``"dream"`` (timestep schedule, ``DREAM_EPS``).
        sampler: the sampling flags.
        threads: CPU threads for the forward passes and the batch.

    Raises:
        ValueError: unknown ``arch`` or a non-positive length.
    """
    if prompt_tokens < 1 or gen_length < 1:
        raise ValueError(f"prompt_tokens and gen_length must be positive, got {prompt_tokens}, {gen_length}")
    total = prompt_tokens + gen_length
    if arch == "llada":
        schedule = ["--diffusion-block-length", str(total)]
    elif arch == "dream":
        schedule = ["--diffusion-eps", str(DREAM_EPS)]
    else:
        raise ValueError(f"arch must be 'llada' or 'dream', got {arch!r}")
    return [
        str(binary), "-m", str(gguf), "-p", prompt,
        "-t", str(threads), "-tb", str(threads),
        "-c", str(total), "-b", str(total), "-ub", str(total),
        "--diffusion-steps", str(gen_length), *schedule, *sampler.flags(),
        "--no-log-prefix", "--log-colors", "off",
    ]  # fmt: skip

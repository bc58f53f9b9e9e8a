"""Per-step error on random tiny LLaDA and Dream models: a model against itself is exact on every step, a
perturbed copy matches a direct computation at the first and last step, and batching does not change the
averages."""

from __future__ import annotations

import itertools

import pytest
import torch
from dllm_bench.evaluation import compare_logits, step_error, step_error_on_prompts
from dllm_bench.evaluation.steps import fixed_schedule
from dllm_sampler import DiffusionLM, generate, load, tiny_config
from dllm_sampler.tasks import answer_generation_config, heldout_problems
from dllm_sampler.testing import CHAR_VOCAB, random_char_model

GEN = 6  # generated tokens (and steps) of the short runs


class NeverMaskLM(DiffusionLM):
    """A DiffusionLM that never proposes the mask token (a trained model does not; a random one might,
    and a committed mask token would stay masked)."""

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = super().logits(input_ids, attention_mask)
        out[..., self.mask_token_id] = -1e4
        return out


def random_model(arch: str, noise: float = 0.0) -> DiffusionLM:
    """A random tiny model (seed 0) with a character tokenizer (mask id 3); with ``noise`` > 0, Gaussian
    noise of ``noise`` x the weight's RMS is added to block 0's up projection."""
    dlm = random_char_model(arch, model_class=NeverMaskLM)
    if noise:
        weight = dlm.topology.block(0).up_proj.weight
        with torch.no_grad():
            g = torch.Generator().manual_seed(1)
            weight.add_(noise * weight.pow(2).mean().sqrt() * torch.randn(weight.shape, generator=g))
    return dlm


def prompts(rows: int = 2, length: int = 5) -> torch.Tensor:
    return torch.randint(4, CHAR_VOCAB, (rows, length), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_a_model_against_itself_is_exact_on_every_sampler_step(arch: str) -> None:
    dlm = random_model(arch)
    rows = step_error(dlm, dlm, 1)
    assert [r.step for r in rows] == list(range(answer_generation_config(arch).steps))
    assert all(r.kl == 0.0 and r.disagreement == 0.0 and r.divergence == 0.0 for r in rows)
    ratios = [r.mask_ratio for r in rows]
    assert ratios[0] == 1.0 and 0.0 < ratios[-1] < 0.1
    assert all(a >= b for a, b in itertools.pairwise(ratios))
    assert ratios[len(ratios) // 2] < 0.9  # it falls, not just stays
    assert rows[0].positions == len(rows)  # one problem, one step per answer token
    assert all(r.positions > 0 for r in rows)


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_first_and_last_step_match_a_direct_computation(arch: str) -> None:
    reference, model = random_model(arch), random_model(arch, noise=1.0)
    prompt, config = prompts(), answer_generation_config(arch, GEN)
    rows = step_error_on_prompts(model, reference, prompt, None, config)
    assert len(rows) == GEN and all(r.kl > 0 for r in rows)

    with torch.no_grad():
        x = torch.cat([prompt, torch.full((2, GEN), reference.mask_token_id)], dim=1)
        flat = [m.logits(x)[:, -GEN:].reshape(-1, CHAR_VOCAB) for m in (model, reference)]
        kl, agree = compare_logits(*flat)
        ours, theirs = (generate(m, prompt, None, config)[:, -GEN:] for m in (model, reference))
    assert rows[0].positions == 2 * GEN and rows[0].mask_ratio == 1.0
    assert rows[0].kl == pytest.approx(float(kl.mean()), rel=1e-5)
    assert rows[0].disagreement == pytest.approx(float((~agree).float().mean()))
    assert rows[-1].divergence == pytest.approx(float((ours != theirs).float().mean()))


def test_more_noise_gives_more_teacher_forced_kl() -> None:
    reference = random_model("dream")
    prompt, config = prompts(), answer_generation_config("dream", GEN)
    small = step_error_on_prompts(random_model("dream", noise=0.05), reference, prompt, None, config)
    large = step_error_on_prompts(random_model("dream", noise=2.0), reference, prompt, None, config)
    assert 0.0 < sum(r.kl for r in small) < sum(r.kl for r in large)
    assert [r.mask_ratio for r in small] == [r.mask_ratio for r in large]  # the reference's trajectory


def test_batching_does_not_change_the_averages() -> None:
    reference, model = random_model("llada"), random_model("llada", noise=1.0)
    problems, config = heldout_problems(3), answer_generation_config("llada", GEN)
    one = step_error(model, reference, problems, config=config, batch_size=3)
    split = step_error(model, reference, problems, config=config, batch_size=2)
    assert [(r.step, r.positions, r.mask_ratio) for r in one] == [
        (r.step, r.positions, r.mask_ratio) for r in split
    ]
    assert [r.kl for r in split] == pytest.approx([r.kl for r in one], rel=1e-3)


def test_bad_inputs_name_the_problem() -> None:
    dlm = random_model("llada")
    other = DiffusionLM.from_config(tiny_config("llada", embedding_size=48), seed=0)
    with pytest.raises(ValueError, match="different vocabularies"):
        step_error(other, dlm, 1)
    with pytest.raises(ValueError, match="at least one problem"):
        step_error(dlm, dlm, [])


def test_llada2_block_diffusion_runs_one_token_per_step() -> None:
    """LLaDA2's threshold decoding takes a model-dependent number of steps; the analysis runs it at threshold
    1.0, so a model and a perturbed copy line up step by step, and the free-running comparison only reads
    the answer positions the blocks have reached."""
    dlm = load("tiny-llada2")
    noisy = load("tiny-llada2")
    with torch.no_grad():
        weight = noisy.topology.block(1).module("qkv").weight
        weight.add_(
            0.3 * weight.std() * torch.randn(weight.shape, generator=torch.Generator().manual_seed(1))
        )
    config = answer_generation_config("llada2")
    assert fixed_schedule(config).threshold == 1.0 and fixed_schedule(
        fixed_schedule(config)
    ) == fixed_schedule(config)
    same = step_error(dlm, dlm, 1)
    assert all(r.kl == 0.0 and r.divergence == 0.0 for r in same)
    rows = step_error(noisy, dlm, 1)
    assert len(rows) == len(same) and sum(r.kl for r in rows) > 0.0

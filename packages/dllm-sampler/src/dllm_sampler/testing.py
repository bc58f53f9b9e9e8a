"""Helpers for tests of code built on dllm_sampler: random tiny models with a character tokenizer, and
`WriteFaults`, which makes one write of a checkpoint export fail; `sharp_char_model` and `decision_margin`
for token-parity fixtures that must not hinge on rounding.

The tokenizer maps every printable ASCII character and the newline to one token, after the special
tokens of the shipped tiny models (pad 0, bos 1, eos 2, ``<|mdm_mask|>`` 3, ``<unk>`` 4), so any text
(arithmetic prompts, code) encodes without training a tokenizer, and decoding gives the text back.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from torch import nn

from dllm_sampler.adapter import DiffusionLM
from dllm_sampler.config import DreamConfig, LLaDAConfig
from dllm_sampler.config_llada2 import LLaDA2MoeConfig
from dllm_sampler.generate import generate
from dllm_sampler.generate_dream import DreamGenerationConfig, dream_transfer_count
from dllm_sampler.generate_llada import LLaDAGenerationConfig, linear_transfer_schedule
from dllm_sampler.models.llada2_moe import LLaDA2Router
from dllm_sampler.models.spec import arch_spec, tiny_config
from dllm_sampler.step import StepState

__all__ = [
    "CHAR_VOCAB",
    "DECISIVE_MARGIN",
    "LLADA2_PARITY_CONFIGS",
    "WriteFaults",
    "char_model_config",
    "char_tokenizer",
    "decision_margin",
    "random_char_model",
    "random_llada2",
    "sharp_char_model",
    "weights_digest",
]

_SPECIALS = ("<|pad|>", "<|bos|>", "<|eos|>", "<|mdm_mask|>", "<unk>")
_CHARS = (*(chr(c) for c in range(32, 127)), "\n")
CHAR_VOCAB = len(_SPECIALS) + len(_CHARS)
"""Vocabulary size of `char_tokenizer` (5 specials + 96 characters)."""


def char_tokenizer() -> Tokenizer:
    """One token per character; special ids pad 0, bos 1, eos 2, mask 3, unk 4."""
    tokenizer = Tokenizer(
        models.WordLevel({t: i for i, t in enumerate(_SPECIALS + _CHARS)}, unk_token="<unk>")
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


def char_model_config(arch: str, **overrides: Any) -> LLaDAConfig | DreamConfig:
    """`tiny_config` of ``arch`` with `char_tokenizer`'s vocabulary (every ``VOCAB_KEYS`` key of the config
    class is `CHAR_VOCAB`) and special ids; ``overrides`` use the architecture's own config keys."""
    ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "mask_token_id": 3}
    vocab = dict.fromkeys(arch_spec(arch).config_cls.VOCAB_KEYS, CHAR_VOCAB)
    return tiny_config(arch, **{**vocab, **ids, **overrides})


def random_char_model(
    arch: str, seed: int = 0, model_class: type[DiffusionLM] = DiffusionLM, **overrides: Any
) -> DiffusionLM:
    """A seeded random `char_model_config` model (float32, CPU) with `char_tokenizer` attached."""
    return model_class.from_config(
        char_model_config(arch, **overrides), seed=seed, tokenizer=char_tokenizer()
    )


DECISIVE_MARGIN = 1e-4
"""The smallest relative `decision_margin` that token-parity fixtures accept: about 1000 float32 ulps, far
above the float32 error of the tiny models' logits and scores (a few ulps), so no CPU, BLAS build or thread
count can flip a decision."""


def sharp_char_model(arch: str, seed: int = 0, scale: float = 10.0) -> DiffusionLM:
    """`random_char_model` with every linear and embedding weight multiplied by ``scale`` (N(0, (0.02 *
    scale)^2) instead of N(0, 0.02^2); norm gains stay 1), float32, CPU.

    At the default init the attention is nearly uniform and the logits nearly flat, so the masked
    positions' confidences (e.g. Dream's entropies, all close to -log V) differ by float32 rounding noise;
    a sharper model can decide by margins well above that noise (`decision_margin`).
    """
    dlm = random_char_model(arch, seed=seed)
    with torch.no_grad():
        for module in dlm.model.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                module.weight.mul_(scale)
    return dlm


def _relative_gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a - b| / max(|a|, |b|)`` elementwise (0 where both are 0)."""
    scale = torch.maximum(a.abs(), b.abs())
    return torch.where(scale > 0, (a - b).abs() / scale.clamp_min(torch.finfo(scale.dtype).tiny), 0.0)


class _DecisionMargins:
    """An ``on_step`` hook that collects the relative margins of a run's deterministic decisions."""

    def __init__(self, config: DreamGenerationConfig | LLaDAGenerationConfig) -> None:
        self.config = config
        self.margins: list[float] = [math.inf]
        self._schedule = torch.zeros(0)

    def _selection_counts(self, state: StepState) -> torch.Tensor | None:
        """``[B]`` how many positions the step selects by confidence rank, or None where no rank decides
        (Dream's ``origin`` and ``alg_temp`` draws, LLaDA's random remasking)."""
        cfg = self.config
        if isinstance(cfg, DreamGenerationConfig):
            if cfg.alg == "origin" or cfg.alg_temp > 0:
                return None
            times = torch.linspace(1, cfg.eps, cfg.steps + 1)
            mean_masked = state.input_mask.sum() / state.input_mask.shape[0]
            last = state.step == cfg.steps - 1
            count = dream_transfer_count(mean_masked, times[state.step], times[state.step + 1], last)
            return count.expand(state.input_mask.shape[0])
        if cfg.remasking != "low_confidence":
            return None
        if state.step % cfg.steps_per_block == 0:
            start = state.prompt_length + state.block * cfg.block_length
            in_block = state.input_mask[:, start : start + cfg.block_length].sum(dim=1)
            self._schedule = linear_transfer_schedule(in_block, cfg.steps_per_block)
        return self._schedule[:, state.step % cfg.steps_per_block]

    def __call__(self, state: StepState) -> None:
        assert state.logits is not None, "decision margins need the step's logits (with_logits=True)"
        if self.config.temperature == 0 and bool(state.committed.any()):
            top2 = state.logits[state.committed].double().topk(2, dim=-1).values
            gap = (top2[:, 0] - top2[:, 1]) / torch.maximum(top2.abs().amax(dim=-1), torch.ones(()))
            self.margins.append(gap.min().item())
        counts = self._selection_counts(state)
        if counts is None:
            return
        for row, k in zip(state.confidence.double(), counts.tolist(), strict=True):
            ranked = row[torch.isfinite(row)].sort(descending=True).values
            if 0 < k < len(ranked):
                self.margins.append(_relative_gap(ranked[k - 1], ranked[k]).item())


def decision_margin(
    model: DiffusionLM,
    prompt: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: DreamGenerationConfig | LLaDAGenerationConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """Run `generate` and measure how far its deterministic decisions were from ties.

    Two kinds of decision are measured at every step: the argmax token of each committed position (when
    ``temperature == 0``), as ``(top1 - top2) / max(|top1|, |top2|, 1)`` of its logits; and the rank
    selection of the positions to commit (Dream ``maskgit_plus``/``topk_margin``/``entropy`` with
    ``alg_temp == 0``, LLaDA ``low_confidence``), as the relative gap between the last selected and the
    first unselected confidence of each row, ``|c_k - c_(k+1)| / max(|c_k|, |c_(k+1)|)`` (the sampler's
    ``k``). Random draws are not decisions here. Run it on a float64 model to see margins free of float32
    rounding: a margin well above the float32 error of the logits and scores means every float32 run on any
    CPU makes the same decisions.

    Returns:
        ``(tokens [B, Lp + gen_length], smallest margin)``; the margin is ``inf`` when nothing was decided.
    """
    hook = _DecisionMargins(config)
    tokens = generate(
        model, prompt, attention_mask, config, on_step=hook, generator=generator, with_logits=True
    )
    return tokens, min(hook.margins)


LLADA2_PARITY_CONFIGS: dict[str, dict[str, Any]] = {
    "shared": {"hidden_size": 64, "head_dim": 16, "num_experts": 4, "num_shared_experts": 1},
    "no_shared": {"hidden_size": 64, "head_dim": 16, "num_experts": 4, "num_shared_experts": None},
    "dense_first": {
        "hidden_size": 64,
        "head_dim": 16,
        "num_experts": 8,
        "n_group": 4,
        "topk_group": 2,
        "num_shared_experts": 1,
        "first_k_dense_replace": 1,
        "use_qkv_bias": True,
        "use_bias": True,
    },
}
"""`tiny_config("llada2")` overrides of the reference-parity checkpoints (2 layers, 4 heads / 2 kv heads,
top-2 routing, RoPE on half of each head): with and without a shared expert, and one with a dense first layer,
8 experts in 4 groups (2 kept) and q/k/v and output biases."""


def random_llada2(seed: int = 0, **overrides: Any) -> DiffusionLM:
    """A seeded random tiny LLaDA2 (float32, CPU; `tiny_config` with ``overrides``) whose every tensor is
    informative: norm gains 1 + N(0, 0.1^2), biases N(0, 0.02^2), router weights N(0, 1/D) (so routing is
    decisive, not a near-tie) and expert biases N(0, 0.1^2). Same seed, same weights."""
    config = tiny_config("llada2", **overrides)
    assert isinstance(config, LLaDA2MoeConfig)
    dlm = DiffusionLM.from_config(config, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in sorted(dlm.model.state_dict(keep_vars=True).items()):
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                tensor.copy_(1 + 0.1 * torch.randn(tensor.shape, generator=gen))
            elif name.endswith(".bias"):
                tensor.copy_(0.02 * torch.randn(tensor.shape, generator=gen))
            elif name.endswith("expert_bias"):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))
        for module in dlm.model.modules():
            if isinstance(module, LLaDA2Router):
                std = config.hidden_size**-0.5
                module.weight.copy_(std * torch.randn(module.weight.shape, generator=gen))
    return dlm


def weights_digest(dlm: DiffusionLM) -> str:
    """SHA-256 (hex) of ``dlm``'s state dict: names, shapes, dtypes and float32 values, in name order.

    Fixtures recorded from a seeded random model store it, so a change to the model's initialisation is
    reported as such instead of as a token mismatch.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(dlm.model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class Patcher(Protocol):
    """What `WriteFaults` needs to patch (and later restore) attributes: pytest's ``MonkeyPatch``."""

    def setattr(self, target: object, name: str, value: object) -> None: ...


class _CountedTokenizer:
    """A tokenizer whose ``save`` is a counted write of `WriteFaults`; everything else is the inner one's."""

    def __init__(self, inner: Tokenizer, faults: WriteFaults) -> None:
        self._inner = inner
        self._faults = faults

    def save(self, path: str, pretty: bool = True) -> None:
        self._inner.save(path, pretty)
        self._faults.after_write(Path(path), "tokenizer.save")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class WriteFaults:
    """Fails one chosen write of an action with ``OSError(ENOSPC)``, to test that a failure at any write of
    a checkpoint export leaves the previous checkpoint as it was (`run_each`).

    Counted writes, while an action of `run_each` runs: ``Path.write_text`` (writes half the text, then
    fails), ``Path.open`` for writing outside ``write_text`` (fails before opening), ``json.dumps``,
    ``os.replace`` and ``os.chmod`` (fail before acting), ``save_file`` as bound in each module of
    ``save_file_modules`` and the ``save`` of a tokenizer given to `wrap_tokenizer` (write the file, cut it
    to half its size, then fail), and `tick` (for callbacks such as an export's ``extra`` hook).
    """

    def __init__(self, patcher: Patcher, save_file_modules: Iterable[ModuleType] = ()) -> None:
        self.fail_at = 0
        """The 1-based index of the counted write that fails in the current run (0: none)."""
        self.count = 0
        """Counted writes so far in the current run."""
        self.failed = ""
        """What the injected failure hit, "" when none was injected."""
        self._armed = False
        self._in_write_text = False
        self._patch_builtins(patcher)
        for module in save_file_modules:
            patcher.setattr(module, "save_file", self._counted_save_file(module.save_file, module.__name__))

    def _hit(self, what: str) -> bool:
        """Count one write; True when it is the one to fail (``failed`` is then set)."""
        if not self._armed:
            return False
        self.count += 1
        if self.count != self.fail_at:
            return False
        self.failed = what
        return True

    def _error(self) -> OSError:
        where = f"injected at write {self.count}: {self.failed}"
        return OSError(errno.ENOSPC, f"No space left on device ({where})")

    def tick(self, what: str) -> None:
        """A counted write that writes nothing: raises the injected error when it is the one to fail."""
        if self._hit(what):
            raise self._error()

    def after_write(self, file: Path, what: str) -> None:
        """A counted write of ``file``, which was just written: when it is the one to fail, cut the file to
        half its size (a write the disk filled up during) and raise."""
        if self._hit(f"{what} {file.name}"):
            os.truncate(file, file.stat().st_size // 2)
            raise self._error()

    def wrap_tokenizer(self, dlm: Any) -> None:
        """Make ``dlm.tokenizer.save`` a counted write (the tokenizers library's class cannot be patched)."""
        dlm.tokenizer = _CountedTokenizer(dlm.tokenizer, self)

    def _counted_save_file(self, real: Callable[..., None], owner: str) -> Callable[..., None]:
        def save_file(tensors: dict[str, Any], filename: str, metadata: dict[str, str] | None = None) -> None:
            real(tensors, filename, metadata)
            self.after_write(Path(filename), f"{owner}.save_file")

        return save_file

    def _patch_builtins(self, patcher: Patcher) -> None:
        real_write_text, real_open = Path.write_text, Path.open
        real_dumps, real_replace, real_chmod = json.dumps, os.replace, os.chmod

        def write_text(path: Path, data: str, *args: Any, **kwargs: Any) -> int:
            failing = self._hit(f"write_text {path.name}")
            self._in_write_text = True
            try:
                written = real_write_text(path, data[: len(data) // 2] if failing else data, *args, **kwargs)
            finally:
                self._in_write_text = False
            if failing:
                raise self._error()
            return written

        def open_(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if not self._in_write_text and any(c in mode for c in "wax+"):
                self.tick(f"open {path.name}")
            return real_open(path, mode, *args, **kwargs)

        def dumps(obj: Any, *args: Any, **kwargs: Any) -> str:
            self.tick("json.dumps")
            return real_dumps(obj, *args, **kwargs)

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            self.tick(f"os.replace {os.path.basename(src)} -> {os.path.basename(dst)}")
            real_replace(src, dst, *args, **kwargs)

        def chmod(path: Any, mode: int, *args: Any, **kwargs: Any) -> None:
            self.tick(f"os.chmod {os.path.basename(path)}")
            real_chmod(path, mode, *args, **kwargs)

        patcher.setattr(Path, "write_text", write_text)
        patcher.setattr(Path, "open", open_)
        patcher.setattr(json, "dumps", dumps)
        patcher.setattr(os, "replace", replace)
        patcher.setattr(os, "chmod", chmod)

    def run_each(self, action: Callable[[], object], check: Callable[[str], None]) -> int:
        """Run ``action`` once per counted write with that write failing, calling ``check(what_failed)``
        after each failure, until a run completes without reaching the write to fail.

        Returns the number of counted writes of that last, successful run.

        Raises:
            AssertionError: a run succeeded although its injected failure was raised (swallowed).
        """
        fail_at = 1
        while True:
            self.fail_at, self.count, self.failed = fail_at, 0, ""
            self._armed = True
            try:
                action()
            except OSError as err:
                self._armed = False
                if err.errno != errno.ENOSPC or not self.failed:
                    raise
                check(self.failed)
            else:
                if self.failed:
                    raise AssertionError(
                        f"the failure injected at write {fail_at} ({self.failed}) was swallowed: the action "
                        "succeeded anyway"
                    )
                return self.count
            finally:
                self._armed = False
            fail_at += 1

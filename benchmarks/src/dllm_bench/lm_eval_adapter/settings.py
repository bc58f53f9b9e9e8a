"""The adapter's settings: the QDLM / LLaDA / Dream harness protocol as defaults, resolved per architecture.

Defaults (docs/references.md#evaluation-protocol; LLaDA's ``eval_llada.py``); the per-architecture ones
(sampler, ``max_length``, BOS, EOS) are ``dllm_sampler``'s ``ArchSpec.eval_defaults``:

- likelihood: ``mc_num=128``, Monte-Carlo batch 32, ``cfg=0``, greedy check off (none of the papers'
  metrics needs it), seed 1234 (LLaDA's harness seeds with 1234);
- LLaDA sampler: ``temperature=0``, ``remasking="low_confidence"``, ``cfg=0``,
  ``steps = gen_length = block_length = 1024`` (``steps`` and ``block_length`` default to ``gen_length``,
  so ``gen_length=256`` alone gives the one-block 256/256/256 setting); ``max_length=4096``;
- Dream sampler (``dream_base``): ``gen_length`` (``max_new_tokens``) 128, ``steps`` (``diffusion_steps``)
  512, ``alg="entropy"``, ``alg_temp=0``, ``temperature=0``, ``top_p=0.95``; ``max_length=2048``; BOS added.

``max_length`` is also capped at the model's own position limit (512 for the shipped tiny models).
``escape_until`` is False for both, so the tasks' stop strings are honoured (the default of Dream's harness
class); references.md lists True for QDLM's ``dream_base`` and Dream's scripts pass it for HumanEval, so pass
``escape_until=true`` to reproduce those runs.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
from dllm_sampler import DiffusionLM, GenerationConfig
from dllm_sampler.models import ARCH_SPECS, ArchSpec, arch_spec

from dllm_bench.devices import DTYPES, default_dtype

__all__ = [
    "DEFAULT_SEED",
    "AdapterSettings",
    "build_settings",
    "default_max_length",
    "merge_model_args",
    "parse_dtype",
    "resolve_device",
    "sampler_config",
]

log = logging.getLogger(__name__)

DEFAULT_SEED = 1234
"""LLaDA's harness calls ``set_seed(1234)`` before evaluating."""

_HARNESS_KEYS = ("batch_size", "device")
_IGNORED_HARNESS_KEYS = ("max_batch_size", "trust_remote_code")


@dataclass(frozen=True)
class AdapterSettings:
    """Everything the adapter needs besides the model, validated.

    Attributes:
        mc_num: noisy copies per ``loglikelihood`` request.
        batch_size: rows per model call of the Monte-Carlo estimate (``min(batch_size, mc_num)`` is used;
            ``mc_num`` must be a multiple of it).
        is_check_greedy: compute the ``is_greedy`` flag (one extra generation per request); False reports
            False, as LLaDA's harness does.
        cfg: unsupervised classifier-free guidance scale for the likelihood (both architectures) and the
            LLaDA sampler; 0 disables it.
        max_length: longest ``prefix + target`` (likelihood) or ``prompt + gen_length`` (generation) in
            tokens; prefixes and prompts are cut from the left to fit.
        add_bos_token: prepend BOS to every context unless the tokenizer already put it first.
        escape_until: ignore the requests' ``until`` stop strings (Dream's harness option).
        append_eos: append EOS to likelihood targets (Dream's harness does; its estimator never masks the
            last position, so the EOS makes every continuation token count).
        seed: each request uses a fresh ``torch.Generator`` seeded with it, so results do not depend on
            request order or batching.
        sampler: the `LLaDAGenerationConfig` or `DreamGenerationConfig` of ``generate_until``.
    """

    sampler: GenerationConfig
    mc_num: int = 128
    batch_size: int = 32
    is_check_greedy: bool = False
    cfg: float = 0.0
    max_length: int = 4096
    add_bos_token: bool = False
    escape_until: bool = False
    append_eos: bool = False
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        for name in ("mc_num", "batch_size", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        rows = min(self.batch_size, self.mc_num)
        if self.mc_num % rows:
            raise ValueError(
                f"mc_num ({self.mc_num}) must be a multiple of batch_size ({self.batch_size}); "
                f"e.g. batch_size={self.mc_num}"
            )
        if self.cfg < 0:
            raise ValueError(f"cfg must be >= 0, got {self.cfg}")

    @property
    def gen_length(self) -> int:
        """Tokens ``generate_until`` produces per request."""
        return self.sampler.gen_length

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (for lm-eval's results ``config``)."""
        out = dataclasses.asdict(self)
        out["sampler"] = {"type": type(self.sampler).__name__, **dataclasses.asdict(self.sampler)}
        return out


def sampler_config(
    arch: str,
    *,
    steps: int | None = None,
    gen_length: int | None = None,
    block_length: int | None = None,
    remasking: str | None = None,
    temperature: float = 0.0,
    cfg: float = 0.0,
    alg: str | None = None,
    alg_temp: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
) -> GenerationConfig:
    """The protocol's sampler config of ``arch`` (``ArchSpec.eval_defaults.sampler``) with the given
    overrides (None = protocol default).

    ``gen_length`` is the answer length (Dream's ``max_new_tokens``); where the protocol's steps follow the
    length (LLaDA) it also sets ``steps`` unless those are given, and LLaDA's ``block_length`` defaults to
    it (one block). Arguments the arch's sampler does not have (LLaDA's ``block_length``, ``remasking``
    for Dream; Dream's ``alg``, ``alg_temp``, ``top_p``, ``top_k`` for LLaDA) raise ValueError. ``cfg`` is
    the guidance scale of a sampler with guidance (LLaDA's); Dream's sampler has none, so it is not used
    there.
    """
    spec = arch_spec(arch)
    given = {
        "block_length": block_length,
        "remasking": remasking,
        "alg": alg,
        "alg_temp": alg_temp,
        "top_p": top_p,
        "top_k": top_k,
    }
    _reject_foreign(spec, [name for name, value in given.items() if value is not None])
    protocol = spec.eval_defaults.sampler
    length = protocol.gen_length if gen_length is None else gen_length
    if steps is None:
        steps = length if spec.eval_defaults.steps_follow_length else protocol.steps
    overrides: dict[str, Any] = {"temperature": float(temperature)}
    if protocol.GUIDANCE:
        overrides["cfg_scale"] = float(cfg)
    # an empty remasking / alg and a zero alg_temp keep the protocol's value, as None does
    options = {
        "block_length": block_length,
        "remasking": remasking or None,
        "alg": alg or None,
        "alg_temp": float(alg_temp) if alg_temp else None,
        "top_p": None if top_p is None else float(top_p),
        "top_k": top_k,
    }
    overrides |= {name: value for name, value in options.items() if value is not None}
    return dataclasses.replace(protocol.with_length(length, steps), **overrides)


def _sampler_fields(spec: ArchSpec) -> set[str]:
    """The settings of ``spec``'s sampler config."""
    return {f.name for f in dataclasses.fields(spec.generation_config_cls)}


def _reject_foreign(spec: ArchSpec, given: list[str]) -> None:
    """Raise if any of the ``given`` sampler arguments is not a setting of ``spec``'s sampler, naming the
    architecture whose sampler has it."""
    foreign = sorted(set(given) - _sampler_fields(spec))
    if foreign:
        owners = [s.display_name for s in ARCH_SPECS.values() if foreign[0] in _sampler_fields(s)]
        raise ValueError(
            f"{', '.join(foreign)} only apply to {' / '.join(owners)}'s sampler, but the model is "
            f"{spec.name!r}; remove them from model_args"
        )


def default_max_length(dlm: DiffusionLM) -> int:
    """The protocol's context limit of ``dlm.arch``, capped at the model's own position limit (the config's
    ``MAX_POSITIONS_KEY``: LLaDA ``max_sequence_length``, Dream ``max_position_embeddings``)."""
    positions = getattr(dlm.config, dlm.config.MAX_POSITIONS_KEY)
    return min(arch_spec(dlm.arch).eval_defaults.max_length, positions)


def build_settings(
    dlm: DiffusionLM,
    *,
    mc_num: int = 128,
    batch_size: int | str | None = None,
    is_check_greedy: bool = False,
    cfg: float = 0.0,
    max_length: int | None = None,
    add_bos_token: bool | None = None,
    escape_until: bool = False,
    seed: int = DEFAULT_SEED,
    **sampler_args: Any,
) -> AdapterSettings:
    """Resolve the model arguments against the protocol defaults of ``dlm.arch``.

    Args:
        dlm: the loaded model (its arch, ``generation_defaults`` and position limit are read).
        batch_size: the Monte-Carlo batch; None or "auto" gives 32; int-like strings are accepted.
        max_length: None = `default_max_length`; at most the model's position limit (else ``ValueError``).
        add_bos_token: None = the folder's ``dllmq_add_bos`` if set, else the protocol's
            (``eval_defaults.add_bos``): True for Dream (its harness adds BOS) and False for LLaDA (its
            tokenizer decides, as in LLaDA's harness).
        **sampler_args: `sampler_config` keywords (``steps``, ``gen_length``, ``temperature`` ...).
    """
    spec = arch_spec(dlm.arch)
    sampler = sampler_config(dlm.arch, cfg=cfg, **sampler_args)
    if cfg > 0 and not sampler.GUIDANCE:
        log.warning(
            "cfg=%s applies to the likelihood only: %s's sampler has no guidance", cfg, spec.display_name
        )
    if add_bos_token is None:
        add_bos_token = bool(dlm.generation_defaults.get("dllmq_add_bos", spec.eval_defaults.add_bos))
    positions = getattr(dlm.config, dlm.config.MAX_POSITIONS_KEY)
    if max_length is not None and max_length > positions:
        raise ValueError(
            f"max_length={max_length} is more than the model's maximum of {positions} positions "
            f"({dlm.config.MAX_POSITIONS_KEY} in its config); pass max_length <= {positions} in model_args "
            "or leave it out"
        )
    return AdapterSettings(
        sampler=sampler,
        mc_num=mc_num,
        batch_size=_parse_batch_size(batch_size),
        is_check_greedy=bool(is_check_greedy),
        cfg=float(cfg),
        max_length=default_max_length(dlm) if max_length is None else max_length,
        add_bos_token=bool(add_bos_token),
        escape_until=bool(escape_until),
        append_eos=spec.eval_defaults.append_eos,
        seed=seed,
    )


def _parse_batch_size(value: int | str | None) -> int:
    """The Monte-Carlo batch from a model argument or lm-eval's ``--batch_size`` (int, "8", "auto")."""
    if value is None or (isinstance(value, str) and value.startswith("auto")):
        return AdapterSettings.__dataclass_fields__["batch_size"].default
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"batch_size must be a positive int (the Monte-Carlo batch), got {value!r}")


def merge_model_args(model_args: dict[str, Any], harness_args: dict[str, Any] | None) -> dict[str, Any]:
    """Constructor keywords from ``--model_args`` and the harness's own ``batch_size`` / ``device``.

    Values given in ``model_args`` win; the harness's None values are dropped, as are its
    ``max_batch_size`` (no auto batch search here) and ``trust_remote_code`` (this loader runs no remote
    code), which it adds on its own. Other harness keys raise ValueError.
    """
    merged: dict[str, Any] = {}
    for key, value in (harness_args or {}).items():
        if value is None or key in _IGNORED_HARNESS_KEYS:
            continue
        if key not in _HARNESS_KEYS:
            raise ValueError(f"unexpected harness argument {key}={value!r} for the dllmq model")
        merged[key] = value
    model_args = {k: v for k, v in model_args.items() if k not in _IGNORED_HARNESS_KEYS}
    return merged | model_args


def parse_dtype(value: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype | None:
    """A compute dtype from a model argument: ``float32``, ``float16``, ``bfloat16``, a torch.dtype,
    "auto" (None: keep the checkpoint's stored dtype), or None for the device's default (float32 on CPU,
    bfloat16 on CUDA; `dllm_bench.devices.default_dtype`)."""
    if value is None:
        return default_dtype(device)
    if isinstance(value, torch.dtype):
        return value
    if value == "auto":
        return None
    if value not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} or 'auto', got {value!r}")
    return DTYPES[value]


def resolve_device(value: str | None) -> str:
    """The given device, or ``cuda`` when available and ``cpu`` otherwise.

    A CUDA device on a machine without one falls back to ``cpu`` with a warning: lm-eval's command line
    passes ``device=cuda:0`` unless ``--device`` is given, which would otherwise fail with "Found no NVIDIA
    driver" on every CPU-only machine.
    """
    if not value:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(value).startswith("cuda") and not torch.cuda.is_available():
        log.warning("device=%s asks for CUDA, but no CUDA device is available; running on cpu", value)
        return "cpu"
    return str(value)

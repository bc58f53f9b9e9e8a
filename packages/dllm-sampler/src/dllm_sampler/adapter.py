"""``DiffusionLM``: one interface over a LLaDA or Dream model, its config and tokenizer.

Samplers, calibration and quantizers talk to this adapter: ``logits`` applies the architecture's
conventions (Dream's one-position shift), the special token ids come from the config, and ``topology``
exposes the module map. Architecture differences come from the model's ``ArchSpec``.
"""

from __future__ import annotations

from typing import Any, Self

import torch
from tokenizers import Tokenizer
from torch import Tensor, nn

from dllm_sampler.config import DreamConfig, LLaDAConfig
from dllm_sampler.models.spec import ArchSpec, MoETopologyNames, spec_for_config, spec_for_model
from dllm_sampler.moe_topology import MoETopology
from dllm_sampler.topology import Topology

__all__ = ["DiffusionLM"]


def _token_content(entry: Any) -> str | None:
    """A special token as written in tokenizer_config.json / special_tokens_map.json (str or dict)."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return entry["content"]
    return None


class DiffusionLM:
    """A masked-diffusion LM: ``model`` (LLaDAModelLM or DreamModel), its ``config`` and ``tokenizer``.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` or None; ``tokenizer_files`` holds the parsed
    tokenizer_config.json / special_tokens_map.json / generation_config.json (file name -> dict), kept so
    ``save`` can write them back.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer | None = None,
        tokenizer_files: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.spec: ArchSpec = spec_for_model(model)
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer_files: dict[str, dict[str, Any]] = dict(tokenizer_files or {})

    @classmethod
    def from_config(
        cls,
        config: LLaDAConfig | DreamConfig,
        *,
        seed: int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        tokenizer: Tokenizer | None = None,
    ) -> Self:
        """A freshly initialised model (N(0, 0.02) weights; ``seed`` makes it reproducible without
        touching the global RNG)."""
        spec = spec_for_config(config)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            model = spec.model_cls(config)
        return cls(model.to(device=device, dtype=dtype), tokenizer)

    # ----- identity and special tokens -------------------------------------------------------------

    @property
    def config(self) -> LLaDAConfig | DreamConfig:
        return self.model.config  # type: ignore[return-value]

    @property
    def arch(self) -> str:
        """ "llada" or "dream"."""
        return self.spec.name

    @property
    def logit_shift(self) -> int:
        """1 if the raw logit at i predicts token i + 1 (Dream), else 0; ``logits`` undoes it."""
        return self.spec.logit_shift

    @property
    def mask_token_id(self) -> int:
        return self.config.mask_token_id

    @property
    def eos_token_id(self) -> int:
        return self.config.eos_token_id

    @property
    def pad_token_id(self) -> int:
        return self.config.pad_token_id

    @property
    def bos_token_id(self) -> int | None:
        """From the config, else the tokenizer's bos token (LLaDA's config has none), else None."""
        if self.config.bos_token_id is not None:
            return self.config.bos_token_id
        if self.tokenizer is None:
            return None
        for fname in ("special_tokens_map.json", "tokenizer_config.json"):
            token = _token_content(self.tokenizer_files.get(fname, {}).get("bos_token"))
            if token is not None:
                return self.tokenizer.token_to_id(token)
        return None

    @property
    def vocab_size(self) -> int:
        """Number of logits per position (rows of the embedding)."""
        return self.config.dims().vocab_size

    @property
    def max_positions(self) -> int:
        """The longest sequence (prompt plus generated tokens) the model is made for: the config's
        ``MAX_POSITIONS_KEY`` (LLaDA ``max_sequence_length``, Dream ``max_position_embeddings``)."""
        return int(getattr(self.config, self.config.MAX_POSITIONS_KEY))

    @property
    def max_positions_key(self) -> str:
        """The config.json key `max_positions` comes from, for error messages."""
        return self.config.MAX_POSITIONS_KEY

    @property
    def topology(self) -> Topology | MoETopology:
        """The module map (built fresh, so it follows the model): the dense `Topology` with its
        invariance-preserving edits, or the block map of a mixture-of-experts model (`MoETopology`)."""
        if isinstance(self.spec.names, MoETopologyNames):
            return MoETopology(self.model)
        return Topology(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, *args: Any, **kwargs: Any) -> Self:
        """Move/cast the model in place (same arguments as ``nn.Module.to``); returns self."""
        self.model.to(*args, **kwargs)
        return self

    # ----- forward ---------------------------------------------------------------------------------

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Logits [B, L, V] (>= float32) where position i scores the token at position i.

        input_ids [B, L] integer; attention_mask [B, L] (1 real, 0 pad) or None. For Dream the raw logits
        are shifted right by one: out = cat([raw[:, :1], raw[:, :-1]]), so out[:, 0] is a dummy copy.
        """
        if input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ValueError(
                f"input_ids must be an integer tensor [batch, length], got {input_ids.dtype} "
                f"{tuple(input_ids.shape)}"
            )
        raw = self.model(input_ids, attention_mask)
        if self.logit_shift:
            return torch.cat([raw[:, :1], raw[:, :-1]], dim=1)
        return raw

    # ----- text --------------------------------------------------------------------------------------

    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise RuntimeError(
                "this model has no tokenizer (no tokenizer.json was found when loading); pass token ids, "
                "or attach one with dlm.tokenizer = tokenizers.Tokenizer.from_file(...)"
            )
        return self.tokenizer

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_special_tokens`` runs the tokenizer's post-processor (e.g. BOS)."""
        return self._require_tokenizer().encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int] | Tensor, skip_special_tokens: bool = False) -> str:
        """Text of a 1-D id sequence (list or tensor)."""
        if isinstance(ids, Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode takes one sequence (1-D), got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        return self._require_tokenizer().decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ----- prompting conventions (generation_config.json) ----------------------------------------------

    @property
    def generation_defaults(self) -> dict[str, Any]:
        """The folder's ``generation_config.json`` (sampler defaults such as ``steps`` or ``gen_length``,
        plus dllmq's ``dllmq_prompt_template`` / ``dllmq_task`` keys), or ``{}``."""
        return dict(self.tokenizer_files.get("generation_config.json", {}))

    def prompt_ids(self, text: str, template: bool = True) -> list[int]:
        """Token ids of a prompt as the model was trained to see it.

        With ``template`` the folder's ``dllmq_prompt_template`` (a ``str.format`` pattern with a
        ``{prompt}`` field, default ``"{prompt}"``) is applied. The tokenizer's post-processor runs, and
        with the folder's ``dllmq_add_bos`` set the BOS token is prepended unless already first.
        """
        defaults = self.generation_defaults
        if template:
            text = defaults.get("dllmq_prompt_template", "{prompt}").format(prompt=text)
        ids = self.encode(text)
        bos = self.bos_token_id
        if defaults.get("dllmq_add_bos", False) and bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids

    def answer_text(self, ids: list[int] | Tensor) -> str:
        """Text of generated ids up to the first EOS (or pad), special tokens removed."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        stops = {self.eos_token_id, self.pad_token_id}
        end = next((i for i, t in enumerate(ids) if t in stops), len(ids))
        return self.decode(ids[:end], skip_special_tokens=True)

    def __repr__(self) -> str:
        d = self.config.dims()
        return (
            f"DiffusionLM(arch={self.arch!r}, layers={d.num_layers}, hidden={d.hidden_size}, "
            f"vocab={d.vocab_size}, dtype={self.dtype}, device={self.device}, "
            f"tokenizer={'yes' if self.tokenizer is not None else 'no'})"
        )

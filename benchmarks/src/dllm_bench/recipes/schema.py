"""`Recipe`: what to calibrate on, which steps to run in which order, at which bit setting, what to skip.

A recipe is plain data (YAML or Python), validated on construction with errors that name the field and
the fix::

    name: gptq
    calibration: {builder: random, params: {num_samples: 128, seq_len: 256}}
    scheme: {weights: {bits: 4, group_size: 128}, activations: 16}
    steps:
      - {method: gptq, damp_percent: 0.01}
    ignore: [head, embedding]
    seed: 0

Calibration comes from a ``dllm_calib`` builder (``builder`` + ``params``) reading ``source`` (the tiny
models' shipped text, or a local corpus: ``corpus: wikitext2`` names how to read it), a saved
``CalibrationSet`` folder, or a ``.json`` / ``.jsonl`` list of ``{"input_ids", "attention_mask"}``
records made for other PTQ tools (``path``). ``paper_corpus`` records the corpus and window shape the
method's paper calibrates on; ``dllmq quantize --calib wikitext2=PATH`` switches to it.

Steps are ``{"method": name, **config fields}``: ``name`` is any method of
``dllm_calib``'s registry (``dllmq methods`` lists them) and the fields are its config's, so a recipe never
invents its own knobs. Steps run in the order of their stages (``dllm_calib.Stage``: global transforms,
block transforms, activation calibration, the one weight quantizer, activation quantization); what each
method needs, changes and can represent is read from its registry record.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import yaml
from dllm_calib import (
    BUILDERS,
    CORPORA,
    BindContext,
    ExpertPolicy,
    Method,
    Stage,
    builder_config,
    get_method,
    registered_methods,
)
from dllm_sampler import LINEAR_ROLES
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dllm_bench.recipes.errors import validation_message
from dllm_bench.recipes.scheme import Scheme, SchemeLabel

__all__ = ["IGNORE_ALIASES", "SHIPPED_SOURCES", "CalibrationSpec", "MoESpec", "PaperCorpus", "Recipe", "Step"]

IGNORE_ALIASES = ("head", "embedding")
"""Symbolic ignore entries: the LM head and the token embedding (never block linears, never quantized)."""


SHIPPED_SOURCES = ("arithmetic", "code")
"""The text sources shipped with dllmq (the tiny models' training splits), always available offline."""


def _check_corpus_name(name: str | None, where: str) -> None:
    if name is not None and name not in CORPORA:
        raise ValueError(f"{where} {name!r} is not a known corpus; known: {sorted(CORPORA)}")


class PaperCorpus(BaseModel):
    """The corpus and window shape a method's paper calibrates on (e.g. WikiText-2, 128 x 2048).

    Attributes:
        name: a ``dllm_calib.CORPORA`` name (wikitext2, pile, c4).
        num_samples: windows.
        seq_len: tokens per window.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    num_samples: int = Field(ge=1)
    seq_len: int = Field(ge=2)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        _check_corpus_name(name, "calibration.paper_corpus.name")
        return name


class CalibrationSpec(BaseModel):
    """Where the calibration states come from.

    Attributes:
        builder: a ``dllm_calib.BUILDERS`` name (plain, random, mcs, tmas); default "plain" unless
            ``path`` is given.
        params: the builder's config fields (e.g. ``num_samples``, ``seq_len``, ``gamma``).
        source: text for window builders and prompts for TMAS: "arithmetic", "code" (`SHIPPED_SOURCES`) or a
            local corpus: a .txt / .jsonl[.gz|.zst] / .parquet file, a saved ``datasets`` folder or a folder
            of shards (``dllm_calib.corpora``).
        corpus: how to read a corpus ``source``: a ``dllm_calib.CORPORA`` name (wikitext2, pile, c4), or None
            for documents separated by the model's EOS.
        field: the text key of .jsonl / parquet / dataset records.
        split: the split of a saved ``DatasetDict`` or a shard folder (default: the corpus's, else train).
        max_read_tokens: most tokens read from a corpus (default 16 x the windows' tokens; a larger corpus
            is read as a seeded sample, ``dllm_calib.stream``).
        paper_corpus: the corpus and shape the method's paper calibrates on, applied by `with_corpus`.
        sampler: TMAS only: overrides of the model's default generation config (e.g. ``steps``).
        path: a saved ``CalibrationSet`` folder or a .json/.jsonl list of ``{"input_ids",
            "attention_mask"}`` records (mask tokens mark masked positions).
        limit: use only the first ``limit`` states of a ``path`` set.
        batch_size: states per forward pass while collecting statistics.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    builder: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    source: str = "arithmetic"
    corpus: str | None = None
    field: str = "text"
    split: str | None = None
    max_read_tokens: int | None = Field(default=None, ge=1)
    paper_corpus: PaperCorpus | None = None
    sampler: dict[str, Any] | None = None
    path: str | None = None
    limit: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=8, ge=1)

    @model_validator(mode="after")
    def _one_origin(self) -> CalibrationSpec:
        if self.path is not None:
            if self.builder is not None or self.params or self.sampler is not None:
                raise ValueError(
                    "calibration: give either path (a saved or exported set) or builder/params/sampler, not "
                    "both"
                )
            return self
        if self.limit is not None:
            raise ValueError("calibration.limit applies to a path; for a builder set params.num_samples")
        builder = self.builder or "plain"
        object.__setattr__(self, "builder", builder)
        if builder not in BUILDERS:
            raise ValueError(f"calibration.builder {builder!r} is unknown; available: {sorted(BUILDERS)}")
        if "sampler" in self.params:
            raise ValueError("calibration: put TMAS sampler settings under calibration.sampler, not params")
        if self.sampler is not None and builder != "tmas":
            raise ValueError(f"calibration.sampler only applies to the tmas builder, not {builder!r}")
        try:
            builder_config(builder, **self.params)
        except (TypeError, ValueError) as err:
            raise ValueError(f"calibration.params for builder {builder!r}: {err}") from err
        _check_corpus_name(self.corpus, "calibration.corpus")
        if self.source in SHIPPED_SOURCES and (self.corpus or self.split or self.max_read_tokens):
            raise ValueError(
                f"calibration.corpus, split and max_read_tokens describe a corpus file, but source is the "
                f"shipped {self.source!r}; set source to the corpus path or drop them"
            )
        fields = {f.name for f in dataclasses.fields(BUILDERS[builder])}  # type: ignore[arg-type]
        if self.paper_corpus is not None and "seq_len" not in fields:
            raise ValueError(
                f"calibration.paper_corpus sets windows, but the {builder!r} builder does not cut windows; "
                "use a window builder (plain, random, mcs) or drop it"
            )
        return self

    @property
    def uses_corpus(self) -> bool:
        """Whether a builder reads a local corpus (not the shipped text, not a saved set)."""
        return self.path is None and self.source not in SHIPPED_SOURCES

    def with_corpus(
        self, name: str | None, path: str, field: str | None = None, split: str | None = None
    ) -> CalibrationSpec:
        """This spec reading the local corpus at ``path`` (``name``: a ``CORPORA`` name or None) in the
        window shape of ``paper_corpus`` when the spec has one; ``path`` may also be a shipped source name.

        Raises:
            ValueError: the spec calibrates on a saved set (``path``), or ``name`` is unknown.
        """
        if self.path is not None:
            raise ValueError(
                "the recipe calibrates on a saved set (calibration.path); a corpus applies to builders only"
            )
        data = self.model_dump(
            exclude={"corpus", "split", "max_read_tokens"} if path in SHIPPED_SOURCES else set()
        )
        data.update(source=path, field=field or self.field)
        if path not in SHIPPED_SOURCES:
            data.update(corpus=name, split=split)
            if self.paper_corpus is not None:
                shape = {"num_samples": self.paper_corpus.num_samples, "seq_len": self.paper_corpus.seq_len}
                data["params"] = {**self.params, **shape}
        elif name is not None:
            raise ValueError(
                f"{name}={path}: {path!r} is a shipped source; give the local path of the {name} corpus"
            )
        return CalibrationSpec.model_validate(data)

    def summary(self) -> str:
        """One line saying what the states are made from (printed by ``dllmq quantize``)."""
        if self.path is not None:
            limit = "" if self.limit is None else f", its first {self.limit} states"
            return f"calibration: the saved set {self.path}{limit}"
        assert self.builder is not None
        config = builder_config(self.builder, **self.params).to_dict()
        if "seq_len" in config:
            how = f"{self.builder} builder, {config['num_samples']} windows x {config['seq_len']} tokens"
        else:
            how = f"{self.builder} builder, {config['num_samples']} states"
        if self.uses_corpus:
            what = f"{self.corpus} ({CORPORA[self.corpus].title})" if self.corpus else "the corpus"
            return f"calibration: {what} at {self.source} ({how})"
        line = f"calibration: the shipped {self.source!r} text of the tiny models ({how})"
        paper = self.paper_corpus
        if paper is not None:
            line += (
                f"; the paper calibrates on {paper.name} {paper.num_samples} x {paper.seq_len}: pass "
                f"--calib {paper.name}=PATH to use a local copy"
            )
        return line

    def with_samples(self, n: int) -> CalibrationSpec:
        """This spec drawing ``n`` states (``num_samples`` of a builder; the first ``n`` of a file)."""
        if n < 1:
            raise ValueError(f"the number of calibration samples must be >= 1, got {n}")
        if self.path is not None:
            return self.model_copy(update={"limit": n})
        return CalibrationSpec.model_validate(
            {**self.model_dump(), "params": {**self.params, "num_samples": n}}
        )


class Step(BaseModel):
    """One step: ``method`` plus the fields of its library config (flat in YAML: ``{method: gptq, ...}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"method": data, "params": {}}
        if isinstance(data, dict) and "params" not in data:
            if "method" not in data:
                raise ValueError(f"a step needs a 'method' key, got keys {sorted(data)}")
            return {"method": data["method"], "params": {k: v for k, v in data.items() if k != "method"}}
        return data

    @field_validator("method")
    @classmethod
    def _known(cls, method: str) -> str:
        return get_method(method).name

    @model_validator(mode="after")
    def _valid_params(self) -> Step:
        self.config()
        return self

    @property
    def registered(self) -> Method:
        """The method's registry record."""
        return get_method(self.method)

    @property
    def stage(self) -> Stage:
        """When the step runs."""
        return self.registered.stage

    def config(self, seed: int = 0, act_bits: int | None = None, attention_bits: int | None = None) -> Any:
        """The library config object of this step, for the recipe ``seed``, activation width ``act_bits``
        and attention width ``attention_bits`` (None: float)."""
        context = BindContext(seed=seed, activation_bits=act_bits, attention_bits=attention_bits)
        return self.registered.configure(self.params, context)

    def to_dict(self) -> dict[str, Any]:
        """The flat form ``{"method": ..., **params}``."""
        return {"method": self.method, **self.params}


class MoESpec(BaseModel):
    """Mixture-of-experts settings (``moe:`` in a recipe; ignored by dense models): how Hessian quantizers
    treat routed experts that calibration starves (`dllm_calib.ExpertPolicy`, docs/methods.md).

    ``min_tokens``: an expert whose Hessian saw fewer calibration tokens is starved (null: the linear's
    input width). ``starved``: ``shared`` (pooled Hessian of the layer's experts, the default), ``rtn``, or
    ``targeted`` (the tokens routed to it from ``reserve`` extra states of the recipe's builder, then
    ``shared`` if still short).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_tokens: int | None = Field(default=None, ge=0)
    starved: str = "shared"
    reserve: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _known(self) -> MoESpec:
        self.policy()  # raises ValueError naming the known policies
        return self

    def policy(self) -> ExpertPolicy:
        """The library policy object."""
        return ExpertPolicy(self.min_tokens, self.starved, self.reserve)


class Recipe(BaseModel):
    """A quantization recipe (see the module docstring). Construction validates everything that does not
    need the model: known methods and parameters, one weight quantizer, stage order, the scheme and the
    method/scheme combinations; `dllm_bench.pipeline` checks the shapes against the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    scheme: Scheme
    steps: list[Step]
    ignore: list[str] = Field(default_factory=lambda: list(IGNORE_ALIASES))
    seed: int = Field(default=0, ge=0)
    true_sequential: bool = True
    moe: MoESpec = Field(default_factory=lambda: MoESpec())

    @field_validator("ignore")
    @classmethod
    def _patterns(cls, ignore: list[str]) -> list[str]:
        for entry in ignore:
            if entry.startswith("re:"):
                try:
                    re.compile(entry[3:])
                except re.error as err:
                    raise ValueError(
                        f"ignore entry {entry!r} is not a valid regular expression: {err}"
                    ) from err
        return ignore

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        methods = [s.method for s in self.steps]
        quantizers = [s.method for s in self.steps if s.stage is Stage.QUANTIZER]
        if len(quantizers) != 1:
            raise ValueError(
                f"a recipe needs exactly one weight quantizer (stage 'quantizer'), got {quantizers}"
            )
        duplicates = sorted({m for m in methods if methods.count(m) > 1})
        if duplicates:
            raise ValueError(f"steps repeat {duplicates}; each method may appear once")
        for before, step in zip(self.steps, self.steps[1:], strict=False):
            if step.stage.rank < before.stage.rank:
                raise ValueError(
                    f"step {step.method!r} ({step.stage}) is listed too late: steps run in the order of "
                    f"their stages, {' -> '.join(Stage)}; list them in that order"
                )
        planned = self.plan()
        spec = self.scheme.weights.spec()
        act_bits = self.scheme.activation_bits
        for method, config in planned:
            try:
                method.check(config, spec, act_bits)
            except ValueError as err:
                raise ValueError(
                    f"step {method.name!r} does not fit scheme {self.scheme.label}: {err}"
                ) from err
        _check_wrapping(planned)
        return self

    def plan(self) -> list[tuple[Method, Any]]:
        """The steps that run at this scheme, in order, with their configs: activation-only steps are
        dropped at float activations and attention-only ones at float attention, and the scheme's default
        quantizers (activations, attention) are added when their width is quantized and no step of the same
        stage and width is listed."""
        act_bits, attn_bits = self.scheme.activation_bits, self.scheme.attention_bits
        steps = [s for s in self.steps if s.registered.runs_at(act_bits, attn_bits)]
        planned = [(s.registered, s.config(self.seed, act_bits, attn_bits)) for s in steps]
        listed = {(method.stage, method.attention_only) for method, _ in planned}
        context = BindContext(self.seed, act_bits, attn_bits)
        for method in _scheme_defaults():
            if method.runs_at(act_bits, attn_bits) and (method.stage, method.attention_only) not in listed:
                planned.append((method, method.configure({}, context)))
        return sorted(planned, key=lambda mc: mc[0].stage.rank)

    # ----- derived views ---------------------------------------------------------------------------

    @property
    def quantizer(self) -> Step:
        """The weight-quantizer step."""
        return next(s for s in self.steps if s.stage is Stage.QUANTIZER)

    def steps_in(self, stage: str | Stage) -> list[Step]:
        """The steps of one stage, in recipe order."""
        try:
            wanted = Stage(stage)
        except ValueError as err:
            raise ValueError(f"unknown stage {stage!r}; stages are {[str(s) for s in Stage]}") from err
        return [s for s in self.steps if s.stage is wanted]

    def with_scheme(self, label: str | SchemeLabel) -> Recipe:
        """This recipe at another bit setting (``"W3A16"``, ``"W8A8"``, ``"W4A16g64"``); re-validated.

        Raises:
            ValueError: the label is malformed or the recipe's steps do not fit the new setting (one line
                per problem, see `validation_message`).
        """
        data = self.to_dict()
        data["scheme"] = self.scheme.with_label(label).model_dump()
        try:
            return Recipe.model_validate(data)
        except ValidationError as err:
            raise ValueError(validation_message(err, f"recipe {self.name!r} at {label}", Recipe)) from None

    def with_calibration_samples(self, n: int) -> Recipe:
        """This recipe calibrating on ``n`` states."""
        return self.model_copy(update={"calibration": self.calibration.with_samples(n)})

    def with_calibration_corpus(
        self, name: str | None, path: str, field: str | None = None, split: str | None = None
    ) -> Recipe:
        """This recipe calibrating on the local corpus at ``path`` (`CalibrationSpec.with_corpus`)."""
        return self.model_copy(update={"calibration": self.calibration.with_corpus(name, path, field, split)})

    # ----- serialisation -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data (steps flat), the form YAML files use."""
        data = self.model_dump(exclude={"steps", "calibration"})
        data["calibration"] = self.calibration.model_dump(exclude_defaults=True)
        data["steps"] = [s.to_dict() for s in self.steps]
        return {k: data[k] for k in type(self).model_fields}

    def to_yaml(self) -> str:
        """YAML text that `Recipe.from_yaml` reads back to an equal recipe."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)

    @classmethod
    def from_yaml(cls, text: str, where: str = "<string>") -> Recipe:
        """Parse and validate YAML text (``where`` names the file in errors).

        Raises:
            ValueError: not YAML, not a mapping, or not a valid recipe: one ``where: field.path: what is
                wrong (allowed: ...)`` line per problem.
        """
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"{where}: not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(
                f"{where}: a recipe is a mapping with name, scheme and steps, got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ValueError(validation_message(err, where, cls)) from None


def _scheme_defaults() -> list[Method]:
    """The registered methods a scheme with quantized activations implies (the activation quantizer)."""
    return [m for m in registered_methods().values() if m.scheme_default]


def _check_wrapping(planned: list[tuple[Method, Any]]) -> None:
    """Raise ``ValueError`` when a step folds scales into linears that an earlier step wrapped in run-time
    modules (then they are no longer plain layers it can edit)."""
    for i, (later, later_config) in enumerate(planned):
        plain = later.needs(later_config).plain
        for earlier, earlier_config in planned[:i]:
            wrapped = earlier.writes(earlier_config).wraps
            clash = [role for role in LINEAR_ROLES if role in plain & wrapped]
            if clash:
                raise ValueError(
                    f"{later.name} cannot follow {earlier.name}: {earlier.name} wraps the {', '.join(clash)} "
                    f"linears in run-time modules, and {later.name} needs them as plain layers to fold its "
                    f"scales into; drop one of the two steps or change their settings"
                )

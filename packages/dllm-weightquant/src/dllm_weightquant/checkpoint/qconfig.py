"""The ``quantization_config`` block of config.json, and reading it back.

* All quantized linears uniform (integer grid) and everything that runs online expressible in
  compressed-tensors' schema (`OnlineComputation`): a compressed-tensors checkpoint. Weights are
  ``pack-quantized``, except those of Linears whose input is quantized too, which are ``int-quantized``
  (the format compressed-tensors infers for every integer scheme with activation quantization); the
  top-level ``format`` is ``mixed-precision`` when both occur. The block is what llm-compressor writes
  (``ModelCompressor.update_config``): ``version``, ``quant_method "compressed-tensors"``, empty
  ``sparsity_config``, the ``transform_config`` of the online Hadamards (``{}`` when there are none), then
  ``QuantizationConfig.model_dump()`` without ``quant_method``. It is built with compressed-tensors' own
  classes when the package is installed, else written by hand to the same dict (a test holds the two
  equal). One config group per distinct (weight format, input activation quantizer) pair: a single
  pack-quantized group targets ``"Linear"``; otherwise groups target exact module names. ``ignore`` lists
  every Linear with neither (exact names, so LLaDA's block ``ff_out`` and its LM head ``ff_out`` never
  collide).
* Any multi-binary (DAQ/ABMP) linear, or online computation compressed-tensors cannot express (Q/K or V
  quantizers, clipped activation quantizers, DuQuant's block rotations ...): our ``dllmq`` format
  (``FORMAT.md``), one entry per module, with ``unsupported_by_compressed_tensors`` saying why and
  ``online`` naming the computation a loader must restore besides the weights. compressed-tensors and
  transformers refuse to load it (unknown ``quant_method``) instead of running a different model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dllm_kernels import QuantSpec

from dllm_weightquant.checkpoint.tensors import LAYOUTS

__all__ = [
    "CT_FORMAT_VERSION",
    "DLLMQ_FORMAT",
    "ModuleFormat",
    "OnlineComputation",
    "OnlineHadamard",
    "compressed_tensors_config",
    "declared_online",
    "dllmq_config",
    "module_formats",
]

CT_FORMAT_VERSION = "0.20.0"  # compressed-tensors release whose layout the hand-written block follows
DLLMQ_FORMAT = "dllmq-v1"


@dataclass(frozen=True)
class ModuleFormat:
    """How one Linear is stored: ``kind`` "uniform" (with ``spec``, ``g_idx`` flag and the compressed-tensors
    ``layout``: "pack-quantized", or "int-quantized" for a Linear whose input is quantized too) or
    "multi-binary" (with ``group_size``)."""

    kind: str
    spec: QuantSpec | None = None
    g_idx: bool = False
    group_size: int | None = None
    layout: str = "pack-quantized"


HadamardLocation = Literal["input", "output", "q_attn", "k_cache"]


@dataclass(frozen=True)
class OnlineHadamard:
    """An online Hadamard rotation compressed-tensors' ``"hadamard"`` transform scheme applies at run time.

    At ``location`` of the module ``target`` the value is multiplied on the right by the orthonormal
    Sylvester Hadamard matrix ``S_n / sqrt(n)`` of its full width (``head_dim`` None), or block-diagonally
    by ``S_d / sqrt(d)`` per slice of ``head_dim`` channels. Locations: ``"input"`` / ``"output"`` of a
    Linear, or the queries (``"q_attn"``) and keys (``"k_cache"``) after RoPE of an attention module (per
    head, ``head_dim`` required). ``dllm_kernels``'s Hadamard matrix of a power-of-two order is exactly
    Sylvester's. The stored weights already absorbed what keeps the float model exact, so a loader
    applies only this online part.
    """

    target: str
    location: HadamardLocation
    head_dim: int | None = None

    def __post_init__(self) -> None:
        if self.location not in ("input", "output", "q_attn", "k_cache"):
            raise ValueError(f"{self.target}: unknown online Hadamard location {self.location!r}")
        if self.head_dim is None and self.location in ("q_attn", "k_cache"):
            raise ValueError(f"{self.target}: a {self.location} Hadamard needs head_dim")
        if self.head_dim is not None and (self.head_dim < 1 or self.head_dim & (self.head_dim - 1)):
            raise ValueError(f"{self.target}: Hadamard head_dim must be a power of two, got {self.head_dim}")


@dataclass(frozen=True)
class OnlineComputation:
    """What runs at inference besides the stored weights, as ``export_quantized`` writes it down.

    Attributes:
        input_activations: Linear name -> the dynamic per-token integer quantizer of its input (a
            ``QuantSpec`` of granularity ``"token"``: ``QuantizationArgs(strategy="token", dynamic=True)``).
        hadamards: the online Hadamard rotations (`OnlineHadamard`).
        inexpressible: what else runs online that compressed-tensors' schema cannot describe, in words
            (e.g. "V quantizers"). Non-empty makes the export a ``dllmq`` checkpoint.
    """

    input_activations: Mapping[str, QuantSpec] = field(default_factory=dict)
    hadamards: tuple[OnlineHadamard, ...] = ()
    inexpressible: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, spec in self.input_activations.items():
            if spec.granularity != "token" or spec.type != "int":
                raise ValueError(f"{name}: an input activation quantizer is a per-token integer QuantSpec")
        places = [(h.target, h.location) for h in self.hadamards]
        if len(set(places)) != len(places):
            raise ValueError("at most one online Hadamard per module and location")

    def __bool__(self) -> bool:
        return bool(self.input_activations or self.hadamards or self.inexpressible)

    def parts(self) -> list[str]:
        """Everything that runs online, in words (what a weights-only loader would leave out)."""
        out = []
        if self.input_activations:
            out.append(f"dynamic per-token input quantizers on {len(self.input_activations)} linears")
        if self.hadamards:
            out.append(f"{len(self.hadamards)} online Hadamard rotations (linear inputs/outputs, q/k)")
        return out + list(self.inexpressible)


def _args_dict(spec: QuantSpec, dynamic: bool, g_idx: bool = False) -> dict[str, Any]:
    """``QuantizationArgs.model_dump()`` of ``spec`` (what compressed-tensors' serializer keeps)."""
    data: dict[str, Any] = {
        "num_bits": spec.bits,
        "type": spec.type,
        "symmetric": spec.symmetric,
        "group_size": spec.group_size,
        "strategy": spec.granularity,
        "dynamic": dynamic,
    }
    if g_idx:
        data["actorder"] = "group"
    return data


def _weights_dict(spec: QuantSpec, g_idx: bool) -> dict[str, Any]:
    return _args_dict(spec, False, g_idx)


GroupKey = tuple[ModuleFormat | None, QuantSpec | None]


def _groups(
    formats: Mapping[str, ModuleFormat], activations: Mapping[str, QuantSpec]
) -> list[tuple[GroupKey, list[str]]]:
    """(weight format or None, input quantizer or None) -> the module names that have exactly that pair."""
    groups: dict[GroupKey, list[str]] = {}
    for name in sorted(set(formats) | set(activations)):
        groups.setdefault((formats.get(name), activations.get(name)), []).append(name)
    return list(groups.items())


def _use_library(use_library: bool | None) -> bool:
    if use_library is not None:
        return use_library
    try:
        import compressed_tensors  # noqa: F401
    except ImportError:
        return False
    return True


def _transform_groups(hadamards: Iterable[OnlineHadamard]) -> dict[str, dict[str, Any]]:
    """Scheme name -> ``{"head_dim": d, "apply": {location: sorted targets}}``, one scheme per block size
    (``online_hadamard`` for full-width ones, ``online_hadamard_head<d>`` for block-diagonal ones)."""
    by_size: dict[int | None, dict[str, list[str]]] = {}
    for h in hadamards:
        by_size.setdefault(h.head_dim, {}).setdefault(h.location, []).append(h.target)
    out: dict[str, Any] = {}
    for head_dim in sorted(by_size, key=lambda d: -1 if d is None else d):
        name = "online_hadamard" if head_dim is None else f"online_hadamard_head{head_dim}"
        apply = {location: sorted(targets) for location, targets in sorted(by_size[head_dim].items())}
        out[name] = {"head_dim": head_dim, "apply": apply}
    return out


def compressed_tensors_config(
    formats: dict[str, ModuleFormat],
    ignore: list[str],
    use_library: bool | None = None,
    online: OnlineComputation | None = None,
) -> dict[str, Any]:
    """The compressed-tensors ``quantization_config`` dict for uniform modules ``formats`` (name -> format).

    ``ignore``: the Linears whose weights stay in floating point; those with an input quantizer in
    ``online`` are left out of the written ``ignore`` (they get a weight-less config group). ``online``:
    the input activation quantizers and online Hadamards to declare (ValueError if it holds anything
    ``inexpressible``). ``use_library``: True = build with compressed-tensors' classes (ImportError naming
    ``pip install compressed-tensors`` if missing), False = by hand, None = the library when installed.
    """
    if any(f.kind != "uniform" for f in formats.values()):
        raise ValueError("compressed-tensors pack-quantized holds uniform integer weights only")
    online = online or OnlineComputation()
    if online.inexpressible:
        raise ValueError(f"compressed-tensors cannot express {list(online.inexpressible)}")
    groups = _groups(formats, online.input_activations)
    group_formats = ["dense" if fmt is None else fmt.layout for (fmt, _), _ in groups]
    # "Linear" only for pack-quantized weights: compressed-tensors' converter takes any "weight" tensor
    # under a "Linear" target (norms, embeddings) for an int-quantized weight, so those name their modules.
    single = len(groups) == 1 and group_formats[0] == "pack-quantized"
    targets = [["Linear"]] if single else [names for _, names in groups]
    ignored = sorted(set(ignore) - set(online.input_activations))
    stored = sorted(set(group_formats) - {"dense"})
    top_format = stored[0] if len(stored) == 1 else "mixed-precision"
    transforms = _transform_groups(online.hadamards)
    if _use_library(use_library):
        return _with_library(groups, group_formats, targets, ignored, top_format, transforms)
    config_groups = {
        f"group_{i}": {
            "targets": tgt,
            "weights": None if fmt is None else _weights_dict(fmt.spec, fmt.g_idx),  # type: ignore[arg-type]
            "input_activations": None if act is None else _args_dict(act, True),
            "output_activations": None,
            "format": group_format,
        }
        for i, (((fmt, act), _), group_format, tgt) in enumerate(
            zip(groups, group_formats, targets, strict=True)
        )
    }
    transform_config = {
        "config_groups": {
            name: {
                "type": "hadamard",
                "apply": [
                    {"targets": tgt, "location": loc, "inverse": False, "ignore": []}
                    for loc, tgt in t["apply"].items()
                ],
                "randomize": False,
                "requires_grad": False,
                "head_dim": t["head_dim"],
                "precision": "torch.float32",
            }
            for name, t in transforms.items()
        }
    }
    return {
        "version": CT_FORMAT_VERSION,
        "quant_method": "compressed-tensors",
        "sparsity_config": {},
        "transform_config": transform_config if transforms else {},
        "config_groups": config_groups,
        "kv_cache_scheme": None,
        "format": top_format,
        "quantization_status": "compressed",
        "global_compression_ratio": None,
        "ignore": ignored,
        "moe_sparsity_config": None,
    }


def _with_library(
    groups: list[tuple[GroupKey, list[str]]],
    group_formats: list[str],
    targets: list[list[str]],
    ignore: list[str],
    top_format: str,
    transforms: dict[str, Any],
) -> dict[str, Any]:
    try:
        import compressed_tensors
        from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme
        from compressed_tensors.transform import TransformArgs, TransformConfig, TransformScheme
    except ImportError as e:
        raise ImportError(
            "building the quantization_config with compressed-tensors' classes needs the package: "
            "pip install compressed-tensors"
        ) from e
    schemes = {}
    for i, (((fmt, act), _), group_format, tgt) in enumerate(
        zip(groups, group_formats, targets, strict=True)
    ):
        weights = None
        if fmt is not None:
            assert fmt.spec is not None
            weights = fmt.spec.to_compressed_tensors(dynamic=False)
            if fmt.g_idx:
                weights = weights.model_copy(update={"actorder": "group"})
        schemes[f"group_{i}"] = QuantizationScheme(
            targets=tgt,
            weights=weights,
            input_activations=None if act is None else act.to_compressed_tensors(dynamic=True),
            format=group_format,
        )
    config = QuantizationConfig(
        config_groups=schemes, format=top_format, quantization_status="compressed", ignore=ignore
    )
    transform_config = TransformConfig(
        config_groups={
            name: TransformScheme(
                type="hadamard",
                head_dim=t["head_dim"],
                apply=[TransformArgs(targets=tgt, location=loc) for loc, tgt in t["apply"].items()],
            )
            for name, t in transforms.items()
        }
    )
    return {
        "version": compressed_tensors.__version__,
        "quant_method": "compressed-tensors",
        "sparsity_config": {},
        "transform_config": transform_config.model_dump() if transforms else {},
        **config.model_dump(exclude={"quant_method"}),
    }


def dllmq_config(
    formats: dict[str, ModuleFormat],
    ignore: list[str],
    online: OnlineComputation | None = None,
) -> dict[str, Any]:
    """Our ``dllmq`` block: one entry per quantized module (see ``FORMAT.md``), why compressed-tensors
    cannot hold the checkpoint, and (when ``online`` has anything) what runs online besides the weights."""
    modules: dict[str, Any] = {}
    for name, fmt in sorted(formats.items()):
        if fmt.kind == "uniform":
            assert fmt.spec is not None
            modules[name] = {"kind": "uniform", "weights": _weights_dict(fmt.spec, fmt.g_idx)}
        else:
            modules[name] = {"kind": "multi-binary", "group_size": fmt.group_size}
    reasons = list(online.inexpressible) if online else []
    if any(f.kind == "multi-binary" for f in formats.values()):
        reasons.insert(0, "multi-binary (DAQ/ABMP) weights")
    block: dict[str, Any] = {
        "quant_method": "dllmq",
        "format": DLLMQ_FORMAT,
        "unsupported_by_compressed_tensors": reasons,
        "modules": modules,
        "ignore": sorted(ignore),
    }
    if online:
        block["online"] = online.parts()
    return block


def _matches(linear_name: str, target: str) -> bool:
    """compressed-tensors' target rule for a Linear: ``re:<pattern>`` (re.match), ``"Linear"`` or the name."""
    if target.startswith("re:"):
        return re.match(target[3:], linear_name) is not None
    return target in ("Linear", linear_name)


def _spec_from_weights(data: dict[str, Any], where: str) -> tuple[QuantSpec, bool]:
    data = dict(data)
    actorder = data.pop("actorder", None)
    if actorder not in (None, "weight", "static", "group", "dynamic"):
        raise ValueError(f"{where}: unknown actorder {actorder!r}")
    try:
        spec = QuantSpec.from_compressed_tensors(data)
    except ValueError as e:
        raise ValueError(f"{where}: unsupported weight format ({e})") from e
    return spec, actorder in ("group", "dynamic")


def module_formats(qconfig: dict[str, Any], linear_names: Iterable[str]) -> dict[str, ModuleFormat]:
    """Module name -> format from a ``quantization_config`` (either kind) and the model's Linear names."""
    method = qconfig.get("quant_method")
    names = list(linear_names)
    if method == "dllmq":
        if qconfig.get("format") != DLLMQ_FORMAT:
            raise ValueError(
                f"unsupported dllmq format {qconfig.get('format')!r}; this version reads {DLLMQ_FORMAT}"
            )
        out: dict[str, ModuleFormat] = {}
        for name, entry in qconfig.get("modules", {}).items():
            if entry.get("kind") == "multi-binary":
                out[name] = ModuleFormat("multi-binary", group_size=int(entry["group_size"]))
            elif entry.get("kind") == "uniform":
                spec, g_idx = _spec_from_weights(entry["weights"], name)
                out[name] = ModuleFormat("uniform", spec=spec, g_idx=g_idx)
            else:
                raise ValueError(f"{name}: unknown module kind {entry.get('kind')!r}")
        return out
    if method != "compressed-tensors":
        raise ValueError(f"unsupported quant_method {method!r}; readable: 'compressed-tensors', 'dllmq'")
    if qconfig.get("format") not in (*LAYOUTS, "mixed-precision", None):
        raise ValueError(
            f"unsupported compressed-tensors format {qconfig.get('format')!r}; readable: "
            f"{', '.join(LAYOUTS)} and mixed-precision of those"
        )
    ignore = qconfig.get("ignore") or []
    out = {}
    for group_name, group in (qconfig.get("config_groups") or {}).items():
        if group.get("output_activations"):
            raise ValueError(f"{group_name}: output activation quantization is not supported by this loader")
        if group.get("weights") is None:
            if group.get("format") not in (None, "dense"):
                raise ValueError(f"{group_name}: format {group.get('format')!r} without weights")
            continue
        layout = group.get("format") or qconfig.get("format") or "pack-quantized"
        if layout not in LAYOUTS:
            raise ValueError(f"{group_name}: unsupported format {layout!r}; readable: {', '.join(LAYOUTS)}")
        spec, g_idx = _spec_from_weights(group["weights"], group_name)
        for name in names:
            if any(_matches(name, t) for t in group["targets"]) and not any(
                _matches(name, t) for t in ignore
            ):
                out.setdefault(name, ModuleFormat("uniform", spec=spec, g_idx=g_idx, layout=layout))
    return out


def declared_online(qconfig: dict[str, Any]) -> list[str]:
    """What a ``quantization_config`` (either kind) says runs online besides the weights, in words: input
    activation quantizers and transforms of compressed-tensors, the ``online`` list of ``dllmq``."""
    if qconfig.get("quant_method") == "dllmq":
        return [str(part) for part in qconfig.get("online") or []]
    out = []
    quantized_inputs = sorted(
        name for name, group in (qconfig.get("config_groups") or {}).items() if group.get("input_activations")
    )
    if quantized_inputs:
        out.append(f"input activation quantizers (config groups {', '.join(quantized_inputs)})")
    transforms = sorted((qconfig.get("transform_config") or {}).get("config_groups") or {})
    if transforms:
        out.append(f"online transforms (transform_config groups {', '.join(transforms)})")
    return out

"""The ``quantization_config`` block of config.json, and reading it back.

* All quantized linears uniform (integer grid): compressed-tensors ``pack-quantized``. The block is what
  llm-compressor writes (``ModelCompressor.update_config``): ``version``, ``quant_method
  "compressed-tensors"``, empty ``sparsity_config`` / ``transform_config``, then
  ``QuantizationConfig.model_dump()`` without ``quant_method``. It is built with compressed-tensors' own
  classes when the package is installed, else written by hand to the same dict (a test holds the two
  equal). One config group per distinct weight format: a single group targets ``"Linear"``; several
  groups target exact module names. ``ignore`` lists every Linear left unquantized (exact names, so LLaDA's
  block ``ff_out`` and its LM head ``ff_out`` never collide).
* Any multi-binary (DAQ/ABMP) linear: our ``dllmq`` format (``FORMAT.md``), one entry per module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dllm_kernels import QuantSpec

__all__ = [
    "CT_FORMAT_VERSION",
    "DLLMQ_FORMAT",
    "ModuleFormat",
    "compressed_tensors_config",
    "dllmq_config",
    "module_formats",
]

CT_FORMAT_VERSION = "0.20.0"  # compressed-tensors release whose layout the hand-written block follows
DLLMQ_FORMAT = "dllmq-v1"


@dataclass(frozen=True)
class ModuleFormat:
    """How one Linear is stored: ``kind`` "uniform" (with ``spec`` and ``g_idx`` flag) or "multi-binary"
    (with ``group_size``)."""

    kind: str
    spec: QuantSpec | None = None
    g_idx: bool = False
    group_size: int | None = None


def _weights_dict(spec: QuantSpec, g_idx: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "num_bits": spec.bits,
        "type": spec.type,
        "symmetric": spec.symmetric,
        "group_size": spec.group_size,
        "strategy": spec.granularity,
        "dynamic": False,
    }
    if g_idx:
        data["actorder"] = "group"
    return data


def _groups(formats: dict[str, ModuleFormat]) -> list[tuple[ModuleFormat, list[str]]]:
    groups: dict[ModuleFormat, list[str]] = {}
    for name, fmt in formats.items():
        groups.setdefault(fmt, []).append(name)
    return list(groups.items())


def compressed_tensors_config(
    formats: dict[str, ModuleFormat], ignore: list[str], use_library: bool | None = None
) -> dict[str, Any]:
    """The compressed-tensors ``quantization_config`` dict for uniform modules ``formats`` (name -> format).

    ``use_library``: True = build with compressed-tensors' classes (ImportError naming
    ``pip install compressed-tensors`` if missing), False = by hand, None = the library when installed.
    """
    if any(f.kind != "uniform" for f in formats.values()):
        raise ValueError("compressed-tensors pack-quantized holds uniform integer weights only")
    groups = _groups(formats)
    targets = [["Linear"]] if len(groups) == 1 else [sorted(names) for _, names in groups]
    if use_library is None:
        try:
            import compressed_tensors  # noqa: F401
        except ImportError:
            use_library = False
        else:
            use_library = True
    if use_library:
        return _with_library(groups, targets, ignore)
    config_groups = {
        f"group_{i}": {
            "targets": tgt,
            "weights": _weights_dict(fmt.spec, fmt.g_idx),  # type: ignore[arg-type]
            "input_activations": None,
            "output_activations": None,
            "format": "pack-quantized",
        }
        for i, ((fmt, _), tgt) in enumerate(zip(groups, targets, strict=True))
    }
    return {
        "version": CT_FORMAT_VERSION,
        "quant_method": "compressed-tensors",
        "sparsity_config": {},
        "transform_config": {},
        "config_groups": config_groups,
        "kv_cache_scheme": None,
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "global_compression_ratio": None,
        "ignore": sorted(ignore),
        "moe_sparsity_config": None,
    }


def _with_library(
    groups: list[tuple[ModuleFormat, list[str]]], targets: list[list[str]], ignore: list[str]
) -> dict[str, Any]:
    try:
        import compressed_tensors
        from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme
    except ImportError as e:
        raise ImportError(
            "building the quantization_config with compressed-tensors' classes needs the package: "
            "pip install compressed-tensors"
        ) from e
    schemes = {}
    for i, ((fmt, _), tgt) in enumerate(zip(groups, targets, strict=True)):
        assert fmt.spec is not None
        args = fmt.spec.to_compressed_tensors(dynamic=False)
        if fmt.g_idx:
            args = args.model_copy(update={"actorder": "group"})
        schemes[f"group_{i}"] = QuantizationScheme(targets=tgt, weights=args, format="pack-quantized")
    config = QuantizationConfig(
        config_groups=schemes,
        format="pack-quantized",
        quantization_status="compressed",
        ignore=sorted(ignore),
    )
    return {
        "version": compressed_tensors.__version__,
        "quant_method": "compressed-tensors",
        "sparsity_config": {},
        "transform_config": {},
        **config.model_dump(exclude={"quant_method"}),
    }


def dllmq_config(formats: dict[str, ModuleFormat], ignore: list[str]) -> dict[str, Any]:
    """Our ``dllmq`` block: one entry per quantized module (see ``FORMAT.md``)."""
    modules: dict[str, Any] = {}
    for name, fmt in sorted(formats.items()):
        if fmt.kind == "uniform":
            assert fmt.spec is not None
            modules[name] = {"kind": "uniform", "weights": _weights_dict(fmt.spec, fmt.g_idx)}
        else:
            modules[name] = {"kind": "multi-binary", "group_size": fmt.group_size}
    return {"quant_method": "dllmq", "format": DLLMQ_FORMAT, "modules": modules, "ignore": sorted(ignore)}


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
    if qconfig.get("format") not in ("pack-quantized", None):
        raise ValueError(
            f"unsupported compressed-tensors format {qconfig.get('format')!r}; readable: pack-quantized"
        )
    ignore = qconfig.get("ignore") or []
    out = {}
    for group_name, group in (qconfig.get("config_groups") or {}).items():
        if group.get("input_activations") or group.get("output_activations"):
            raise ValueError(f"{group_name}: activation quantization is not supported by this loader")
        if group.get("format") not in (None, "pack-quantized"):
            raise ValueError(f"{group_name}: unsupported format {group.get('format')!r}")
        spec, g_idx = _spec_from_weights(group["weights"], group_name)
        for name in names:
            if any(_matches(name, t) for t in group["targets"]) and not any(
                _matches(name, t) for t in ignore
            ):
                out.setdefault(name, ModuleFormat("uniform", spec=spec, g_idx=g_idx))
    return out

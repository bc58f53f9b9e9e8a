"""The run-time wrappers of a quantized model as data: what a weight checkpoint cannot express.

Around the block linears of a quantized model sit modules that hold no weight of their own format:
online input rotations (`OnlineRotation`: QuaRot's Hadamard R4 and cross-head o rotation, DuQuant's block
rotations, whose weights already absorbed them), dynamic activation quantizers (`ActQuantLinear`,
restored in kernel mode around a layer whose packed codes an integer GEMM can use, else in fake mode) and
V quantizers (`VQuantOutput`). They nest in one order, outermost first: V quantizer, online rotation,
activation quantizer, the layer holding the weight. Each block's q/k site (``QKSite``) may be wrapped too:
R3's `QKHadamard` and the Q/K quantizer `QKQuant`.

`stripped_wrappers` takes them off for the ``with`` body (so a weight exporter sees plain layers) and
yields a `RuntimeState`: a JSON-ready record plus the tensors it names (rotation steps, V ranges).
`restore_wrappers` puts the same wrappers back on a loaded model. Record layout (``format`` 2)::

    {"format": 2,
     "linears": {name: {"rotation": {"kind": "hadamard", "size": n} | {"kind": "block", "steps": [keys]}
                                    | {"kind": "heads", "head_dim": dh, "matrix": key},
                        "activations": ActQuantConfig fields}},
     "vquant": {"config": VQuantConfig fields, "blocks": {index: {"alpha" | "lo" | "hi": key}}} | null,
     "attention": {qk site name: [{"hadamard": head_dim} | {"quant": AttnQuantConfig fields}, ...]}}

The ``attention`` list is outermost first. Format 1 (written before q/k sites existed) is the same without
``attention`` and is still read.

A rotation shared by several linears (DuQuant's one rotation for q, k and v) is recorded once per linear
with the same tensor keys and shared again when restored.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dllm_sampler import DiffusionLM
from torch import Tensor, nn

from dllm_actquant.act_quant import ActQuantConfig
from dllm_actquant.attention import AttnQuantConfig, QKHadamard, QKQuant
from dllm_actquant.fuse import fuse_act_quant_inputs
from dllm_actquant.linear import ActQuantLinear, packed_integer_inner
from dllm_actquant.modules import replace_module
from dllm_actquant.rotation import (
    BlockRotation,
    HadamardRotation,
    HeadRotation,
    InputRotation,
    OnlineRotation,
    wrap_rotation,
)
from dllm_actquant.vquant import VQuantConfig, VQuantOutput, VQuantParams, attach_v_quantizers

__all__ = ["RUNTIME_FORMAT", "RuntimeState", "restore_wrappers", "strip_wrappers", "stripped_wrappers"]

RUNTIME_FORMAT = 2
_READABLE_FORMATS = (1, 2)


@dataclass
class RuntimeState:
    """The wrappers of a model as data: ``record`` (JSON-ready, see the module docstring) and the
    ``tensors`` (CPU, contiguous) its keys name. Empty when the model has no wrapper."""

    record: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, Tensor] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(bool(self.record.get(key)) for key in ("linears", "vquant", "attention"))


class _Rotations:
    """Records online rotations once each (DuQuant shares one rotation among q, k and v)."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self.tensors = tensors
        self.seen: dict[int, dict[str, Any]] = {}

    def describe(self, name: str, rotation: InputRotation) -> dict[str, Any]:
        if id(rotation) in self.seen:
            return self.seen[id(rotation)]
        if isinstance(rotation, HadamardRotation):
            record: dict[str, Any] = {"kind": "hadamard", "size": rotation.size}
        elif isinstance(rotation, BlockRotation):
            keys = [f"{name}.rotation.step{i}" for i in range(len(rotation.steps()))]
            for key, step in zip(keys, rotation.steps(), strict=True):
                self.tensors[key] = step.detach().cpu().contiguous()
            record = {"kind": "block", "steps": keys}
        elif isinstance(rotation, HeadRotation):
            key = f"{name}.rotation.matrix"
            self.tensors[key] = rotation.mixing.detach().cpu().contiguous()
            record = {"kind": "heads", "head_dim": rotation.head_dim, "matrix": key}
        else:
            raise ValueError(f"{name}: cannot record an online rotation of type {type(rotation).__name__}")
        self.seen[id(rotation)] = record
        return record


def _peel(
    name: str, module: nn.Module, rotations: _Rotations, vquant: dict[int, VQuantOutput], index: int
) -> tuple[nn.Module, dict[str, Any]]:
    """The layer inside the wrappers at ``name`` and the record of its rotation / activation quantizer."""
    entry: dict[str, Any] = {}
    if isinstance(module, VQuantOutput):
        vquant[index] = module
        module = module.inner
    if isinstance(module, OnlineRotation):
        entry["rotation"] = rotations.describe(name, module.rotation)
        module = module.inner
    if isinstance(module, ActQuantLinear):
        if not (module.mode == "fake" or module.packed_inner) or not module.config.dynamic:
            raise ValueError(
                f"{name}: only dynamic activation quantizers in fake mode or around a packed layer can be "
                "recorded"
            )
        entry["activations"] = module.config.to_dict()
        module = module.inner
    return module, entry


def _vquant_record(wrappers: dict[int, VQuantOutput], tensors: dict[str, Tensor]) -> dict[str, Any] | None:
    if not wrappers:
        return None
    configs = {json.dumps(w.config.to_dict(), sort_keys=True) for w in wrappers.values()}
    if len(configs) != 1:
        raise ValueError(f"the V quantizers of one model must share one config, found {sorted(configs)}")
    blocks: dict[str, dict[str, str]] = {}
    for index, wrapper in sorted(wrappers.items()):
        keys = {}
        for part in ("alpha", "lo", "hi"):
            value = getattr(wrapper.params, part)
            if value is not None:
                keys[part] = f"vquant.{index}.{part}"
                tensors[keys[part]] = value.detach().cpu().contiguous()
        blocks[str(index)] = keys
    return {"config": next(iter(wrappers.values())).config.to_dict(), "blocks": blocks}


def _peel_site(module: nn.Module) -> tuple[nn.Module, list[dict[str, Any]]]:
    """The bare q/k site inside ``module`` and its wrappers' records, outermost first."""
    chain: list[dict[str, Any]] = []
    while isinstance(module, QKQuant | QKHadamard):
        if isinstance(module, QKQuant):
            chain.append({"quant": module.config.to_dict()})
        else:
            chain.append({"hadamard": module.head_dim})
        module = module.inner
    return module, chain


def _strip(dlm: DiffusionLM, blocks: Collection[int] | None) -> tuple[RuntimeState, dict[str, nn.Module]]:
    """Take the wrappers of ``blocks`` (default: every block) off ``dlm``; returns their `RuntimeState` and
    the outer modules taken off, by name (what puts them back). On error nothing stays stripped."""
    root = dlm.model
    state = RuntimeState()
    rotations = _Rotations(state.tensors)
    vquant: dict[int, VQuantOutput] = {}
    wrapped: dict[str, nn.Module] = {}
    linears: dict[str, Any] = {}
    attention: dict[str, list[dict[str, Any]]] = {}
    try:
        for block in dlm.topology:
            if blocks is not None and block.index not in blocks:
                continue
            for name in block.linear_names():
                outer = root.get_submodule(name)
                inner, entry = _peel(name, outer, rotations, vquant, block.index)
                if inner is not outer:
                    wrapped[name] = outer
                    replace_module(root, name, inner)
                if entry:
                    linears[name] = entry
            site_name = block.names["qk"]
            outer = root.get_submodule(site_name)
            site, chain = _peel_site(outer)
            if chain:
                wrapped[site_name] = outer
                replace_module(root, site_name, site)
                attention[site_name] = chain
        state.record = {
            "format": RUNTIME_FORMAT,
            "linears": linears,
            "vquant": _vquant_record(vquant, state.tensors),
            "attention": attention,
        }
    except BaseException:
        _put_back(root, wrapped)
        raise
    return state, wrapped


def _put_back(root: nn.Module, wrapped: dict[str, nn.Module]) -> None:
    for name, outer in wrapped.items():
        replace_module(root, name, outer)


@contextmanager
def stripped_wrappers(dlm: DiffusionLM, blocks: Collection[int] | None = None) -> Iterator[RuntimeState]:
    """Inside the ``with`` body every block linear name of ``dlm`` holds its innermost layer; yields the
    `RuntimeState` of the wrappers taken off. They are put back on exit (also on error).

    ``blocks``: only these block indices are stripped and recorded (default: every block).
    """
    state, wrapped = _strip(dlm, blocks)
    try:
        yield state
    finally:
        _put_back(dlm.model, wrapped)


def strip_wrappers(dlm: DiffusionLM, blocks: Collection[int] | None = None) -> RuntimeState:
    """Take the wrappers of ``blocks`` (default: every block) off ``dlm`` for good (in place); returns
    their `RuntimeState`, which `restore_wrappers` turns back into wrappers."""
    return _strip(dlm, blocks)[0]


def _rotation(record: dict[str, Any], tensors: dict[str, Tensor]) -> InputRotation:
    if record["kind"] == "hadamard":
        return HadamardRotation(int(record["size"]))
    if record["kind"] == "heads":
        return HeadRotation(tensors[record["matrix"]], int(record["head_dim"]))
    return BlockRotation([tensors[key] for key in record["steps"]])


def restore_wrappers(dlm: DiffusionLM, record: dict[str, Any], tensors: dict[str, Tensor]) -> DiffusionLM:
    """Put the wrappers `stripped_wrappers` recorded back around ``dlm``'s layers (in place); returns it.

    Raises:
        ValueError: a record of another format.
    """
    if record.get("format") not in _READABLE_FORMATS:
        raise ValueError(
            f"unsupported runtime format {record.get('format')!r} (this version reads formats "
            f"{list(_READABLE_FORMATS)}); re-export the checkpoint with this version of dllmq"
        )
    root = dlm.model
    shared: dict[str, InputRotation] = {}
    for name, entry in record["linears"].items():
        module = root.get_submodule(name)
        if "activations" in entry:
            mode = "kernel" if packed_integer_inner(module) else "fake"
            module = ActQuantLinear(module, ActQuantConfig(**entry["activations"]), mode=mode)
        if "rotation" in entry:
            key = json.dumps(entry["rotation"], sort_keys=True)
            if key not in shared:
                shared[key] = _rotation(entry["rotation"], tensors).to(dlm.device)
            module = wrap_rotation(module, shared[key])
        replace_module(root, name, module)
    vquant = record.get("vquant")
    if vquant:
        config = VQuantConfig(**vquant["config"])
        params = {
            int(index): VQuantParams(**{part: tensors[key].to(dlm.device) for part, key in keys.items()})
            for index, keys in vquant["blocks"].items()
        }
        attach_v_quantizers(dlm, config, params)
    for name, chain in (record.get("attention") or {}).items():
        site = root.get_submodule(name)
        for entry in reversed(chain):
            if "hadamard" in entry:
                site = QKHadamard(site, int(entry["hadamard"]))
            else:
                site = QKQuant(site, AttnQuantConfig.from_dict(entry["quant"]))
        replace_module(root, name, site)
    fuse_act_quant_inputs(root)  # q/k/v and gate/up share one quantization and integer GEMM on the CPU
    return dlm

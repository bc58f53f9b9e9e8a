"""QuantSpec validation, serialization and compressed-tensors round trips."""

from __future__ import annotations

import json

import pytest
from compressed_tensors.quantization import QuantizationArgs
from dllm_kernels import QuantSpec
from hypothesis import given
from hypothesis import strategies as st


@st.composite
def specs(draw: st.DrawFn) -> QuantSpec:
    """Every valid QuantSpec shape (int specs of all bits/granularities, fp8 specs)."""
    if draw(st.booleans()):
        gran = draw(st.sampled_from(["tensor", "channel", "token", "group"]))
        group = draw(st.sampled_from([32, 64, 128])) if gran == "group" else None
        return QuantSpec(8, True, gran, group, "float")
    gran = draw(st.sampled_from(["tensor", "channel", "token", "group"]))
    group = draw(st.sampled_from([16, 32, 64, 128])) if gran == "group" else None
    return QuantSpec(draw(st.sampled_from([2, 3, 4, 8])), draw(st.booleans()), gran, group, "int")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": 5}, "bits must be one of"),
        ({"bits": 1}, "bits must be one of"),
        ({"bits": True}, "bits must be one of"),
        ({"bits": 4.0}, "bits must be one of"),
        ({"bits": 4, "granularity": "group"}, "needs a positive integer group_size"),
        ({"bits": 4, "granularity": "group", "group_size": 0}, "needs a positive integer group_size"),
        ({"bits": 4, "granularity": "channel", "group_size": 128}, "only allowed with granularity='group'"),
        ({"bits": 4, "granularity": "row"}, "granularity must be one of"),
        ({"bits": 4, "type": "float"}, "needs bits=8"),
        ({"bits": 8, "type": "float", "symmetric": False}, "symmetric only"),
        ({"bits": 8, "type": "fp8"}, "type must be one of"),
        ({"bits": 8, "symmetric": 1}, "symmetric must be a bool"),
    ],
)
def test_invalid_specs_raise_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QuantSpec(**kwargs)


def test_spec_is_frozen_and_hashable() -> None:
    spec = QuantSpec(4, granularity="group", group_size=128)
    with pytest.raises(AttributeError):
        spec.bits = 8  # type: ignore[misc]
    assert {spec: 1}[QuantSpec(4, granularity="group", group_size=128)] == 1


@pytest.mark.parametrize(
    ("spec", "qmin", "qmax"),
    [
        (QuantSpec(4), -8, 7),
        (QuantSpec(3, symmetric=False), 0, 7),
        (QuantSpec(2), -2, 1),
        (QuantSpec(8, symmetric=False), 0, 255),
        (QuantSpec(8, type="float"), -448.0, 448.0),
    ],
)
def test_qmin_qmax(spec: QuantSpec, qmin: float, qmax: float) -> None:
    assert (spec.qmin, spec.qmax) == (qmin, qmax)


@given(specs())
def test_dict_round_trip_through_json(spec: QuantSpec) -> None:
    assert QuantSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        QuantSpec.from_dict({"bits": 4, "num_bits": 4})


@given(specs())
def test_compressed_tensors_round_trip(spec: QuantSpec) -> None:
    args = spec.to_compressed_tensors()
    assert isinstance(args, QuantizationArgs)
    assert args.num_bits == spec.bits
    assert args.symmetric == spec.symmetric
    assert args.strategy == spec.granularity
    assert args.group_size == spec.group_size
    assert args.dynamic == (spec.granularity == "token")
    assert QuantSpec.from_compressed_tensors(args) == spec
    assert QuantSpec.from_compressed_tensors(args.model_dump()) == spec
    assert QuantSpec.from_compressed_tensors(json.loads(args.model_dump_json())) == spec


def test_from_compressed_tensors_plain_dict() -> None:
    data = {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "group", "group_size": 64}
    assert QuantSpec.from_compressed_tensors({**data, "dynamic": False}) == QuantSpec(4, False, "group", 64)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"num_bits": 4, "strategy": "block"}, "not supported"),
        ({"num_bits": 4}, "strategy is missing"),
        ({"num_bits": 4, "strategy": "group", "group_size": 128, "actorder": "group"}, "actorder"),
        ({"num_bits": 6, "strategy": "channel"}, "bits must be one of"),
        ({"num_bits": 4, "type": "float", "strategy": "channel"}, "needs bits=8"),
    ],
)
def test_from_compressed_tensors_rejects_unsupported(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QuantSpec.from_compressed_tensors(data)

"""CalibrationState/Set validation, save/load round trip and errors, exports."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from dllm_calib import (
    CalibrationSet,
    CalibrationState,
    CorruptCalibrationSetError,
    Provenance,
    to_calibration_list,
)


def _assert_same(a: CalibrationSet, b: CalibrationSet) -> None:
    assert len(a) == len(b)
    assert a.mask_token_id == b.mask_token_id
    assert a.provenance == b.provenance
    for sa, sb in zip(a, b, strict=True):
        for name in ("input_ids", "attention_mask", "is_masked"):
            ta, tb = getattr(sa, name), getattr(sb, name)
            assert ta.dtype == tb.dtype and torch.equal(ta, tb)
        assert (sa.confidence is None) == (sb.confidence is None)
        if sa.confidence is not None:
            assert torch.equal(sa.confidence, sb.confidence)
        assert (sa.mask_ratio, sa.t, sa.step, sa.source_index) == (
            sb.mask_ratio,
            sb.t,
            sb.step,
            sb.source_index,
        )


def test_round_trip_is_exact(make_set, tmp_path: Path) -> None:
    cset = make_set(7, seed=3)
    states = list(cset.states)
    states[2] = states[2].with_confidence(None)  # a mix of states with and without confidence
    cset = cset.with_states(states)
    out = cset.save(tmp_path / "calib")
    loaded = CalibrationSet.load(out)
    _assert_same(cset, loaded)
    assert sorted(p.name for p in out.iterdir()) == [
        "calibration.json",
        "states.safetensors",
    ]  # no temp files


def test_saved_files_get_the_umask_mode(make_set, tmp_path: Path) -> None:
    before = os.umask(0o022)
    try:
        root = make_set(2).save(tmp_path / "c")
    finally:
        os.umask(before)
    assert {p.stat().st_mode & 0o777 for p in root.iterdir()} == {0o644}  # not tempfile's 0600


def test_save_overwrites_and_rejects_a_file_path(make_set, tmp_path: Path) -> None:
    make_set(3, seed=0).save(tmp_path / "c")
    second = make_set(5, seed=1)
    second.save(tmp_path / "c")
    _assert_same(second, CalibrationSet.load(tmp_path / "c"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        second.save(tmp_path / "f")


def test_load_errors_are_clear(make_set, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no calibration set"):
        CalibrationSet.load(tmp_path / "nothing")
    root = make_set(4).save(tmp_path / "c")

    (root / "states.safetensors").rename(root / "moved")
    with pytest.raises(FileNotFoundError, match=r"states\.safetensors is missing"):
        CalibrationSet.load(root)
    (root / "moved").rename(root / "states.safetensors")

    data = (root / "states.safetensors").read_bytes()
    (root / "states.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCalibrationSetError, match="checksum"):
        CalibrationSet.load(root)
    (root / "states.safetensors").write_bytes(data)

    meta = json.loads((root / "calibration.json").read_text())
    (root / "calibration.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(CorruptCalibrationSetError, match="version"):
        CalibrationSet.load(root)

    (root / "calibration.json").write_text("{not json")
    with pytest.raises(CorruptCalibrationSetError, match="not valid JSON"):
        CalibrationSet.load(root)

    (root / "calibration.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"calibration\.json is missing"):
        CalibrationSet.load(root)


def test_tensor_file_with_matching_checksum_but_bad_content_is_reported(make_set, tmp_path: Path) -> None:
    root = make_set(2).save(tmp_path / "c")
    (root / "states.safetensors").write_bytes(b"garbage")
    meta = json.loads((root / "calibration.json").read_text())
    meta["states_sha256"] = hashlib.sha256(b"garbage").hexdigest()
    (root / "calibration.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptCalibrationSetError, match="cannot read"):
        CalibrationSet.load(root)


def test_state_validation() -> None:
    ids = torch.tensor([5, 6, 127])
    ok = {
        "attention_mask": torch.ones(3, dtype=torch.bool),
        "is_masked": ids == 127,
        "mask_ratio": 1 / 3,
        "t": 0.3,
    }
    CalibrationState(input_ids=ids, **ok)
    with pytest.raises(ValueError, match="int64"):
        CalibrationState(input_ids=ids.int(), **ok)
    with pytest.raises(ValueError, match="empty"):
        CalibrationState(
            input_ids=torch.tensor([], dtype=torch.int64),
            **{
                **ok,
                "attention_mask": torch.ones(0, dtype=torch.bool),
                "is_masked": torch.zeros(0, dtype=torch.bool),
            },
        )
    with pytest.raises(ValueError, match="mask_ratio"):
        CalibrationState(input_ids=ids, **{**ok, "mask_ratio": 1.5})
    with pytest.raises(ValueError, match="confidence values"):
        CalibrationState(input_ids=ids, **ok, confidence=torch.tensor([0.1, 2.0, 0.3]))
    with pytest.raises(ValueError, match="padding"):
        CalibrationState(input_ids=ids, **{**ok, "attention_mask": torch.tensor([True, True, False])})
    state = CalibrationState(input_ids=ids, **ok)
    with pytest.raises(ValueError, match="disagrees"):
        CalibrationSet((state,), Provenance("x"), mask_token_id=6)
    with pytest.raises(ValueError, match="no mask_token_id"):
        CalibrationSet((state,), Provenance("x"), mask_token_id=None)
    with pytest.raises(ValueError, match="at least one state"):
        CalibrationSet((), Provenance("x"), mask_token_id=127)
    with pytest.raises(ValueError, match="JSON"):
        Provenance("x", params={"bad": object()})


def test_calibration_list(make_set) -> None:
    cset = make_set(4)
    rows = to_calibration_list(cset)
    assert rows == cset.to_calibration_list()
    for row, state in zip(rows, cset, strict=True):
        assert set(row) == {"input_ids", "attention_mask"}
        assert row["input_ids"] == state.input_ids.tolist()
        assert row["attention_mask"] == [int(v) for v in state.attention_mask.tolist()]


def test_hf_dataset_needs_datasets(make_set, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match="pip install datasets"):
        make_set(2).to_hf_dataset()


def test_hf_dataset_gets_the_calibration_list(make_set, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("datasets")
    fake.Dataset = types.SimpleNamespace(from_list=lambda rows: ("dataset", rows))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    cset = make_set(3)
    assert cset.to_hf_dataset() == ("dataset", cset.to_calibration_list())

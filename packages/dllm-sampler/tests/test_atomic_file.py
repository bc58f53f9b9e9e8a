"""`atomic_file`: one file written under a temporary name, renamed into place, with the umask's mode."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from dllm_sampler.atomic import atomic_file


@pytest.fixture
def umask_027() -> Iterator[None]:
    before = os.umask(0o027)
    yield
    os.umask(before)


@pytest.mark.usefixtures("umask_027")
def test_the_file_gets_the_umask_mode_not_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "table.csv"
    with atomic_file(path, newline="") as fh:
        fh.write("a,b\n1,2\n")
    with atomic_file(tmp_path / "plot.png", "wb") as fh:
        fh.write(b"\x89PNG")
    assert path.read_text() == "a,b\n1,2\n"
    assert path.stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "plot.png").stat().st_mode & 0o777 == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_file(path) as fh:
        fh.write("half")
        raise RuntimeError("disk on fire")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"), atomic_file(path, "a"):
        pass

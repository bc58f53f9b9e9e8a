"""Atomic checkpoint folders: every file is staged beside the target, then one rename puts it in place.

`atomic_folder` yields a staging folder ``.<name>.tmp-<pid>@<host>-<token>`` next to the target. When the
block succeeds the staged files get the permissions the process umask gives a plain ``open``/``mkdir``
(safetensors writes through an owner-only temporary file, so its files would stay 0600) and the folder is
renamed into place. An existing checkpoint is first renamed to ``.<name>.old-<pid>@<host>-<token>`` and
deleted only once the new folder is in place; if the second rename fails it is renamed back, so the old
checkpoint is never lost or modified.

The writer's pid and host in these names let a later export clean up after a run that was killed:
`clean_stale_leftovers` (run by every `atomic_folder`) deletes the staging folders of processes of this
host that are no longer running, and moves a dead run's backup back into place when it never got
replaced (or deletes it when the new checkpoint did get there). Folders of live processes and of other
hosts are left alone.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CHECKPOINT_MARKER",
    "FolderInTheWay",
    "atomic_file",
    "atomic_folder",
    "atomic_path",
    "check_replaceable",
    "clean_stale_leftovers",
    "file_mode",
]

CHECKPOINT_MARKER = "config.json"
"""The file that makes a folder a checkpoint `atomic_folder` may replace (HF and dllmq folders have it)."""

HOST = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"
"""This machine's name as written in staging and backup folder names."""

_LEFTOVER = re.compile(
    r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)@(?P<host>[A-Za-z0-9._-]+)-(?P<token>[0-9a-f]{8})$"
)
_LEGACY_STAGING = re.compile(r"^\.(?P<name>.+)\.tmp-[a-z0-9_]{8}$")  # tempfile.mkdtemp names of old runs


class FolderInTheWay(FileExistsError, ValueError):
    """The output path holds something `atomic_folder` may not replace. A ``ValueError`` too, so command
    lines report it as a bad argument rather than with a traceback."""


def _leftover_path(target: Path, kind: str) -> Path:
    """A fresh sibling of ``target`` named for this process: ``kind`` "tmp" (staging) or "old" (backup)."""
    return target.parent / f".{target.name}.{kind}-{os.getpid()}@{HOST}-{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask sets it to read it)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def file_mode() -> int:
    """The permissions a plain ``open`` gives a new file under the process umask (``tempfile`` creates
    owner-only files; chmod them to this before renaming them into place)."""
    return 0o666 & ~_process_umask()


def _apply_umask(folder: Path) -> None:
    """Give ``folder`` and everything under it the modes a plain mkdir (0777) or open (0666) would under
    the process umask."""
    umask = _process_umask()
    folder.chmod(0o777 & ~umask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            Path(root, name).chmod(0o777 & ~umask)
        for name in files:
            Path(root, name).chmod(0o666 & ~umask)


def clean_stale_leftovers(parent: Path) -> list[str]:
    """Clean the staging and backup folders that dead writers of this host left in ``parent``.

    A dead run's staging folder is deleted. Its backup is renamed back to its checkpoint's name when that
    name is free (the run died between its two renames, so the backup is the only copy), else deleted (the
    new checkpoint was already in place). Each action is reported with ``warnings.warn`` and returned as
    a message; so are staging folders of runs from before pids were recorded, which are left alone.
    """
    if not parent.is_dir():
        return []
    messages: list[str] = []
    for entry in sorted(parent.iterdir()):
        legacy = _LEGACY_STAGING.match(entry.name)
        if legacy and entry.is_dir():
            messages.append(
                f"{entry} looks like the staging folder of an interrupted export of {legacy['name']} (it "
                "records no process id, so it is left alone); delete it if no export is running"
            )
            continue
        found = _LEFTOVER.match(entry.name)
        if not found or not entry.is_dir() or found["host"] != HOST or _pid_alive(int(found["pid"])):
            continue
        target = parent / found["name"]
        who = f"process {found['pid']}, which is no longer running"
        try:
            if found["kind"] == "old" and not os.path.lexists(target):
                os.replace(entry, target)
                messages.append(f"restored {target} from {entry.name}, the backup left by {who}")
            else:
                shutil.rmtree(entry)
                what = "staging folder" if found["kind"] == "tmp" else "replaced checkpoint"
                messages.append(f"removed {entry}, a {what} left by {who}")
        except FileNotFoundError:
            continue  # another export cleaned it at the same time
        except OSError as err:
            messages.append(f"could not clean {entry}, left by {who} ({err}); delete it by hand")
    for message in messages:
        warnings.warn(message, stacklevel=2)
    return messages


def check_replaceable(path: str | Path, overwrite: bool) -> None:
    """Raise `FolderInTheWay` unless ``path`` is absent, an empty folder, or (with ``overwrite``) a
    checkpoint folder: the check `atomic_folder` makes, for commands to run before any expensive work."""
    path = Path(path)
    if not os.path.lexists(path) or (path.is_dir() and not any(path.iterdir())):
        return
    if not path.is_dir():
        raise FolderInTheWay(f"{path} exists and is not a folder; choose another output path")
    if not overwrite:
        raise FolderInTheWay(f"{path} exists and is not an empty folder; pass overwrite=True to replace it")
    if not (path / CHECKPOINT_MARKER).is_file():
        raise FolderInTheWay(
            f"{path} is not a checkpoint folder (it has no {CHECKPOINT_MARKER}), so overwrite=True does not "
            "replace it; choose another output path, or delete the folder yourself if nothing in it is needed"
        )


def _swap_into_place(staging: Path, path: Path) -> None:
    """Rename ``staging`` to ``path``; an existing checkpoint is moved aside first, moved back if the
    rename fails and deleted once the new folder is in place."""
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        path.rmdir()
    if not os.path.lexists(path):
        os.replace(staging, path)
        return
    backup = _leftover_path(path, "old")
    os.replace(path, backup)
    try:
        os.replace(staging, path)
    except BaseException:
        os.replace(backup, path)
        raise
    try:
        shutil.rmtree(backup)
    except OSError as err:
        warnings.warn(
            f"{path} was replaced, but the previous checkpoint moved to {backup} could not be deleted "
            f"({err}); delete it by hand",
            stacklevel=2,
        )


@contextmanager
def atomic_folder(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Stage a folder's files in a sibling folder and move it to ``path`` only when the block succeeds.

    Yields the staging folder (write every file of the result there). On success its contents get the
    umask's permissions and it replaces ``path`` in one rename (an old checkpoint is kept until then); on
    any error, ``KeyboardInterrupt`` included, it is deleted and ``path`` is left byte for byte as it was.
    Dead runs' leftovers in the parent folder are cleaned first (`clean_stale_leftovers`).

    Raises:
        FolderInTheWay: (a ``FileExistsError``) ``path`` is a file, or a non-empty folder and ``overwrite``
            is False, or a non-empty folder without ``config.json`` (only checkpoints are replaced).
    """
    path = Path(path)
    check_replaceable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_leftovers(path.parent)
    staging = _leftover_path(path, "tmp")
    staging.mkdir()
    try:
        yield staging
        _apply_umask(staging)
        _swap_into_place(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Write one file atomically with any writer that takes a path (e.g. safetensors' ``save_file``):
    yields a temporary path beside ``path`` (``.<name>.<random>.tmp``); when the block succeeds the file
    gets the permissions a plain ``open`` gives under the process umask (not the owner-only mode of
    ``tempfile`` or of the writer) and replaces ``path`` in one rename; on any error it is deleted. Missing
    parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Write one file atomically: yields a handle (``open(..., mode, **open_kwargs)``; ``"w"`` or
    ``"wb"``) on the temporary file of `atomic_path`, which replaces ``path`` in one rename when the block
    succeeds, with the umask's permissions, and is deleted on any error.

    Text mode defaults to UTF-8 (pass ``encoding`` and ``newline`` as to ``open``).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file writes a whole file: mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as handle:
        yield handle

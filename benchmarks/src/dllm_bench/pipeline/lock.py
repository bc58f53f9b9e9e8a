"""An exclusive lock on a run folder, so two runs never write the same work directory at once.

`FolderLock` holds ``fcntl.flock`` on ``<folder>/.lock`` (the kernel drops it when the process dies, so a
killed run leaves no stale lock) and writes who holds it (pid, host, start time) into the file for the
message another run gets. Within one process the lock is re-entrant: the CLI holds it around quantize +
export while ``quantize_model`` takes it again for the work directory.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType

__all__ = ["LOCK_FILE", "FolderBusyError", "FolderLock"]

LOCK_FILE = ".lock"

_held: dict[Path, tuple[int, int]] = {}
"""Folders this process holds: resolved path -> (file descriptor, nesting depth)."""


class FolderBusyError(ValueError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """``with FolderLock(folder):`` holds the folder's lock (created with the folder if missing).

    Raises:
        FolderBusyError: another process holds it; the message names that process and the fix.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()

    def __enter__(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        key = self._key = self.folder.resolve()
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            return self
        file = self.folder / LOCK_FILE
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderBusyError(
                f"{self.folder} is in use by another dllmq run ({holder}); wait for it to finish, or stop "
                "it, or use another --out / --work-dir"
            ) from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        _held[key] = (fd, 1)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        key = self._key  # the folder itself may be gone by now (deleted under the lock)
        fd, depth = _held[key]
        if depth > 1:
            _held[key] = (fd, depth - 1)
            return
        del _held[key]
        os.close(fd)  # closing the descriptor releases the flock


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

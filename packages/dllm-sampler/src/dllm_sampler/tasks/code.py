"""Python source text from the running interpreter's standard library: the code task of the tiny models.

The corpus is every top-level ``*.py`` module of the stdlib directory (``sysconfig.get_paths()["stdlib"]``)
whose name does not start with an underscore, sorted by name, minus a few modules that are not ordinary
code (``this``, ``antigravity``). ``HELDOUT_MODULES`` are reserved for evaluation and never appear in the
training split. The text depends on the interpreter version, so record it next to any number computed
from it (:func:`corpus_id`).
"""

from __future__ import annotations

import sys
import sysconfig
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

__all__ = ["HELDOUT_MODULES", "chunk_ids", "code_modules", "code_texts", "corpus_id"]

HELDOUT_MODULES: tuple[str, ...] = (
    "bisect",
    "colorsys",
    "fnmatch",
    "graphlib",
    "heapq",
    "queue",
    "shlex",
    "textwrap",
)
"""Modules reserved for the held-out code likelihood; present in every CPython from 3.9 to 3.13."""
_EXCLUDED = frozenset({"this", "antigravity"})

Split = Literal["train", "heldout"]


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def code_modules(split: Split) -> list[str]:
    """Module names of ``split``, sorted.

    Raises:
        ValueError: for an unknown split.
        FileNotFoundError: if a held-out module is missing from this interpreter's stdlib.
    """
    available = sorted(
        p.stem for p in _stdlib_dir().glob("*.py") if not p.stem.startswith("_") and p.stem not in _EXCLUDED
    )
    if split == "train":
        return [m for m in available if m not in HELDOUT_MODULES]
    if split == "heldout":
        missing = [m for m in HELDOUT_MODULES if m not in available]
        if missing:
            raise FileNotFoundError(f"held-out stdlib modules {missing} not found in {_stdlib_dir()}")
        return list(HELDOUT_MODULES)
    raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")


def code_texts(split: Split) -> list[tuple[str, str]]:
    """``(module name, source text)`` pairs of ``split``, in :func:`code_modules` order."""
    root = _stdlib_dir()
    return [(name, (root / f"{name}.py").read_text(encoding="utf-8")) for name in code_modules(split)]


def chunk_ids(encode: Callable[[str], list[int]], split: Split, chunk_tokens: int) -> list[list[int]]:
    """Token-id chunks of exactly ``chunk_tokens`` tokens, cut from each module of ``split`` in order.

    ``encode`` maps text to token ids (e.g. ``lambda s: tokenizer.encode(s).ids``). Each module is encoded
    on its own and cut into consecutive chunks; a module's short tail is dropped,
    so no chunk spans two modules.

    Raises:
        ValueError: if ``chunk_tokens`` is not positive.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
    chunks: list[list[int]] = []
    for _, text in code_texts(split):
        ids = list(encode(text))
        chunks.extend(ids[i : i + chunk_tokens] for i in range(0, len(ids) - chunk_tokens + 1, chunk_tokens))
    return chunks


def corpus_id(modules: Sequence[str] | None = None) -> str:
    """A short description of the corpus (interpreter version and module count) for provenance records."""
    names = modules if modules is not None else code_modules("train")
    version = ".".join(str(v) for v in sys.version_info[:3])
    return f"cpython-{version} stdlib, {len(names)} modules"

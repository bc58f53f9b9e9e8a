"""Argument helpers shared by the commands, checked before any heavy import (torch, numba, matplotlib).

Everything here uses the standard library only, so ``dllmq --help`` and a bad path are answered at once:
shipped model and recipe names are read from the package folders without importing the packages, and
output locations are probed by creating (and removing) a temporary folder where the output would go.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import tempfile
from pathlib import Path

__all__ = [
    "DTYPES",
    "add_device_and_dtype",
    "calib_path",
    "check_calib_path",
    "check_input_file",
    "check_model",
    "check_out_file",
    "check_out_folder",
    "check_positive",
    "shipped_models",
    "shipped_recipes",
]

DTYPES = ("bfloat16", "float16", "float32")
"""The compute dtypes a ``--dtype`` flag takes."""

DTYPE_HELP = "compute dtype (default: float32 on CPU, bfloat16 on CUDA)"


def add_device_and_dtype(parser: argparse.ArgumentParser, device_help: str = "where the model runs") -> None:
    """``--device`` (default cpu) and ``--dtype`` (default: the device's, see `DTYPE_HELP`)."""
    parser.add_argument(
        "--device", default="cpu", help=f"{device_help} (cpu, cuda, cuda:1, ...; default cpu)"
    )
    parser.add_argument("--dtype", choices=DTYPES, default=None, help=DTYPE_HELP)


def _package_folder(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (None when not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def shipped_models() -> list[str]:
    """Names of the models ``dllm_sampler`` ships (``assets/<name>/config.json``), sorted."""
    folder = _package_folder("dllm_sampler")
    assets = folder / "assets" if folder is not None else None
    if assets is None or not assets.is_dir():
        return []
    return sorted(p.name for p in assets.iterdir() if (p / "config.json").is_file())


def shipped_recipes() -> list[str]:
    """Names of the recipes ``dllm_bench`` ships (``recipes/<name>.yaml``), sorted."""
    folder = Path(__file__).resolve().parents[1] / "recipes"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def check_model(value: str, flag: str = "--model") -> None:
    """Raise unless ``value`` is a folder or a shipped model name.

    Raises:
        ValueError: ``value`` is a file (a checkpoint is the folder holding config.json).
        FileNotFoundError: neither a folder nor a shipped name (lists the shipped names).
    """
    path = Path(value).expanduser()
    if path.is_dir() or value in shipped_models() or (path.is_file() and path.suffix.lower() == ".gguf"):
        return
    if path.exists():
        raise ValueError(
            f"{flag} {value} is a file; pass the checkpoint folder that holds config.json, a .gguf file "
            f"written by dllmq, or a packaged model: {', '.join(shipped_models())}"
        )
    raise FileNotFoundError(
        f"{flag} {value}: no such folder and no packaged model of that name; packaged models: "
        f"{', '.join(shipped_models()) or 'none installed'}"
    )


def check_input_file(path: Path, flag: str) -> None:
    """Raise ``FileNotFoundError`` / ``ValueError`` unless ``path`` is an existing file."""
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; pass a file")
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {path}: no such file")


def _check_writable_parent(path: Path, flag: str) -> None:
    """Raise ``ValueError`` unless ``path``'s folder exists or can be created, and can be written to."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{flag} {path} is below {ancestor}, which is a file; choose a path in a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".dllmq-probe-", dir=ancestor))
    except OSError as err:
        raise ValueError(
            f"{flag} {path}: cannot write in {ancestor} ({err.strerror or err}); choose a folder you can "
            "write to"
        ) from None


def check_out_folder(path: Path, flag: str = "--out") -> None:
    """Raise ``ValueError`` unless ``path`` is an existing folder or a path where one can be created."""
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is an existing file; the output is a folder, choose another path")
    _check_writable_parent(path / "x" if path.is_dir() else path, flag)


def check_out_file(path: Path, flag: str) -> None:
    """Raise ``ValueError`` unless a file can be written at ``path`` (its folder is created if missing)."""
    path = path.expanduser()
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; pass a file path")
    _check_writable_parent(path, flag)


def check_positive(args: argparse.Namespace, least: dict[str, int]) -> None:
    """Raise ``ValueError`` naming the flag when an integer argument is below its least allowed value.

    ``least`` maps argument names (``batch_size``) to their minimum; None values (unset flags) pass.
    """
    for name, minimum in least.items():
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value}")


def calib_path(spec: str) -> Path | None:
    """The local path of ``--calib [CORPUS=]PATH`` (None for a shipped source name); the corpus name is
    checked when the recipe is loaded (this runs before torch is imported)."""
    if spec in ("arithmetic", "code"):
        return None
    named = re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*=(.*)", spec)
    return Path(named.group(1) if named and not Path(spec).exists() else spec).expanduser()


def check_calib_path(spec: str, flag: str = "--calib") -> None:
    """Raise ``FileNotFoundError`` unless the path of ``flag`` (``--calib``, ``--source``) exists."""
    path = calib_path(spec)
    if path is not None and not path.exists():
        raise FileNotFoundError(
            f"{flag} {spec}: {path} does not exist; give a local corpus file or folder (hubs are not read)"
        )

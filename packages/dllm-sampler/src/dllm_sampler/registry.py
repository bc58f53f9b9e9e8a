"""Named models shipped as package data: ``load("tiny-llada")`` resolves to ``assets/tiny-llada``.

A model is available when ``src/dllm_sampler/assets/<name>/config.json`` exists.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ASSETS_DIR", "available_models", "resolve"]

ASSETS_DIR = Path(__file__).parent / "assets"


def available_models() -> dict[str, Path]:
    """Name -> folder of every packaged model (sorted by name); empty if none are installed."""
    if not ASSETS_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(ASSETS_DIR.iterdir()) if (p / "config.json").is_file()}


def resolve(path_or_name: str | Path) -> Path:
    """An existing folder as given, else the packaged model of that name.

    Raises FileNotFoundError naming the packaged models when neither exists.
    """
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        return path
    models = available_models()
    if isinstance(path_or_name, str) and path_or_name in models:
        return models[path_or_name]
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; pass the checkpoint folder that holds config.json")
    names = ", ".join(models) or "none installed"
    raise FileNotFoundError(
        f"no model folder {str(path_or_name)!r} and no packaged model of that name; packaged models: {names}"
    )

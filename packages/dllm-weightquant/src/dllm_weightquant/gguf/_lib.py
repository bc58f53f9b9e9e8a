"""The ``gguf`` package (llama.cpp's own GGUF reader/writer), imported lazily with a clear error."""

from __future__ import annotations

from types import ModuleType

__all__ = ["import_gguf"]


def import_gguf() -> ModuleType:
    """The ``gguf`` module; raises ``ImportError`` naming the install command when it is absent."""
    try:
        import gguf
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "GGUF export and read-back need the gguf package: pip install 'dllm-weightquant[gguf]' "
            "(or pip install gguf)"
        ) from exc
    return gguf

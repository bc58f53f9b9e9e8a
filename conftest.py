"""Repository-wide pytest setup.

Triton kernels run under the Triton interpreter when no CUDA device is present, so the plain
``uv run pytest`` command exercises them on a CPU-only machine. ``TRITON_INTERPRET`` must be set
before triton is first imported, which is why this happens at conftest import time.
Tests marked ``gpu`` are skipped (not removed) when no CUDA device is available.
"""

from __future__ import annotations

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; runs on the GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)

"""Shared test configuration for dllm_bench.

Hypothesis profiles: ``ci`` (default: few examples, no deadline, derandomized) and ``thorough``
(select with ``HYPOTHESIS_PROFILE=thorough``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from dllm_bench.cli import main
from dllm_sampler import save
from dllm_sampler.testing import random_char_model
from hypothesis import settings

settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=400, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="session")
def _single_thread() -> Iterator[None]:
    """One torch thread: the suite's small models run faster without thread hand-offs on 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def rtn_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A saved random tiny LLaDA (character tokenizer) and its RTN W4A16g16 quantization by
    ``dllmq quantize``; tests must not modify them (copy first)."""
    root = tmp_path_factory.mktemp("rtn-folders")
    save(random_char_model("llada"), root / "float")
    argv = ["quantize", "--model", str(root / "float"), "--out", str(root / "q"), "--no-progress"]
    assert main([*argv, "--recipe", "rtn", "--scheme", "W4A16g16"]) == 0
    return root / "float", root / "q"

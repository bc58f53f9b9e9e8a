"""Shared test configuration for dllm_bench.

Hypothesis profiles: ``ci`` (default: few examples, no deadline, derandomized) and ``thorough``
(select with ``HYPOTHESIS_PROFILE=thorough``).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=400, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

"""Calibration-set builders (plain, random, MCS, TMAS) and their registry."""

from dllm_calib.builders.base import (
    BUILDERS,
    BuilderConfig,
    build_calibration_set,
    builder_config,
    register_builder,
)
from dllm_calib.builders.mcs import MCSConfig, build_mcs, mcs_visibility
from dllm_calib.builders.plain import PlainConfig, build_plain
from dllm_calib.builders.random_t import RandomConfig, build_random
from dllm_calib.builders.tmas import TMASConfig, build_tmas

__all__ = [
    "BUILDERS",
    "BuilderConfig",
    "MCSConfig",
    "PlainConfig",
    "RandomConfig",
    "TMASConfig",
    "build_calibration_set",
    "build_mcs",
    "build_plain",
    "build_random",
    "build_tmas",
    "builder_config",
    "mcs_visibility",
    "register_builder",
]

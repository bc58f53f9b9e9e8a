"""The method registry and the protocol methods run under (see `dllm_calib.methods.registry`)."""

from dllm_calib.methods.config import (
    MethodConfig,
    check_bool,
    check_choice,
    check_positive_int,
    check_range,
)
from dllm_calib.methods.context import STARVED_POLICIES, ExpertPolicy, LogRow, MethodContext
from dllm_calib.methods.registry import (
    ENTRY_POINT_GROUP,
    BindContext,
    Method,
    Needs,
    Stage,
    Statistic,
    Writes,
    bind_fields,
    get_method,
    register_method,
    registered,
    registered_methods,
    unregister_method,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "STARVED_POLICIES",
    "BindContext",
    "ExpertPolicy",
    "LogRow",
    "Method",
    "MethodConfig",
    "MethodContext",
    "Needs",
    "Stage",
    "Statistic",
    "Writes",
    "bind_fields",
    "check_bool",
    "check_choice",
    "check_positive_int",
    "check_range",
    "get_method",
    "register_method",
    "registered",
    "registered_methods",
    "unregister_method",
]

"""The work of ``dllmq methods`` (docs: `dllm_bench.commands.methods`)."""

from __future__ import annotations

import argparse

from dllm_calib import Method, registered_methods
from dllm_sampler import LINEAR_ROLES


def _roles(roles: frozenset[str]) -> str:
    """The roles in forward order (q, k, v, o, gate, up, down)."""
    return ", ".join(r for r in LINEAR_ROLES if r in roles)


def _describe(method: Method) -> list[str]:
    config = method.configure({})
    needs, writes = method.needs(config), method.writes(config)
    lines = [
        f"{method.name}  [{method.stage}]  {method.summary}",
        f"  config: {method.config_cls.__name__} {config.to_dict()}",
        f"  collects: {', '.join(s.describe() for s in needs.statistics) or 'nothing'}"
        + ("; needs the float model's confidence" if needs.confidence else ""),
    ]
    if writes.weights or writes.wraps:
        changed = f"weights of {_roles(writes.weights)}" if writes.weights else ""
        wrapped = f"wraps {_roles(writes.wraps)}" if writes.wraps else ""
        lines.append(f"  changes: {'; '.join(p for p in (changed, wrapped) if p)}")
    if method.activation_only:
        lines.append("  runs only when the scheme quantizes activations")
    if method.attention_only:
        lines.append("  runs only when the scheme quantizes the attention activations (not at A16 or KV16)")
    return lines


def run(args: argparse.Namespace) -> int:
    methods = registered_methods()
    unknown = sorted(set(args.names) - set(methods))
    if unknown:
        raise ValueError(f"no registered methods {unknown}; registered: {sorted(methods)}")
    for name, method in methods.items():
        if not args.names or name in args.names:
            print("\n".join(_describe(method)))
    return 0

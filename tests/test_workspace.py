"""The workspace's dependency rules: each member declares exactly the members it imports, no cycles.

A member installs on its own (``uv pip install packages/dllm-sampler``) only if its pyproject names
every workspace member its code imports; and the layering of docs/architecture.md forbids cycles.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEMBER_DIRS = sorted([*ROOT.joinpath("packages").iterdir(), ROOT / "benchmarks"])
ALLOWED = {
    "dllm-kernels": set(),
    "dllm-sampler": set(),
    "dllm-calib": {"dllm-kernels", "dllm-sampler"},
    "dllm-actquant": {"dllm-kernels", "dllm-sampler", "dllm-calib"},
    "dllm-weightquant": {"dllm-kernels", "dllm-sampler", "dllm-calib"},
    "dllm-bench": {"dllm-kernels", "dllm-sampler", "dllm-calib", "dllm-actquant", "dllm-weightquant"},
}


def _project(member: Path) -> dict:
    return tomllib.loads((member / "pyproject.toml").read_text())["project"]


def _declared_members(member: Path) -> set[str]:
    deps = _project(member).get("dependencies", [])
    names = {d.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip() for d in deps}
    return {n for n in names if n in ALLOWED}


def _imported_members(member: Path) -> set[str]:
    found: set[str] = set()
    for py in (member / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text(), filename=str(py))):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                if top.startswith("dllm_"):
                    found.add(top.replace("_", "-"))
    return found


@pytest.mark.parametrize("member", MEMBER_DIRS, ids=lambda p: p.name)
def test_member_layout(member: Path) -> None:
    name = _project(member)["name"]
    assert name in ALLOWED, f"unknown workspace member {name}"
    assert (member / "README.md").read_text().strip(), f"{name} needs a README"
    assert (member / "tests").is_dir(), f"{name} needs a tests/ folder"
    assert (member / "src" / name.replace("-", "_") / "__init__.py").is_file()


@pytest.mark.parametrize("member", MEMBER_DIRS, ids=lambda p: p.name)
def test_member_declares_what_it_imports(member: Path) -> None:
    name = _project(member)["name"]
    imported = _imported_members(member) - {name}
    declared = _declared_members(member)
    assert imported <= declared, f"{name} imports {sorted(imported - declared)} without declaring them"
    assert declared <= ALLOWED[name], f"{name} depends on {sorted(declared - ALLOWED[name])}: breaks layering"


@pytest.mark.parametrize("member", MEMBER_DIRS, ids=lambda p: p.name)
def test_member_requirements_pin_the_workspace_versions(member: Path) -> None:
    """Built wheels require their sibling wheels of the same release (``dllm-sampler==0.1.0``): a fresh
    install resolves them from a wheel folder, never a same-named or mismatched distribution of an index
    (pip takes the highest version it finds among ``--find-links`` and the index)."""
    versions = {_project(m)["name"]: _project(m)["version"] for m in MEMBER_DIRS}
    for dep in _project(member).get("dependencies", []):
        name = dep.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip()
        if name in versions:
            assert dep == f"{name}=={versions[name]}", f"{_project(member)['name']} requires {dep!r}"

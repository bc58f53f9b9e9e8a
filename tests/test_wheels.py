"""The wheels install outside the workspace: ``uv build --all-packages`` into a folder, then each member is
resolved from that folder alone (no index, no workspace sources) into a fresh virtual environment.

Third-party requirements (torch, numpy, ...) need an index this test may not have, so they are excluded
from the resolution (``uv pip install --excludes``); every requirement between members must be met by the
wheels in the folder. The full install is then imported with the third-party packages of the running
environment on ``PYTHONPATH`` (the members themselves must come from the fresh environment).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEMBER_DIRS = sorted([*ROOT.joinpath("packages").iterdir(), ROOT / "benchmarks"])
UV = shutil.which("uv")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(UV is None, reason="needs uv on PATH to build the wheels and make a fresh venv"),
]


def _project(member: Path) -> dict:
    return tomllib.loads((member / "pyproject.toml").read_text())["project"]


MEMBERS = {_project(m)["name"]: m for m in MEMBER_DIRS}


def _uv(*args: str | Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [UV, *map(str, args)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert done.returncode == 0, f"uv {' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _requirement_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        metadata = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(metadata).decode().splitlines()
    return {
        re.split(r"[ <>=!~;\[(]", line.removeprefix("Requires-Dist:").strip())[0]
        for line in lines
        if line.startswith("Requires-Dist:")
    }


def _member_closure(name: str) -> set[str]:
    """``name`` and every member it requires, directly or not."""
    out, todo = set(), [name]
    while todo:
        member = todo.pop()
        if member in out:
            continue
        out.add(member)
        for dep in _project(MEMBERS[member]).get("dependencies", []):
            dep_name = re.split(r"[ <>=!~;\[]", dep)[0]
            if dep_name in MEMBERS:
                todo.append(dep_name)
    return out


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dist")
    _uv("build", "--all-packages", "--offline", "--wheel", "-o", folder)
    return folder


def test_each_member_resolves_from_the_wheel_folder_and_imports(dist: Path, tmp_path: Path) -> None:
    wheels = sorted(dist.glob("*.whl"))
    assert {w.name.split("-")[0].replace("_", "-") for w in wheels} == set(MEMBERS)
    third_party = set().union(*map(_requirement_names, wheels)) - set(MEMBERS)
    excludes = tmp_path / "third-party.txt"
    excludes.write_text("\n".join(sorted(third_party)) + "\n")
    venv = tmp_path / "venv"
    _uv("venv", "--quiet", "--python", sysconfig.get_config_var("py_version_short"), venv)
    python = venv / "bin" / "python"
    install = ("pip", "install", "--offline", "--no-index", "--find-links", dist, "--excludes", excludes)

    for name in MEMBERS:
        report = _uv(*install, "--dry-run", "--python", python, name)
        planned = set(re.findall(r"^ \+ (dllm-[a-z]+)==", report, flags=re.MULTILINE))
        assert planned == _member_closure(name), f"{name}: {report}"

    _uv(*install, "--python", python, "dllm-bench")
    check = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.__file__.startswith(sys.prefix), (name, module.__file__)\n"
        "from dllm_sampler import available_models\n"
        "assert available_models(), 'the sampler wheel ships the tiny models'\n"
    )
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}  # third-party packages only
    modules = [name.replace("-", "_") for name in MEMBERS]
    done = subprocess.run(
        [python, "-c", check, *modules], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr

"""Make the GGUF files of the benchmark with llama.cpp's own tools: the float model through
``convert_hf_to_gguf.py``, ``llama-quantize`` types with and without an importance matrix, and the
importance matrix itself (``llama-imatrix`` over training-like arithmetic text, no masks: the
autoregressive calibration llama.cpp users run).

Every file is made once and reused (a finished file exists only after its tool succeeded: each tool writes
to a temporary name that is renamed).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from dllm_sampler.atomic import atomic_file, atomic_path
from dllm_sampler.registry import resolve
from dllm_sampler.tasks.arithmetic import format_answer, format_prompt, train_split

from dllm_bench.llamacpp.stage import stage_for_converter

__all__ = ["LlamaCpp", "calibration_text", "float_gguf", "imatrix", "quantized_gguf"]

PRE_TOKENIZER = "starcoder"
"""llama.cpp's pre-tokenizer with the tiny tokenizer's two steps: digits one by one, then GPT-2's regex."""


@dataclass(frozen=True)
class LlamaCpp:
    """A build of benchmarks/llamacpp/build.sh: ``root/build/bin`` binaries, the converter's Python in
    ``root/venv`` and the llama.cpp source under ``root/src``."""

    root: Path

    def binary(self, name: str) -> Path:
        """``root/build/bin/<name>``; FileNotFoundError naming build.sh when it is missing."""
        path = self.root / "build" / "bin" / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; run benchmarks/llamacpp/build.sh {self.root}")
        return path

    @property
    def source(self) -> Path:
        """The vendored llama.cpp source folder."""
        found = sorted(self.root.glob("src/llama_cpp_python-*/vendor/llama.cpp"))
        if not found:
            raise FileNotFoundError(
                f"no llama.cpp source under {self.root}/src; run benchmarks/llamacpp/build.sh"
            )
        return found[-1]

    @property
    def python(self) -> Path:
        """The converter environment's interpreter."""
        path = self.root / "venv" / "bin" / "python"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; run benchmarks/llamacpp/build.sh {self.root}")
        return path

    def version(self) -> str:
        """The ``VERSION`` record build.sh wrote (llama-cpp-python release, sdist hash, llama.cpp commit)."""
        file = self.root / "VERSION"
        return file.read_text().strip() if file.is_file() else "unknown (no VERSION file)"


def _run(argv: list[str], log: Path) -> None:
    """Run a tool at low priority, its output in ``log``; RuntimeError quoting the log's tail on failure."""
    with open(log, "w") as out:
        done = subprocess.run(["nice", "-n", "10", *argv], stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"{Path(argv[0]).name} failed (exit {done.returncode}); log {log}:\n{tail}")


def float_gguf(llama: LlamaCpp, model: str, work: Path) -> Path:
    """``work/<name>-f32.gguf``: the model converted by llama.cpp's converter at f32."""
    name = Path(model).name
    out = work / f"{name}-f32.gguf"
    if out.is_file():
        return out
    staged = stage_for_converter(resolve(model), work / "hf" / name)
    script = Path(__file__).resolve().parents[3] / "llamacpp" / "convert_hf.py"
    with atomic_path(out) as tmp:
        argv = [str(llama.python), str(script), str(llama.source), PRE_TOKENIZER, str(staged)]
        _run([*argv, "--outtype", "f32", "--outfile", str(tmp)], work / f"{name}-f32.log")
    return out


def calibration_text(path: Path, problems: int = 400, seed: int = 1) -> Path:
    """Training-split arithmetic examples as plain text, one ``prompt + answer`` per line (the tiny models'
    training text without masks), ``problems`` of them from ``train_split(seed)``."""
    if not path.is_file():
        stream = train_split(seed)
        with atomic_file(path) as f:
            for _ in range(problems):
                p = next(stream)
                f.write(f"{format_prompt(p)}{format_answer(p)}\n")
    return path


def imatrix(llama: LlamaCpp, f32: Path, text: Path, chunk: int = 128) -> Path:
    """``<f32 stem>.imatrix.dat``: llama-imatrix over ``text`` in chunks of ``chunk`` tokens, 1 thread (the
    legacy format: llama-imatrix picks GGUF only for a name ending in .gguf, and the file is first written
    under a temporary name)."""
    out = f32.with_name(f32.stem.removesuffix("-f32") + ".imatrix.dat")
    if not out.is_file():
        with atomic_path(out) as tmp:
            argv = [str(llama.binary("llama-imatrix")), "-m", str(f32), "-f", str(text), "-o", str(tmp)]
            _run(
                [*argv, "-c", str(chunk), "-b", str(chunk), "-ub", str(chunk), "-t", "1", "--no-ppl"],
                out.with_suffix(".log"),
            )
    return out


def quantized_gguf(llama: LlamaCpp, f32: Path, qtype: str, matrix: Path | None = None) -> Path:
    """``llama-quantize`` of ``f32`` to ``qtype`` (e.g. ``Q4_K_M``), with ``matrix`` as ``--imatrix``."""
    stem = f32.stem.removesuffix("-f32")
    out = f32.with_name(f"{stem}-{qtype}{'-imatrix' if matrix else ''}.gguf")
    if not out.is_file():
        with atomic_path(out) as tmp:
            extra = ["--imatrix", str(matrix)] if matrix else []
            argv = [str(llama.binary("llama-quantize")), *extra, str(f32), str(tmp), qtype, "1"]
            _run(argv, out.with_suffix(".log"))
    return out

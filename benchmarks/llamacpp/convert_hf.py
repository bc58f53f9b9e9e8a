"""Run llama.cpp's own ``convert_hf_to_gguf.py`` on a dllmq model folder, naming the BPE pre-tokenizer.

llama.cpp's converter identifies a BPE pre-tokenizer by hashing the tokenization of a fixed text and refuses
tokenizers it has not seen. The tiny models' tokenizer (digits split one by one, then GPT-2's byte-level
regex) is not in its table; llama.cpp's ``starcoder`` pre-tokenizer is the same two steps (``\\p{N}``, then
GPT-2's regex), so this wrapper makes the converter write ``tokenizer.ggml.pre = starcoder`` (or the name
given) and otherwise runs the converter unchanged.

Run it with the Python environment that has the converter's requirements (``gguf``, ``transformers``,
``torch``), not the repository's:

    python convert_hf.py LLAMA_CPP_DIR PRE_TOKENIZER HF_FOLDER --outtype f32 --outfile OUT.gguf
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    """``argv``: llama.cpp source dir, pre-tokenizer name, then the converter's own arguments."""
    if len(argv) < 3:
        raise SystemExit(__doc__)
    llama_dir, pre, rest = Path(argv[0]), argv[1], argv[2:]
    script = llama_dir / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise SystemExit(
            f"{script} not found; pass the llama.cpp source folder (build.sh's src/.../vendor/llama.cpp)"
        )
    sys.path[:0] = [str(llama_dir), str(llama_dir / "gguf-py")]
    from conversion import base  # llama.cpp's converter package, importable only from llama_dir

    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
    sys.argv = [str(script), *rest]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Stage a dllmq model folder for llama.cpp's ``convert_hf_to_gguf.py``.

The converter reads the tokenizer through ``transformers.AutoTokenizer`` and the prompt conventions from
``tokenizer_config.json``; dllmq's tiny models keep theirs in ``generation_config.json``
(``dllmq_prompt_template``, ``dllmq_add_bos``), which llama.cpp never reads. The staged folder is the model
folder plus a ``tokenizer_config.json`` that states the same conventions in the keys llama.cpp does read:

* ``add_bos_token`` (written to the GGUF as ``tokenizer.ggml.add_bos_token``): the BOS token is prepended;
* ``chat_template``: ``llama-diffusion-cli`` always formats ``-p`` with the GGUF's chat template (ChatML
  when the file has none, which the tiny models were never trained on); the staged template renders the
  message as ``dllmq_prompt_template`` does, so ``-p "<problem>"`` gives the prompt ``dllmq generate``
  builds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from dllm_sampler.atomic import atomic_folder

__all__ = ["STAGED_FILES", "chat_template", "stage_for_converter", "tokenizer_config"]

STAGED_FILES = ("config.json", "generation_config.json", "tokenizer.json")
"""Files copied beside the weights (``*.safetensors`` and their index are copied too)."""

_SPECIAL_KEYS = {
    "<|pad|>": "pad_token",
    "<|bos|>": "bos_token",
    "<|eos|>": "eos_token",
    "<|mdm_mask|>": "mask_token",
}


def _jinja_string(text: str) -> str:
    """``text`` as a single-quoted Jinja string literal (backslash, quote, newline, tab, CR escaped)."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    escaped = escaped.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return f"'{escaped}'"


def chat_template(prompt_template: str) -> str:
    """A Jinja chat template that renders the messages' contents, concatenated, through a dllmq
    ``str.format`` prompt template with one ``{prompt}`` field (``"{prompt}\\nA:"``).

    The template's literal text is emitted from Jinja string expressions, never as raw text beside a block
    tag: chat templates are rendered with ``trim_blocks`` (Hugging Face's and llama.cpp's renderers), which
    drops a newline that follows a block tag, so ``{% endfor %}\\nA:`` would render ``...A:``.

    Raises:
        ValueError: the template is not a ``str.format`` pattern with ``{prompt}`` exactly once.
    """
    marker = "\x00prompt\x00"
    try:
        rendered = prompt_template.format(prompt=marker)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(
            f"prompt template {prompt_template!r} is not a str.format pattern with {{prompt}}"
        ) from err
    if rendered.count(marker) != 1:
        raise ValueError(f"prompt template {prompt_template!r} must contain {{prompt}} exactly once")
    prefix, suffix = (_jinja_string(part) for part in rendered.split(marker))
    return (
        f"{{{{ {prefix} }}}}{{% for message in messages %}}{{{{ message['content'] }}}}{{% endfor %}}"
        f"{{{{ {suffix} }}}}"
    )


def tokenizer_config(folder: Path) -> dict[str, Any]:
    """The ``tokenizer_config.json`` llama.cpp's converter needs for a dllmq model folder: a fast tokenizer
    class, the special tokens found in ``tokenizer.json``, ``add_bos_token`` from ``dllmq_add_bos`` and the
    chat template of ``dllmq_prompt_template`` (identity when the folder has none)."""
    added = json.loads((folder / "tokenizer.json").read_text())["added_tokens"]
    generation_file = folder / "generation_config.json"
    generation = json.loads(generation_file.read_text()) if generation_file.is_file() else {}
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
    config |= {_SPECIAL_KEYS[t["content"]]: t["content"] for t in added if t["content"] in _SPECIAL_KEYS}
    config["add_bos_token"] = bool(generation.get("dllmq_add_bos", False))
    config["add_eos_token"] = False
    config["chat_template"] = chat_template(generation.get("dllmq_prompt_template", "{prompt}"))
    return config


def stage_for_converter(folder: Path, dest: Path) -> Path:
    """Write ``dest``: ``folder``'s config, tokenizer and weights plus `tokenizer_config`. Returns ``dest``.

    Raises:
        FileNotFoundError: ``folder`` lacks ``config.json``, ``tokenizer.json`` or safetensors weights.
    """
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.safetensors.index.json"))
    for name in ("config.json", "tokenizer.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} has no {name}; pass a Hugging Face style model folder")
    if not weights:
        raise FileNotFoundError(f"{folder} has no *.safetensors weights; llama.cpp's converter needs them")
    with atomic_folder(dest, overwrite=True) as tmp:
        for src in [folder / n for n in STAGED_FILES if (folder / n).is_file()] + weights:
            shutil.copy2(src, tmp / src.name)
        (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(folder), indent=2) + "\n")
    return dest

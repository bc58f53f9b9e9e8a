"""GGUF (llama.cpp) support: weights on GGUF grids, their quantizers, the GGUF export and read-back.

* :class:`GGUFWeight` - a weight as GGUF block bytes; :func:`gguf_rtn` and :class:`GGUFGroupParams` (the
  block parameters GPTQ's sweep uses) quantize onto the grids of ``dllm_kernels.GGUFSpec``;
* :func:`write_gguf`, :func:`quantize_for_gguf`, :func:`read_gguf` (the ``gguf`` package, imported lazily:
  ``pip install 'dllm-weightquant[gguf]'``); see docs/gguf.md.
"""

from dllm_weightquant.gguf.export import FLOAT_TYPES, quantize_for_gguf, write_gguf
from dllm_weightquant.gguf.load import gguf_source_model, read_gguf, read_gguf_tensors
from dllm_weightquant.gguf.quantize import GGUFGroupParams, gguf_rtn, gguf_spec_for
from dllm_weightquant.gguf.weight import GGUFWeight

__all__ = [
    "FLOAT_TYPES",
    "GGUFGroupParams",
    "GGUFWeight",
    "gguf_rtn",
    "gguf_source_model",
    "gguf_spec_for",
    "quantize_for_gguf",
    "read_gguf",
    "read_gguf_tensors",
    "write_gguf",
]

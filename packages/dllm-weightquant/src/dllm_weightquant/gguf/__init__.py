"""GGUF (llama.cpp) support: weights on GGUF grids, their quantizers, the GGUF export and read-back.

* :class:`GGUFWeight` - a weight as GGUF block bytes; :func:`gguf_rtn` and :class:`GGUFGroupParams` (the
  block parameters GPTQ's sweep uses) quantize onto the grids of ``dllm_kernels.GGUFSpec``;
* :func:`write_gguf` / :func:`read_gguf` (``gguf`` package, imported lazily: ``pip install
  'dllm-weightquant[gguf]'``) - see docs/gguf.md.
"""

from dllm_weightquant.gguf.quantize import GGUFGroupParams, gguf_rtn
from dllm_weightquant.gguf.weight import GGUFWeight

__all__ = ["GGUFGroupParams", "GGUFWeight", "gguf_rtn"]

"""Dump the SASS of the dllm_kernels Triton kernels and count their matrix instructions.

Usage::

    # on a GPU machine: the kernels as the dispatcher compiles (and autotunes) them
    uv run python benchmarks/suites/check_sass.py [--m 1024] [--n 4096] [--k 4096] [--dump DIR]
    # anywhere (no GPU needed): ahead-of-time compilation of representative configs for an arch
    uv run python benchmarks/suites/check_sass.py --offline 90

GPU mode runs every op once through :mod:`dllm_kernels.dispatch` on CUDA tensors with a fresh
``TRITON_CACHE_DIR`` and disassembles each compiled ``.cubin`` (with autotuning, every tried config is
compiled and listed). Offline mode compiles fixed specializations with ``triton.compile`` for the given
compute capability, assuming 16-byte aligned pointers and sizes as the JIT does for such shapes. Both
report, per cubin, the tensor-core opcode counts from ``cuobjdump -sass`` and the registers and stack
(spill) bytes from ``cuobjdump -res-usage``. On Hopper (sm_90), matrix-bound code should show warpgroup MMA:
``HGMMA`` (fp16/bf16), ``IGMMA`` (int8) or ``QGMMA`` (fp8); ``HMMA``/``IMMA`` (warp-level ``mma.sync``) or
no MMA at all means a slow path (docs/references.md#kernels). A non-zero STACK means register spills.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

MMA_PATTERNS = ("HGMMA", "IGMMA", "QGMMA", "HMMA", "IMMA")
HEADER = ["kernel", "variant", "warps", "stages", *MMA_PATTERNS, "REG", "STACK"]


def _cuobjdump() -> str:
    """Path of cuobjdump: the one shipped with triton's NVIDIA backend, else the one on PATH."""
    import triton

    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    found = str(bundled) if bundled.exists() else shutil.which("cuobjdump")
    if found is None:
        raise SystemExit("cuobjdump not found (install the CUDA toolkit or a triton wheel that bundles it)")
    return found


def count_mma(sass: str) -> dict[str, int]:
    """Occurrences of each tensor-core opcode family in a SASS listing (``HGMMA.64x128x16`` counts once)."""
    return {p: len(re.findall(rf"\b{p}\b", sass)) for p in MMA_PATTERNS}


def analyse(cubin: Path, dump: Path | None) -> dict[str, Any]:
    """MMA counts plus ``REG`` and ``STACK`` of one cubin file; writes the SASS to ``dump`` if given."""
    tool = _cuobjdump()
    sass = subprocess.run([tool, "-sass", str(cubin)], check=True, capture_output=True, text=True).stdout
    usage = subprocess.run(
        [tool, "-res-usage", str(cubin)], check=True, capture_output=True, text=True
    ).stdout
    if dump is not None:
        (dump / f"{cubin.stem}-{cubin.parent.name[:8]}.sass").write_text(sass)
    found = dict(re.findall(r"\b(REG|STACK):(\d+)", usage))
    return {**count_mma(sass), "REG": found.get("REG", "?"), "STACK": found.get("STACK", "?")}


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown table lines with the columns of ``HEADER``."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return lines + ["| " + " | ".join(str(r.get(c, "")) for c in HEADER) + " |" for r in rows]


# ---- GPU mode: compile through the dispatcher ------------------------------------------------------------


def run_ops(m: int, n: int, k: int) -> None:
    """Call every Triton-backed op once on CUDA tensors so that its kernels get compiled."""
    import numpy as np
    import torch
    from dllm_kernels import dispatch
    from dllm_kernels import reference as ref

    dev = "cuda"
    rng = np.random.default_rng(0)
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    for bits in (2, 3, 4, 8):
        codes = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(n, k)).astype(np.int8)
        packed = torch.from_numpy(ref.pack(codes, bits)).to(dev)
        scale = torch.rand(n, k // 128, device=dev, dtype=torch.bfloat16)
        dispatch.wna16_gemm(x, packed, scale, None, bits, 128)
    xq, xs, _ = dispatch.quantize_per_token(x, 8)
    wq = torch.randint(-128, 128, (n, k), device=dev, dtype=torch.int8)
    ws = torch.rand(n, device=dev)
    dispatch.int8_gemm(xq, xs, wq, ws, out_dtype=torch.bfloat16)
    w4 = torch.from_numpy(ref.pack(rng.integers(-8, 8, size=(n, k)).astype(np.int8), 4)).to(dev)
    dispatch.w4a8_gemm(xq, xs, w4, ws, out_dtype=torch.bfloat16)
    dispatch.hadamard_quantize_per_token(x, 8)
    dispatch.hadamard_transform(x)
    torch.cuda.synchronize()


def gpu_rows(m: int, n: int, k: int, dump: Path | None) -> list[dict[str, Any]]:
    cache_dir = Path(tempfile.mkdtemp(prefix="dllm-sass-"))
    os.environ["TRITON_CACHE_DIR"] = str(cache_dir)  # before any kernel is compiled
    run_ops(m, n, k)
    rows = []
    for cubin in sorted(cache_dir.rglob("*.cubin")):
        meta_path = cubin.with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        rows.append(
            {
                "kernel": cubin.stem,
                "variant": f"M={m} N={n} K={k}",
                "warps": meta.get("num_warps", "?"),
                "stages": meta.get("num_stages", "?"),
                **analyse(cubin, dump),
            }
        )
    shutil.rmtree(cache_dir, ignore_errors=True)
    return rows


# ---- offline mode: ahead-of-time compilation of fixed specializations -------------------------------------

_ALIGNED_INTS = {"K", "N", "KW", "NG", "group_size"}  # multiples of 16 at model shapes


def _offline_specs() -> list[tuple[str, str, Any, dict[str, str], dict[str, Any], int, int]]:
    """(kernel, variant, jit function, signature, constexprs, warps, stages) to compile.

    Reaches into the kernel modules' private jit functions on purpose: this is a developer tool.
    """
    import torch
    from dllm_kernels.triton import hadamard, int_gemm, quant, wna16

    specs = []
    wna16_sig = {
        "x_ptr": "*bf16", "w_ptr": "*u8", "s_ptr": "*bf16", "z_ptr": "*bf16", "out_ptr": "*bf16",
        "M": "i32", "N": "i32", "K": "i32", "group_size": "i32", "KW": "i32", "NG": "i32", "M_BUCKET": "i32",
    }  # fmt: skip
    for bits in (4, 3, 2, 8):
        for bm, bn, bk, warps, stages in ((128, 128, 64, 8, 3), (16, 64, 128, 4, 4)):
            consts = {"BITS": bits, "HAS_ZERO": False, "SCALE_ROW": True, "DOT_FP32": False,
                      "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}  # fmt: skip
            specs.append(("wna16 bf16", f"W{bits} {bm}x{bn}x{bk}", wna16._wna16_kernel.fn, wna16_sig, consts,
                          warps, stages))  # fmt: skip
    for w_int4 in (False, True):
        sig = {
            "x_ptr": "*i8",
            "xs_ptr": "*fp32",
            "w_ptr": "*u8" if w_int4 else "*i8",
            "ws_ptr": "*fp32",
            "out_ptr": "*bf16",
            "M": "i32",
            "N": "i32",
            "K": "i32",
            "KW": "i32",
            "M_BUCKET": "i32",
        }
        for bm, bn, bk, warps, stages in ((128, 128, 128, 8, 3), (32, 64, 128, 4, 4)):
            consts = {"W_INT4": w_int4, "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}
            name = "w4a8/w4a4" if w_int4 else "int8_gemm"
            specs.append((name, f"{bm}x{bn}x{bk}", int_gemm._int_gemm_kernel, sig, consts, warps, stages))
    qsig = {"x_ptr": "*bf16", "codes_ptr": "*i8", "scale_ptr": "*fp32", "zero_ptr": "*i32", "M": "i32",
            "K": "i32", "clip_ratio": "fp32", "M_BUCKET": "i32"}  # fmt: skip
    consts = {"BITS": 8, "SYMMETRIC": True, "BLOCK_M": 1, "BLOCK_K": 1024}
    specs.append(("quantize_per_token", "1x1024", quant._quant_rows_kernel, qsig, consts, 4, 2))
    for n in (128, 3584, 4096, 12288, 18944):
        _, _, meta = hadamard._launch_meta(n, torch.bfloat16)
        warps = meta.pop("num_warps")
        sig = {
            "x_ptr": "*bf16",
            "at_ptr": "*fp32",
            "b_ptr": "*fp32",
            "codes_ptr": "*i8",
            "scale_ptr": "*fp32",
            "zero_ptr": "*i32",
            "N": "i32",
            "R": "i32",
            "C": "i32",
            "norm": "fp32",
            "clip_ratio": "fp32",
        }
        consts = {**meta, "BITS": 8, "SYMMETRIC": True}
        specs.append(("hadamard_quant", f"n={n}", hadamard._hadamard_quant_kernel, sig, consts, warps, 2))
    return specs


def offline_rows(arch: int, dump: Path | None) -> list[dict[str, Any]]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    rows = []
    work = Path(tempfile.mkdtemp(prefix="dllm-sass-"))
    for kernel, variant, fn, sig, consts, warps, stages in _offline_specs():
        full_sig = {**sig, **dict.fromkeys(consts, "constexpr")}
        attrs = {
            (i,): [["tt.divisibility", 16]]
            for i, (name, ty) in enumerate(full_sig.items())
            if ty.startswith("*") or name in _ALIGNED_INTS
        }
        src = ASTSource(fn=fn, signature=full_sig, constexprs=consts, attrs=attrs)
        compiled = triton.compile(
            src, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps, "num_stages": stages}
        )
        cubin = work / f"{compiled.name}-{len(rows)}" / f"{compiled.name}.cubin"
        cubin.parent.mkdir()
        cubin.write_bytes(compiled.asm["cubin"])
        row = {"kernel": kernel, "variant": variant, "warps": warps, "stages": stages}
        rows.append({**row, **analyse(cubin, dump)})
    shutil.rmtree(work, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, default=1024, help="GPU mode: tokens (rows of x)")
    parser.add_argument("--n", type=int, default=4096, help="GPU mode: output features")
    parser.add_argument("--k", type=int, default=4096, help="GPU mode: input features (multiple of 128)")
    parser.add_argument("--offline", type=int, metavar="CC", help="compile offline for compute capability CC")
    parser.add_argument("--dump", type=Path, default=None, help="folder to write the full .sass listings to")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("unset TRITON_INTERPRET: the interpreter compiles nothing")
    if args.dump is not None:
        args.dump.mkdir(parents=True, exist_ok=True)
    if args.offline is not None:
        print(f"offline compilation for sm_{args.offline}")
        rows = offline_rows(args.offline, args.dump)
    else:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("GPU mode needs a CUDA GPU; use --offline 90 to compile without one")
        print(f"GPU: {torch.cuda.get_device_name()}")
        rows = gpu_rows(args.m, args.n, args.k, args.dump)
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

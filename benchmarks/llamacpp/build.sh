#!/usr/bin/env bash
# Build llama.cpp's llama-diffusion-cli, llama-quantize, llama-imatrix, plus llama-eval-callback and
# llama-tokenize for checks (CPU only),
# from the llama.cpp source vendored inside the llama-cpp-python source distribution on PyPI.
#
# Usage: benchmarks/llamacpp/build.sh [BUILD_ROOT]   (default: ~/.cache/dllmq/llama.cpp)
# Env:   LLAMA_CPP_PYTHON_VERSION (default 0.3.36, the first checked to vendor examples/diffusion),
#        JOBS (default 2), NICE (default 10), GGML_AMX (default OFF; ON keeps -march=native on CPUs with AMX).
# Writes BUILD_ROOT/{sdist,src,build,venv}; binaries in BUILD_ROOT/build/bin; BUILD_ROOT/venv is the Python
# environment of llama.cpp's converter (torch, transformers, the vendored gguf-py); BUILD_ROOT/VERSION records the
# llama-cpp-python version, the sdist's sha256 and the llama.cpp commit its CHANGELOG names.
# Nothing of llama.cpp enters the repository.
set -euo pipefail

ROOT="${1:-$HOME/.cache/dllmq/llama.cpp}"
PYVER="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
JOBS="${JOBS:-2}"
NICE="${NICE:-10}"
mkdir -p "$ROOT/sdist" "$ROOT/src"

SDIST="$ROOT/sdist/llama_cpp_python-$PYVER.tar.gz"
if [[ ! -f "$SDIST" ]]; then
  python3 -m pip download --no-binary :all: --no-deps "llama-cpp-python==$PYVER" -d "$ROOT/sdist"
fi
SRC="$ROOT/src/llama_cpp_python-$PYVER"
if [[ ! -d "$SRC" ]]; then
  tar -xzf "$SDIST" -C "$ROOT/src"
fi
LLAMA="$SRC/vendor/llama.cpp"
if [[ ! -f "$LLAMA/examples/diffusion/diffusion-cli.cpp" ]]; then
  echo "llama-cpp-python $PYVER vendors a llama.cpp without examples/diffusion; set LLAMA_CPP_PYTHON_VERSION to a newer release" >&2
  exit 1
fi

# One fix to llama.cpp's source, applied here and recorded in VERSION: llama-diffusion-cli prints its result
# through llama.cpp's asynchronous logger, whose singleton is deliberately never destroyed (common/log.cpp), and
# returns without common_log_flush(), which log.h says a program must call before exit; on a busy CPU the
# process then often exits before the timing line and the generated text are written. The patch adds that
# call after llama_backend_free(); nothing else changes.
CLI="$LLAMA/examples/diffusion/diffusion-cli.cpp"
PATCH="none"
if grep -q "common_log_flush" "$CLI"; then
  PATCH="diffusion-cli.cpp calls common_log_flush before exit"
elif grep -q "^    llama_backend_free();$" "$CLI"; then
  perl -0pi -e 's/(\n    llama_backend_free\(\);\n)/$1    common_log_flush(common_log_main()); \/\/ dllmq build.sh: flush the log before exit\n/' "$CLI"
  PATCH="diffusion-cli.cpp calls common_log_flush before exit"
fi

COMMIT="$(grep -m1 -o 'ggml-org/llama.cpp@[0-9a-f]*' "$SRC/CHANGELOG.md" | cut -d@ -f2 || true)"
{
  echo "llama-cpp-python=$PYVER"
  echo "sdist_sha256=$(sha256sum "$SDIST" | cut -d' ' -f1)"
  echo "llama.cpp_commit=${COMMIT:-unknown}"
  echo "patch=$PATCH"
  echo "compiler=$(c++ --version | head -1)"
} > "$ROOT/VERSION"

# GIT_EXECUTABLE points at a missing program so llama.cpp's build-info does not read an unrelated
# enclosing repository; the commit is the one recorded in VERSION.
# GGML_NATIVE compiles for this CPU (-march=native). Where the CPU reports AMX, that includes ggml's AMX tile
# kernels (Q4_0 / Q8_0), which die with an illegal instruction where the kernel does not grant the process AMX
# state (seen on a VM whose Xeon lists amx_tile: llama-diffusion-cli exited with SIGILL at tileloadd), and
# -march=native cannot be told to leave them out. So on such a CPU, unless GGML_AMX=ON, the build names the
# CPU's other x86 features one by one (from /proc/cpuinfo) instead of GGML_NATIVE.
ISA=(-DGGML_NATIVE=ON)
if [[ "${GGML_AMX:-OFF}" != "ON" ]] && grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
  flag() { grep -qw "$1" /proc/cpuinfo && echo ON || echo OFF; }
  ISA=(-DGGML_NATIVE=OFF -DGGML_AVX="$(flag avx)" -DGGML_AVX2="$(flag avx2)" -DGGML_FMA="$(flag fma)"
       -DGGML_F16C="$(flag f16c)" -DGGML_BMI2="$(flag bmi2)" -DGGML_AVX_VNNI="$(flag avx_vnni)"
       -DGGML_AVX512="$(flag avx512f)" -DGGML_AVX512_VBMI="$(flag avx512vbmi)"
       -DGGML_AVX512_VNNI="$(flag avx512_vnni)" -DGGML_AVX512_BF16="$(flag avx512_bf16)")
fi
echo "isa=${ISA[*]}" >> "$ROOT/VERSION"
nice -n "$NICE" cmake -S "$LLAMA" -B "$ROOT/build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release "${ISA[@]}" -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DBUILD_SHARED_LIBS=OFF -DGIT_EXECUTABLE=/nonexistent
nice -n "$NICE" cmake --build "$ROOT/build" -j "$JOBS" \
  --target llama-diffusion-cli llama-quantize llama-imatrix llama-eval-callback llama-tokenize

# The converter's environment (a throwaway venv, never the repository's): convert_hf_to_gguf.py imports torch,
# transformers (AutoTokenizer) and gguf; PYTHON picks the interpreter (default python3.11).
if [[ ! -x "$ROOT/venv/bin/python" ]]; then
  "${PYTHON:-python3.11}" -m venv "$ROOT/venv"
  nice -n "$NICE" "$ROOT/venv/bin/python" -m pip install --quiet torch numpy safetensors sentencepiece protobuf \
    "transformers>=4.45,<5" "$LLAMA/gguf-py"
fi
cat "$ROOT/VERSION"
ls -la "$ROOT/build/bin"

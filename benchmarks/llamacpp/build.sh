#!/usr/bin/env bash
# Build llama.cpp's llama-diffusion-cli, llama-quantize, llama-imatrix, plus llama-eval-callback and
# llama-tokenize for checks (CPU only),
# from the llama.cpp source vendored inside the llama-cpp-python source distribution on PyPI.
#
# Usage: benchmarks/llamacpp/build.sh [BUILD_ROOT]   (default: ~/.cache/dllmq/llama.cpp)
# Env:   LLAMA_CPP_PYTHON_VERSION (default 0.3.36, the first checked to vendor examples/diffusion),
#        JOBS (default 2), NICE (default 10).
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

COMMIT="$(grep -m1 -o 'ggml-org/llama.cpp@[0-9a-f]*' "$SRC/CHANGELOG.md" | cut -d@ -f2 || true)"
{
  echo "llama-cpp-python=$PYVER"
  echo "sdist_sha256=$(sha256sum "$SDIST" | cut -d' ' -f1)"
  echo "llama.cpp_commit=${COMMIT:-unknown}"
  echo "compiler=$(c++ --version | head -1)"
} > "$ROOT/VERSION"

# GIT_EXECUTABLE points at a missing program so llama.cpp's build-info does not read an unrelated
# enclosing repository; the commit is the one recorded in VERSION.
nice -n "$NICE" cmake -S "$LLAMA" -B "$ROOT/build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
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

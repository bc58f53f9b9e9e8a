"""llama.cpp as a runtime for dllmq's models: stage a model for llama.cpp's converter, build the
``llama-diffusion-cli`` command that reproduces dllmq's arithmetic evaluation, parse its output, and run the
opt-in benchmark (``python -m dllm_bench.llamacpp``; see benchmarks/llamacpp/README.md).

Nothing here needs llama.cpp to import; the benchmark needs the binaries that benchmarks/llamacpp/build.sh
builds.
"""

#!/bin/sh
# Regenerates kernels/testdata/ggml_vectors.txt: fixed inputs run through
# llama.cpp's own ggml code (reference quantizers, K-quant dequantizers, f16 /
# bf16 row conversions), called via Python ctypes in the prebuilt
# libggml-base.so that npm ships for node-llama-cpp 3.22.1 (llama.cpp release
# v0.5.0, commit de3ff81; a baseline x86-64 build without FMA/AVX, checked
# with objdump). Needs Node.js/npm (registry access) and /usr/bin/python3 with
# numpy. Nothing from ggml is copied into Shoal: only its outputs are kept.
#
# Usage: kernels/testdata/make_ggml_vectors.sh   (from anywhere; ~10 s)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=${TMPDIR:-/tmp}/shoal-ggml-vectors
mkdir -p "$work"
if [ ! -f "$work/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so" ]; then
  (cd "$work" && npm install --silent --no-save --omit=optional --ignore-scripts \
    node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1)
fi
/usr/bin/python3 "$here/make_ggml_vectors.py" \
  "$work/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so" \
  "$here/ggml_vectors.txt"

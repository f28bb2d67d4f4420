#!/bin/sh
# Runs the GGUF libFuzzer target for a bounded time on a scratch corpus seeded
# from engine/testdata/gguf_seed (small valid files written by gguf_writer).
# Usage: engine/gguf_fuzz.sh FUZZ_BINARY SECONDS
set -eu
here=$(cd "$(dirname "$0")" && pwd)
corpus=$(mktemp -d "${TMPDIR:-/tmp}/shoal-gguf-corpus.XXXXXX")
trap 'rm -rf "$corpus"' EXIT
cp "$here"/testdata/gguf_seed/*.gguf "$corpus"/
exec "$1" -max_total_time="$2" -max_len=4096 -print_final_stats=1 "$corpus"

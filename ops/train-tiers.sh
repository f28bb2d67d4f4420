#!/usr/bin/env bash
# Trains Shoal's tier models on Debian's package descriptions (issue 20):
#   1. ops/make-prompts.sh   the descriptions (prompts.jsonl), if missing
#   2. ops/train/corpus.py   train / validation / evaluation split by package name
#   3. ops/train/tokenizer.py  SentencePiece BPE vocabulary on the train split
#                            (or models/tokenizer.model, when committed)
#   4. ops/train/train.py    each [[tiers]] model of ops/train/tiers.toml in turn
#   5. export                each finished tier into models/ for serving:
#        models/<tier>.f16.gguf   ops/train/export.py (F16 matrices, F32 norms)
#        models/<tier>.q8_0.gguf  `shoal quantize` from the F16 file (ggml's
#                                 Q8_0 blocks, byte-identical to its reference;
#                                 output.weight stays F16: with 4K-token
#                                 vocabularies the logits' rounding decides
#                                 near-ties, and it costs < 1.3 MB)
#      both recorded in models/manifest.json (sha256, parameters, tokens
#      seen, validation perplexity, training time); a tier whose training
#      finished after its GGUF was written is exported again. The validation
#      and evaluation splits go with them (models/{valid,eval}.jsonl). Builds
#      Shoal (ops/build.sh) if the binary is missing.
# Every step is skipped when its output exists, and training resumes from
# its last checkpoint, so the script can be stopped at any moment and run
# again (e.g. under nohup across sessions). Progress: one line per
# log_every steps (loss, tokens/s, ETA) on stderr and in
# <out>/<tier>/train.log; the family's budget is about 3 hours on 2 cores.
# Hyper-parameters: ops/train/tiers.toml (the one place they are set).
# Usage: ops/train-tiers.sh [--out DIR] [--corpus DIR] [--tier NAME]... [--export-only]
#   --out DIR      checkpoints and results (default train-out)
#   --corpus DIR   the split and the tokenizer (default corpus)
#   --tier NAME    train only these tiers (repeatable; default: all, in order)
#   --export-only  skip steps 1-4: export the tiers that have finished
set -euo pipefail
cd "$(dirname "$0")/.."
out=train-out corpus=corpus tiers=() export_only=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --corpus) corpus=$2; shift 2 ;;
    --tier) tiers+=("$2"); shift 2 ;;
    --export-only) export_only=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "train-tiers.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
ops/install-deps.sh --train # export.py needs PyTorch and SentencePiece too
py=/usr/bin/python3
if [[ ${#tiers[@]} -eq 0 ]]; then
  mapfile -t tiers < <($py -c 'import tomllib; [print(t["name"]) for t in tomllib.load(open("ops/train/tiers.toml", "rb"))["tiers"]]')
fi

if [[ $export_only == 0 ]]; then
  [[ -s prompts.jsonl ]] && grep -q '"long":' <(head -1 prompts.jsonl) || ops/make-prompts.sh
  [[ -s $corpus/train.jsonl ]] || $py ops/train/corpus.py prompts.jsonl "$corpus"
  # The committed vocabulary (models/tokenizer.model) is reused when there is
  # one, so models trained in different sessions share it (apt's package lists
  # change over time, and with them a freshly trained vocabulary).
  if [[ ! -s $corpus/tokenizer.model ]]; then
    if [[ -s models/tokenizer.model ]]; then
      cp models/tokenizer.model "$corpus/tokenizer.model"
    else
      $py ops/train/tokenizer.py "$corpus"
    fi
  fi
  for t in "${tiers[@]}"; do
    $py ops/train/train.py "$corpus" "$out" "$t"
  done
fi

[[ -x build/node/shoal ]] || ops/build.sh
# The validation and evaluation splits the tiers are tuned and judged on go
# with them (the split is by package name, so no machine's training split
# overlaps them).
for split in valid eval; do
  [[ -s models/$split.jsonl ]] || cp "$corpus/$split.jsonl" "models/$split.jsonl"
done
for t in "${tiers[@]}"; do
  done_json=$out/$t/done.json
  if [[ ! -s $done_json ]]; then
    echo "train-tiers: $t has not finished training; not exported" >&2
    continue
  fi
  f16=models/$t.f16.gguf q8=models/$t.q8_0.gguf
  if [[ ! -s $f16 || $done_json -nt $f16 ]]; then
    $py ops/train/export.py "$corpus" "$out" "$t" "$f16" --type f16 --manifest models/manifest.json
  fi
  if [[ ! -s $q8 || $f16 -nt $q8 ]]; then
    build/node/shoal quantize "$f16" "$q8" --type q8_0 --output-type f16
    $py ops/train/export.py "$corpus" "$out" "$t" "$q8" --type q8_0 --existing \
      --manifest models/manifest.json
  fi
done

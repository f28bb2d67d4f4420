#!/usr/bin/env bash
# Trains Shoal's tier models on Debian's package descriptions (issue 20):
#   1. ops/make-prompts.sh   the descriptions (prompts.jsonl), if missing
#   2. ops/train/corpus.py   train / validation / evaluation split by package name
#   3. ops/train/tokenizer.py  SentencePiece BPE vocabulary on the train split
#                            (or models/tokenizer.model, when committed)
#   4. ops/train/train.py    each [[tiers]] model of ops/train/tiers.toml in turn
# Every step is skipped when its output exists, and training resumes from
# its last checkpoint, so the script can be stopped at any moment and run
# again (e.g. under nohup across sessions). Progress: one line per
# log_every steps (loss, tokens/s, ETA) on stderr and in
# <out>/<tier>/train.log; the family's budget is about 3 hours on 2 cores.
# Hyper-parameters: ops/train/tiers.toml (the one place they are set).
# Usage: ops/train-tiers.sh [--out DIR] [--corpus DIR] [--tier NAME]...
#   --out DIR      checkpoints and results (default train-out)
#   --corpus DIR   the split and the tokenizer (default corpus)
#   --tier NAME    train only these tiers (repeatable; default: all, in order)
set -euo pipefail
cd "$(dirname "$0")/.."
out=train-out corpus=corpus tiers=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --corpus) corpus=$2; shift 2 ;;
    --tier) tiers+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "train-tiers.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
ops/install-deps.sh --train
py=/usr/bin/python3
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
if [[ ${#tiers[@]} -eq 0 ]]; then
  mapfile -t tiers < <($py -c 'import tomllib; [print(t["name"]) for t in tomllib.load(open("ops/train/tiers.toml", "rb"))["tiers"]]')
fi
for t in "${tiers[@]}"; do
  $py ops/train/train.py "$corpus" "$out" "$t"
done

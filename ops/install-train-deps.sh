#!/usr/bin/env bash
# Installs what training the tier models needs (ops/train-tiers.sh): Debian's
# PyTorch (CPU), SentencePiece and OpenBLAS. Without libopenblas0-pthread,
# PyTorch 1.13 runs on the generic reference BLAS, 2.5-7x slower (STACK.md);
# installing it switches the libblas.so.3 alternative to OpenBLAS.
# Idempotent: prints nothing and exits 0 when everything is installed.
# Usage: ops/install-train-deps.sh     (as root, or with sudo available)
set -euo pipefail
packages=(python3-torch python3-sentencepiece python3-numpy libopenblas0-pthread)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "install-train-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-train-deps: done"

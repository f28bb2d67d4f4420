#!/usr/bin/env bash
# The trained tier models (models/, issue 20): one node serves every GGUF of
# models/manifest.json (each tier in F16 and Q8_0) and this prints
#   - per file: non-embedding parameters, training tokens and time, the
#     validation perplexity PyTorch measured at the end of training, and the
#     validation perplexity measured through Shoal's own API: exp of the mean
#     negative log-likelihood of every token after <s> of each validation
#     document as the tier was trained on it (ChatML: user = "name: synopsis",
#     assistant = the long description), from /v1/completions with echo,
#     logprobs 0 and max_tokens 0 (documents longer than the 256-token
#     context are cut at a word boundary);
#   - samples: the greedy answer of every tier (Q8_0) to a few evaluation
#     prompts (/v1/chat/completions, temperature 0), next to the reference.
# Usage: bench/tiers.sh [--build DIR] [--docs N] [--samples N]
#   --docs N     validation documents scored (default 500; 0 = all 3,236)
#   --samples N  evaluation prompts answered (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
build=build docs=500 samples=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --docs) docs=$2; shift 2 ;;
    --samples) samples=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "tiers.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
prompts=models/valid.jsonl
source bench/node.sh
/usr/bin/python3 - >"$dir/node.toml" <<'EOF'
import json
for m in sorted(json.load(open("models/manifest.json"))["models"],
                key=lambda m: (m["parameters"], m["type"])):
    print(f'[[tiers]]\nname = "{m["file"].removesuffix(".gguf")}"\nmodel = "models/{m["file"]}"\n'
          f'params_m = {m["parameters"] / 1e6:.3f}\nn_ctx = 256\nthreads = 1\n')
EOF
start_node tiers --config "$dir/node.toml" --set memory.budget_mb=2048
/usr/bin/python3 - "$node_url" "$docs" "$samples" <<'EOF'
import json, math, sys, urllib.request, urllib.error

url, n_docs, n_samples = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
manifest = sorted(json.load(open("models/manifest.json"))["models"],
                  key=lambda m: (m["parameters"], m["type"]))


def post(path, body):
    req = urllib.request.Request(url + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return 200, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def document(d, reference):
    return (f"<|im_start|>user\n{d['prompt']}<|im_end|>\n<|im_start|>assistant\n"
            f"{reference}<|im_end|>")


def nll(model, d):
    """Sum of -log p and token count over the document's tokens after <s>."""
    ref = d["reference"]
    while True:
        status, r = post("/v1/completions", {"model": model, "prompt": document(d, ref),
                                             "echo": True, "logprobs": 0, "max_tokens": 0})
        if status == 200:
            lp = [x for x in r["choices"][0]["logprobs"]["token_logprobs"] if x is not None]
            return -sum(lp), len(lp)
        if r["error"].get("code") != "context_length_exceeded" or not ref:
            raise SystemExit(f"tiers.sh: {model}: {r['error']['message']}")
        ref = ref[: int(len(ref) * 0.75)].rsplit(" ", 1)[0]


docs = [json.loads(line) for line in open("models/valid.jsonl")]
if n_docs:
    docs = docs[:n_docs]
print(f"## Trained tiers: validation perplexity ({len(docs)} validation documents)\n")
print("| file | non-embedding parameters | training tokens | training time | "
      "perplexity (PyTorch, end of training) | perplexity through Shoal |")
print("|---|---|---|---|---|---|")
for m in manifest:
    model = m["file"].removesuffix(".gguf")
    total, count = 0.0, 0
    for d in docs:
        s, n = nll(model, d)
        total, count = total + s, count + n
    torch_ppl = m.get("validation_perplexity")
    print(f"| {m['file']} | {m['non_embedding_parameters'] / 1e6:.2f}M | "
          f"{m['tokens_seen'] / 1e6:.1f}M | {m['training_seconds'] / 60:.0f} min | "
          f"{torch_ppl if torch_ppl else '—'} | {math.exp(total / count):.3f} |", flush=True)

evals = [json.loads(line) for line in open("models/eval.jsonl")][:n_samples]
print(f"\n## Greedy answers to evaluation prompts (Q8_0, temperature 0)\n")
for d in evals:
    print(f"**{d['prompt']}**\n\n- reference: {d['reference'][:300]}")
    for m in manifest:
        if m["type"] != "q8_0":
            continue
        status, r = post("/v1/chat/completions",
                         {"model": m["file"].removesuffix(".gguf"), "temperature": 0,
                          "messages": [{"role": "user", "content": d["prompt"]}]})
        text = r["choices"][0]["message"]["content"] if status == 200 else r["error"]["message"]
        print(f"- {m['tier']}: {text[:300]}")
    print()
EOF

// Peer side of the logits check: runs llama.cpp (npm node-llama-cpp, CPU,
// 1 thread, no flash attention unless asked) on a GGUF and writes the raw
// logits of every position of a token sequence as little-endian f32
// [n_tokens][n_vocab].
//
// Usage: node llama_logits.mjs MODEL.gguf TOKENS OUT.bin [KV_TYPE [FA]]
//   TOKENS   comma-separated token ids (evaluated as given: no BOS added)
//   KV_TYPE  KV cache type for keys and values: F32 (default), F16, Q8_0 or
//            Q4_0 (ggml type names; a quantized V cache needs FA on)
//   FA       flash attention: off (default) or on
// Finds node-llama-cpp in $SHOAL_PEER_DIR (default ~/.cache/shoal/peer),
// installed there by ops/install-peer.sh. Prints "n_tokens n_vocab".
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { homedir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const peerDir = process.env.SHOAL_PEER_DIR
  ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "shoal", "peer");
const require = createRequire(join(peerDir, "node_modules", "x.js"));
const { getLlama } = await import(pathToFileURL(require.resolve("node-llama-cpp")).href);

const [model, tokenList, out, kvType = "F32", fa = "off"] = process.argv.slice(2);
const usage = "usage: node llama_logits.mjs MODEL.gguf TOKENS OUT.bin [F32|F16|Q8_0|Q4_0 [off|on]]";
if (!model || !tokenList || !out) {
  console.error(usage);
  process.exit(2);
}
if (!["F32", "F16", "Q8_0", "Q4_0"].includes(kvType)) {
  console.error(`unknown KV cache type '${kvType}'; ${usage}`);
  process.exit(2);
}
if (fa !== "on" && fa !== "off") {
  console.error(`flash attention must be 'on' or 'off', not '${fa}'; ${usage}`);
  process.exit(2);
}
const tokens = tokenList.split(",").map(Number);
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const m = await llama.loadModel({ modelPath: model, gpuLayers: 0 });
const ctx = await m.createContext({
  contextSize: Math.max(256, tokens.length + 16),
  batchSize: Math.max(16, tokens.length),
  threads: 1,
  flashAttention: fa === "on",
  experimentalKvCacheKeyType: kvType,
  experimentalKvCacheValueType: kvType,
});
const seq = ctx.getSequence();
const res = await seq.controlledEvaluate(
  tokens.map((t) => [t, { generateNext: { logits: true } }]));
// Each result's next.logits is a Map token id -> logit over the whole vocabulary.
const nVocab = m.tokens.size ?? res[0]?.next?.logits?.size;
const buf = Buffer.alloc(tokens.length * nVocab * 4);
for (let i = 0; i < tokens.length; ++i) {
  const l = res[i]?.next?.logits;
  if (!(l instanceof Map) || l.size !== nVocab) {
    console.error(`peer gave no full logits for position ${i}`);
    process.exit(1);
  }
  for (const [tok, v] of l) buf.writeFloatLE(v, (i * nVocab + tok) * 4);
}
writeFileSync(out, buf);
console.log(`${tokens.length} ${nVocab}`);
await ctx.dispose();
await m.dispose();

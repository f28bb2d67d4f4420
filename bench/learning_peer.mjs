// MicroLoRA side by side: @ruvector/learning-wasm's WasmMicroLoRA (d = 256,
// rank 2, zero-copy API: write the input at get_input_ptr(), call forward()
// or adapt(), read get_output_ptr()) measured here, next to Shoal's kernels
// measured by shoal_kernels_bench in the same run (its JSON output).
//
// Statistic, both sides: calls are timed in batches (default 1000 calls per
// batch, beating the timer's resolution); per-call time = batch time / calls;
// median and p99 (nearest rank) over the batches (default 300).
//
// Usage (bench/learning_peer.sh does all of this):
//   node bench/learning_peer.mjs --pkg DIR --ours FILE.json [--batch N] [--batches N]
//   DIR = node_modules/@ruvector/learning-wasm, FILE.json = shoal_kernels_bench
//   --benchmark_filter=MicroLoRA --benchmark_out=FILE.json --benchmark_out_format=json

import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { arg, measure as timeCalls } from "./peer_timing.mjs";

const pkgDir = arg("pkg");
const oursFile = arg("ours");
const batch = Number(arg("batch", 1000));
const batches = Number(arg("batches", 300));
if (!pkgDir || !oursFile) {
  console.error("usage: node learning_peer.mjs --pkg DIR --ours FILE.json [--batch N] [--batches N]");
  process.exit(2);
}

// ---- the peer -------------------------------------------------------------

const measure = (call, between) => timeCalls(call, { batch, batches, between });

const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"), "utf8"));
const mod = await import(pathToFileURL(path.join(pkgDir, "ruvector_learning_wasm.js")).href);
const wasm = mod.initSync({ module: fs.readFileSync(path.join(pkgDir, "ruvector_learning_wasm_bg.wasm")) });

const d = 256;
const lora = new mod.WasmMicroLoRA(d, 0.1, 0.01);
if (lora.dim() !== d) throw new Error(`WasmMicroLoRA dim ${lora.dim()} != ${d}`);
// Views are re-created after calls in case the wasm memory grew.
const input = () => new Float32Array(wasm.memory.buffer, lora.get_input_ptr(), d);
const output = () => new Float32Array(wasm.memory.buffer, lora.get_output_ptr(), d);
{
  const x = input();
  let s = 12345;
  for (let i = 0; i < d; ++i) {
    s = (s * 1103515245 + 12345) >>> 0;
    x[i] = (s / 2 ** 32) * 2 - 1;
  }
}


const peer = {
  forward: measure(() => lora.forward()),
  // adapt() and adapt_with_reward() take the gradient from the input buffer;
  // reset() (untimed) between batches keeps B from growing without bound.
  update: measure(() => lora.adapt(), () => lora.reset()),
  update_reward: measure(() => lora.adapt_with_reward(1.0), () => lora.reset()),
};
if (!Number.isFinite(output()[0])) throw new Error("peer output is not finite");

// ---- ours (Google Benchmark JSON) -------------------------------------------

const unitNs = { ns: 1, us: 1e3, ms: 1e6, s: 1e9 };
const gb = JSON.parse(fs.readFileSync(oursFile, "utf8"));
const ours = new Map(); // "MicroLoRA_forward/avx512/d256_r2" -> {median, p99}
for (const b of gb.benchmarks) {
  if (b.run_type !== "aggregate" || !["median", "p99"].includes(b.aggregate_name)) continue;
  const name = b.run_name.split("/").slice(0, 3).join("/"); // drop /iterations:…/repeats:…
  const e = ours.get(name) ?? {};
  e[b.aggregate_name] = b.real_time * unitNs[b.time_unit];
  ours.set(name, e);
}
if (ours.size === 0) throw new Error(`no MicroLoRA aggregates in ${oursFile}`);

// ---- one table ------------------------------------------------------------

const f = (ns) => (ns >= 1000 ? `${(ns / 1000).toFixed(2)} µs` : `${ns.toFixed(1)} ns`);
const rows = [];
for (const [op, peerOp, peerName] of [
  ["forward", peer.forward, "forward()"],
  ["update", peer.update, "adapt()"],
  ["update", peer.update_reward, "adapt_with_reward(1)"],
]) {
  rows.push([`peer ${peerName}`, "r=2", f(peerOp.median), f(peerOp.p99), "1.0×"]);
  for (const [name, m] of ours) {
    const [kernel, variant, size] = name.split("/");
    if (kernel !== `MicroLoRA_${op}` || size !== "d256_r2") continue;
    const ratio = peerOp.median / m.median;
    rows.push([`shoal ${op} ${variant}`, "r=2", f(m.median), f(m.p99), `${ratio.toFixed(1)}×`]);
  }
}
const head = ["MicroLoRA d=256", "rank", "median/call", "p99/call", "peer / ours (median)"];
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
console.log(`@ruvector/learning-wasm ${pkg.version} (node ${process.version}) vs shoal_kernels_bench;`);
console.log(`${batches} batches × ${batch} calls each side, per-call time = batch / ${batch}.`);
console.log("");
console.log(line(head));
console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
for (const r of rows) console.log(line(r));
console.log("");
console.log("Shoal, other ranks (active variant is the widest; all variants listed):");
for (const [name, m] of ours)
  if (!name.endsWith("_r2")) console.log(`  ${name.padEnd(32)} median ${f(m.median).padStart(9)}  p99 ${f(m.p99).padStart(9)}`);
console.log("");
console.log("Work per call: shoal update = one SGD step on A AND B along the true");
console.log("gradient (u = Ax, v = Bᵀg, two rank-1 updates); peer adapt() = B only,");
console.log("B += lr·colsum(A)·g/‖g‖ (no x), plus a JS→wasm call and a copy of the input buffer.");

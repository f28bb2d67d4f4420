// SONA learning loops side by side: @ruvector/sona (the RuVector SONA engine,
// native Node binding) measured here, next to Shoal's router v2 measured by
// shoal_router_v2_bench in the same run (its JSON output), against issue 7's
// cost targets: instant loop ≤ 5 µs per request, background training on
// 1,000 trajectories ≤ 20 ms.
//
// Peer, per request (the calls a router makes for one request, in order):
//   id = beginTrajectory(embedding)            384 numbers
//   out = applyMicroLora(embedding)            the adapted embedding, 384
//   addTrajectoryStep(id, out, tierScores, r)  one step: activations = out,
//                                              attention = 4 tier scores
//   setTrajectoryRoute(id, "tier-k")
//   endTrajectory(id, quality)                 the instant loop runs here
// Engine: `new SonaEngine(384)`, i.e. SONA's default configuration with
// hidden_dim = embedding_dim = 384 (the crate's SonaConfig::default()).
// Peer, background: forceLearn() on a fresh engine holding 1,000 trajectories
// recorded with the calls above (recording untimed).
//
// Statistics. Peer instant loop: requests timed in batches (default 200 per
// batch, 300 batches); per-request time = batch time / batch size. Peer
// forceLearn: one call per fresh engine (default 11 engines). Ours: one value
// per Google Benchmark repetition (real time per iteration, averaged by the
// library over that repetition's iterations). Median and p99 are nearest rank
// (value at rank ceil(q·n) of the sorted samples), the same function both
// sides; with fewer than 100 samples p99 is the maximum.
//
// Usage (bench/sona_peer.sh does all of this):
//   node bench/sona_peer.mjs --pkg DIR --ours FILE.json [--batch N] [--batches N] [--learn-runs N]
//   DIR = node_modules/@ruvector/sona; FILE.json = shoal_router_v2_bench
//   --benchmark_repetitions=N --benchmark_out=FILE.json --benchmark_out_format=json

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { arg, measure as timeCalls, summary } from "./peer_timing.mjs";

const pkgDir = arg("pkg");
const oursFile = arg("ours");
const batch = Number(arg("batch", 200));
const batches = Number(arg("batches", 300));
const learnRuns = Number(arg("learn-runs", 11));
if (!pkgDir || !oursFile || batch < 1 || batches < 100 || learnRuns < 9) {
  console.error("usage: node sona_peer.mjs --pkg DIR --ours FILE.json [--batch N] [--batches N>=100] [--learn-runs N>=9]");
  process.exit(2);
}

const dim = 384; // router v2's embedding size
const nTiers = 4;
const nTrain = 1000;

// ---- the peer -------------------------------------------------------------

const require = createRequire(import.meta.url);
const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"), "utf8"));
const { SonaEngine } = require(path.resolve(pkgDir));
const binding = Object.keys(require.cache).find((k) => k.endsWith(".node")) ?? "?";

// 256 unit-norm Gaussian embeddings, tiers and rewards as in router_v2_bench
// (reward 0.5 + 0.1·tier), from a fixed seed; plain arrays, since the binding
// takes Array<number> only (typed arrays are refused).
let seed = 1;
const uniform = () => ((seed = (seed * 1103515245 + 12345) >>> 0) + 0.5) / 2 ** 32;
const requests = Array.from({ length: 256 }, () => {
  const e = Array.from({ length: dim }, () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform()));
  const n = Math.hypot(...e);
  const tier = Math.floor(uniform() * nTiers);
  const scores = Array.from({ length: nTiers }, (_, k) => (k === tier ? 0.7 : 0.1));
  return { embedding: e.map((x) => x / n), tier, route: `tier-${tier}`, scores, reward: 0.5 + 0.1 * tier };
});

const measure = (call, between) => timeCalls(call, { batch, batches, between });
const newEngine = () => new SonaEngine(dim);
let engine = newEngine();
let next = 0; // request index, cycles over `requests`

/// One request's learning work in SONA's API (see the header).
function request(e, i) {
  const r = requests[i % requests.length];
  const id = e.beginTrajectory(r.embedding);
  const out = e.applyMicroLora(r.embedding);
  e.addTrajectoryStep(id, out, r.scores, r.reward);
  e.setTrajectoryRoute(id, r.route);
  e.endTrajectory(id, r.reward);
}


// The trajectory buffer holds 10,000 (default capacity); past that SONA drops
// trajectories. A fresh engine (untimed) before it fills keeps every timed
// request on the normal path.
const rotate = () => {
  const st = JSON.parse(engine.getStats());
  if (st.trajectories_dropped !== 0) throw new Error("peer dropped trajectories");
  if (st.trajectories_buffered + batch > 8000) engine = newEngine();
};
const peerInstant = measure(() => request(engine, next++), rotate);
const peerApply = measure(() => engine.applyMicroLora(requests[next++ % requests.length].embedding));

/// forceLearn() on a fresh engine holding 1,000 recorded trajectories, in ms.
function learnOnce() {
  const e = newEngine();
  for (let i = 0; i < nTrain; ++i) request(e, i);
  const buffered = JSON.parse(e.getStats()).trajectories_buffered;
  if (buffered !== nTrain) throw new Error(`peer buffered ${buffered} of ${nTrain} trajectories`);
  const t0 = process.hrtime.bigint();
  const status = e.forceLearn();
  const t1 = process.hrtime.bigint();
  if (!status.includes(`${nTrain} trajectories`)) throw new Error(`unexpected forceLearn result: ${status}`);
  return { ms: Number(t1 - t0) / 1e6, status };
}
const learnStatus = learnOnce().status; // warm-up
const peerLearn = summary(Array.from({ length: learnRuns }, () => learnOnce().ms * 1e6)); // ns

// ---- ours (Google Benchmark JSON) -------------------------------------------

const unitNs = { ns: 1, us: 1e3, ms: 1e6, s: 1e9 };
const gb = JSON.parse(fs.readFileSync(oursFile, "utf8"));
const reps = new Map(); // case name -> [real ns per iteration, one per repetition]
const cpu = new Map(); // case name -> [CPU ns per iteration (the benchmark thread's)]
for (const b of gb.benchmarks) {
  if (b.run_type !== "iteration" || b.error_occurred) continue;
  const name = b.run_name.replace(/\/(repeats|iterations|min_time|real_time|manual_time)\b.*$/, "");
  if (!reps.has(name)) (reps.set(name, []), cpu.set(name, []));
  reps.get(name).push(b.real_time * unitNs[b.time_unit]);
  cpu.get(name).push(b.cpu_time * unitNs[b.time_unit]);
}
const cases = (re) => [...reps.keys()].filter((n) => re.test(n)).sort();
let instantCases = cases(/^router_v2\/instant_loop(\/|$)/);
if (instantCases.length === 0) instantCases = cases(/^router_v2\/instant_step(\/|$)/);
const trainCases = [...cases(/^router_v2\/train_1000\/ewc:1$/), ...cases(/^router_v2\/train_1000\/ewc:0$/)];
if (instantCases.length === 0 || trainCases.length === 0)
  throw new Error(`missing cases in ${oursFile}; found: ${[...reps.keys()].join(", ") || "none"}`);

// ---- one table ------------------------------------------------------------

const f = (ns) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : ns >= 1e3 ? `${(ns / 1e3).toFixed(2)} µs` : `${ns.toFixed(0)} ns`);
const meets = (m, target) =>
  m.p99 <= target ? "yes (median and p99)" : m.median <= target ? "median only" : "no";
const rows = [];
for (const [measureName, names, peer, peerName, target] of [
  ["instant loop, per request", instantCases, peerInstant, "5 calls (see below)", 5e3],
  ["background, 1,000 trajectories", trainCases, peerLearn, "forceLearn()", 20e6],
])
  for (const name of names) {
    const m = summary(reps.get(name));
    rows.push([measureName, name, f(m.median), f(m.p99), peerName, f(peer.median), f(peer.p99),
      `${(peer.median / m.median).toFixed(1)}×`, `≤ ${f(target)}`, meets(m, target)]);
  }
const head = ["measure", "shoal case", "shoal median", "shoal p99", "@ruvector/sona", "sona median", "sona p99",
  "sona / shoal (median)", "target", "shoal meets target"];
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
const nReps = Math.min(...[...instantCases, ...trainCases].map((n) => reps.get(n).length));

console.log(`@ruvector/sona ${pkg.version} (${pkg.license}; binding ${path.basename(binding)}; node ${process.version})`);
console.log(`vs shoal_router_v2_bench, one run. Embedding dim ${dim}; SONA config: new SonaEngine(${dim}) (defaults).`);
console.log("");
console.log(line(head));
console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
for (const r of rows) console.log(line(r));
console.log("");
console.log(`Shoal cases used: ${[...instantCases, ...trainCases].join(", ")}`);
console.log(`  (instant loop: router_v2/instant_loop* if present, else router_v2/instant_step*; background:`);
console.log(`  router_v2/train_1000/ewc:1 then ewc:0). Samples: ${nReps} repetitions each, real (wall) time per`);
console.log(`  iteration, as hrtime on the peer side. Shoal's CPU-time medians, for reference: ${[...instantCases, ...trainCases]
  .map((n) => `${n.replace("router_v2/", "")} ${f(summary(cpu.get(n)).median)}`).join(", ")}.`);
console.log(`@ruvector/sona per request: beginTrajectory(emb[${dim}]), applyMicroLora(emb), addTrajectoryStep(id, out[${dim}],`);
console.log(`  tierScores[${nTiers}], reward), setTrajectoryRoute(id, "tier-k"), endTrajectory(id, quality);`);
console.log(`  ${batches} batches × ${batch} requests. applyMicroLora alone: median ${f(peerApply.median)}, p99 ${f(peerApply.p99)}.`);
console.log(`@ruvector/sona background: forceLearn() after 1,000 such requests on a fresh engine, ${learnRuns} runs`);
console.log(`  (+1 warm-up; result: "${learnStatus}").`);
console.log("Median and p99: nearest rank over repetitions (shoal), batches or runs (sona); under 100 samples p99 = max.");

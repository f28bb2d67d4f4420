#!/usr/bin/python3
"""Prints the [[tiers]] of a node config serving the trained tiers of
models/ (their Q8_0 files, cheapest first), each with cost = λ × its mean ms
per answer in a quality table (sim/quality_table.hpp, `shoal quality-table`):
the reference world's costs. Without TABLE and LAMBDA every cost is 0.

Usage: bench/reference_tiers.py [TABLE LAMBDA]
"""
import json
import sys

ms = {}
lam = 0.0
if len(sys.argv) == 3:
    ms = {t["name"]: sum(t["ms"]) / len(t["ms"]) for t in json.load(open(sys.argv[1]))["tiers"]}
    lam = float(sys.argv[2])
elif len(sys.argv) != 1:
    sys.exit(__doc__.strip().splitlines()[-1])
models = [m for m in json.load(open("models/manifest.json"))["models"] if m["type"] == "q8_0"]
for m in sorted(models, key=lambda m: m["parameters"]):
    print(f'[[tiers]]\nname = "{m["tier"]}"\ncost = {lam * ms.get(m["tier"], 0.0):.6f}\n'
          f'params_m = {m["parameters"] / 1e6:.3f}\nmodel = "models/{m["file"]}"\n'
          f'n_ctx = 256\nthreads = 1\nmax_sequences = 8\n')

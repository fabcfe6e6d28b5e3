#!/usr/bin/env python3
"""Turns `softgate bench softmax --json` lines (stdin) into a Markdown table
for BENCHMARKS.md: one row per (op, n, cache, threads), one column pair
(GB/s, ratio to the streaming probe) per algorithm.

    build/softgate bench softmax --json | python3 bench/to_markdown.py
"""
import json
import sys

rows, algos = {}, []
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    key = (r["op"], r["threads"], r["cache"] == "out", r["n"])
    rows.setdefault(key, {})[r["algorithm"]] = r
    if r["algorithm"] not in algos:
        algos.append(r["algorithm"])

head = "| op | threads | cache | n | rows | probe GB/s | " + " | ".join(
    "%s GB/s (ratio)" % a for a in algos) + " |"
print(head)
print("|" + "---|" * (5 + len(algos) + 1))
for key in sorted(rows):
    by = rows[key]
    any_r = next(iter(by.values()))
    cells = []
    for a in algos:
        r = by.get(a)
        cells.append("%.1f (%.2f)" % (r["gbps"], r["ratio"]) if r else "-")
    print("| %s | %d | %s | %d | %d | %.1f | %s |" % (
        key[0], key[1], "out" if key[2] else "in", key[3], any_r["rows"],
        any_r["probe_gbps"], " | ".join(cells)))

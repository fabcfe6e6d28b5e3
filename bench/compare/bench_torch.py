#!/usr/bin/python3
"""PyTorch competitor for the softgate softmax benchmark.

float32 softmax / log_softmax along the last dim of a contiguous [rows x n]
tensor, written into a preallocated output with the out= overload:
torch.softmax(x, -1, out=y) and torch.log_softmax(x, -1, out=y) (the
softmax.int_out / log_softmax.int_out ATen ops, present in torch 1.13). For a
contiguous out tensor of the right shape they call _softmax_out directly, so
no output is allocated per call; we check that y keeps its storage.

Shapes, the sanity check and the timing policy mirror common.h (used by
bench_onednn.c and bench_xnnpack.c). Prints one JSON line per shape:
{"impl": "torch", "op", "n", "rows", "threads", "cache", "gbps"}.
Times include the Python call overhead (a few microseconds): that is what a
PyTorch user pays per call.

usage: /usr/bin/python3 bench_torch.py --threads T --op softmax|log_softmax
       [--quick]
"""
import argparse
import json
import sys
import time

try:
    import torch
except ImportError as e:
    sys.exit("torch: cannot import torch (%s); run with /usr/bin/python3 "
             "and install python3-torch" % e)

MAX_ELEMS = 16777216   # 64 MiB of f32: the "out" (of cache) shapes
IN_ELEMS = 65536       # 256 KiB of f32: the "in" (cache) shapes
FULL_N = [8, 32, 128, 1000, 4096, 32000, 128000, 1048576, 16777216]
QUICK_N = [32, 1000, 32000, 1048576]
TARGET_S = 0.25        # time spent timing each shape
MAX_ITERS = 20000


def shapes(quick):
    ns = QUICK_N if quick else FULL_N
    out = [(n, IN_ELEMS // n, "in") for n in ns if n <= IN_ELEMS]
    out += [(n, max(1, MAX_ELEMS // n), "out") for n in ns]
    return out


def check(op, y):
    """First and last row: softmax rows sum to 1 (log_softmax: exp sums)."""
    rows = [y[0], y[-1]] if y.shape[0] > 1 else [y[0]]
    for i, row in zip([0, y.shape[0] - 1], rows):
        r = row.double()
        if op == "log_softmax":
            if not bool((r <= 1e-4).all()):
                return "log_softmax row %d has values > 0" % i
            r = r.exp()
        elif not bool(((r >= 0) & (r <= 1 + 1e-6)).all()):
            return "softmax row %d has values outside [0, 1]" % i
        s = float(r.sum())
        if not abs(s - 1.0) <= 1e-3:
            return "%s row %d sums to %.9g, not 1" % (op, i, s)
    return None


def time_median(fn, x, y, out_of_cache):
    """The caller already made one checked call. One more warm-up, one
    timed estimate, then enough timed calls to fill TARGET_S."""
    clock = time.perf_counter_ns  # monotonic
    fn(x, -1, out=y)
    t0 = clock()
    fn(x, -1, out=y)
    est = max(clock() - t0, 1) * 1e-9
    iters = min(MAX_ITERS, max(5 if out_of_cache else 10, int(TARGET_S / est)))
    samples = []
    for _ in range(iters):
        t0 = clock()
        fn(x, -1, out=y)
        samples.append(clock() - t0)
    samples.sort()
    mid = iters // 2
    med = samples[mid] if iters % 2 else 0.5 * (samples[mid - 1] + samples[mid])
    return med * 1e-9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--op", choices=["softmax", "log_softmax"], required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.threads < 1:
        ap.error("--threads must be >= 1")

    torch.set_num_threads(args.threads)
    if torch.get_num_threads() != args.threads:
        sys.exit("torch: asked for %d threads, torch uses %d"
                 % (args.threads, torch.get_num_threads()))
    fn = torch.softmax if args.op == "softmax" else torch.log_softmax

    with torch.inference_mode():  # no autograd bookkeeping per call
        g = torch.Generator().manual_seed(42)
        x_all = torch.randn(MAX_ELEMS, generator=g, dtype=torch.float32) * 10
        y_all = torch.zeros(MAX_ELEMS, dtype=torch.float32)
        for n, rows, cache in shapes(args.quick):
            # Contiguous prefixes of the big buffers, as in the C programs.
            x = x_all[: rows * n].view(rows, n)
            y = y_all[: rows * n].view(rows, n)
            ptr = y.data_ptr()
            fn(x, -1, out=y)
            if y.data_ptr() != ptr:
                sys.exit("torch: out= reallocated the output (n=%d)" % n)
            err = check(args.op, y)
            if err:
                sys.exit("torch: n=%d rows=%d: %s" % (n, rows, err))
            sec = time_median(fn, x, y, cache == "out")
            print(json.dumps({"impl": "torch", "op": args.op, "n": n,
                              "rows": rows, "threads": args.threads,
                              "cache": cache,
                              "gbps": round(rows * n * 8 / sec * 1e-9, 4)}),
                  flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Fused softmax + top-k: softgate against PyTorch, side by side.

In one process, on the same float32 logits [rows x N] (N(0, 3) from a fixed
seed) and 1 thread by default, times per shape and k, with repetitions
interleaved and medians reported:
  torch    torch.softmax(x, -1) followed by torch.topk(p, k, -1)
  fused    sg_softmax_topk_f32 (libsoftgate.so through ctypes)
  sg+sep   sg_softmax_f32 followed by a separate top-k pass: torch.topk on
           the probabilities softgate wrote (the pass PyTorch users have)
Indices are checked against torch.topk (ties aside) and probabilities
against a float64 numpy softmax (softgate within 1e-6 relative; torch, which
sums in float, within 1e-4) before anything is timed. Prints a table and,
with --json, one JSON line per case. The issue-3 target is fused >= 3x
torch at k <= 8, 1 thread.

usage: /usr/bin/python3 bench/compare/bench_topk_torch.py [--lib build/libsoftgate.so]
       [--threads 1] [--k 1,2,8] [--shapes 4096x1024,512x32000,64x131072]
       [--reps 7] [--json]
"""
import argparse
import ctypes
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def load(path):
    lib = ctypes.CDLL(path)
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    lib.sg_context_create.argtypes = [ctypes.POINTER(vp), ctypes.c_int]
    lib.sg_context_error.restype = ctypes.c_char_p
    lib.sg_context_error.argtypes = [vp]
    lib.sg_softmax_topk_f32.argtypes = [vp, sz, sz, vp, sz, sz, vp, sz, vp, sz, vp]
    lib.sg_softmax_f32.argtypes = [vp, sz, sz, vp, sz, vp, sz, vp]
    return lib


def timed(fn, target_s=0.02):
    """Seconds per call, repeating until target_s has passed."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        t = time.perf_counter() - t0
        if t >= target_s:
            return t / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.path.join(HERE, "..", "..", "build", "libsoftgate.so"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--k", default="1,2,8")
    ap.add_argument("--shapes", default="4096x1024,512x32000,64x131072")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lib = load(a.lib)
    ctx = ctypes.c_void_p()
    if lib.sg_context_create(ctypes.byref(ctx), a.threads) != 0:
        sys.exit("cannot create a softgate context")
    ks = [int(k) for k in a.k.split(",")]
    if not a.json:
        print("# torch %s, %d thread(s); times in ms (median of %d interleaved reps)"
              % (torch.__version__, a.threads, a.reps))
        print("%6s %7s %3s %9s %9s %9s %9s %9s" % ("rows", "n", "k", "torch", "fused", "sg+sep",
                                                  "x torch", "x sg+sep"))
    for shape in a.shapes.split(","):
        rows, n = (int(v) for v in shape.split("x"))
        rng = np.random.default_rng(1)
        x = (rng.standard_normal((rows, n)) * 3).astype(np.float32)
        xt = torch.from_numpy(x)
        y = np.empty_like(x)
        yt = torch.from_numpy(y)
        for k in ks:
            ix = np.empty((rows, k), np.int32)
            pv = np.empty((rows, k), np.float32)

            def fused():
                st = lib.sg_softmax_topk_f32(ctx, rows, n, x.ctypes.data, n, k, ix.ctypes.data, k,
                                             pv.ctypes.data, k, None)
                if st != 0:
                    raise RuntimeError(lib.sg_context_error(ctx).decode())

            def torch_pair():
                return torch.topk(torch.softmax(xt, -1), k, -1)

            def sg_sep():
                lib.sg_softmax_f32(ctx, rows, n, x.ctypes.data, n, y.ctypes.data, n, None)
                return torch.topk(yt, k, -1)

            fused()
            tv, ti = torch_pair()
            xd = x.astype(np.float64)
            p = np.exp(xd - xd.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            ref = np.take_along_axis(p, ix.astype(np.int64), 1)
            if not np.allclose(pv, ref, rtol=1e-6, atol=1e-30):
                sys.exit("softgate's probabilities are off the double reference at %s k=%d" % (shape, k))
            if not np.allclose(tv.numpy(), ref, rtol=1e-4, atol=1e-30):  # torch sums in float
                sys.exit("torch's probabilities differ at %s k=%d" % (shape, k))
            same = (ix == ti.numpy().astype(np.int32)).mean()
            if same < 0.999:
                sys.exit("indices differ from torch at %s k=%d (%.4f agree)" % (shape, k, same))
            t = {"torch": [], "fused": [], "sep": []}
            for _ in range(a.reps):
                t["torch"].append(timed(torch_pair))
                t["fused"].append(timed(fused))
                t["sep"].append(timed(sg_sep))
            m = {key: statistics.median(v) * 1e3 for key, v in t.items()}
            rt, rs = m["torch"] / m["fused"], m["sep"] / m["fused"]
            if a.json:
                print(json.dumps({"op": "softmax_topk", "rows": rows, "n": n, "k": k,
                                  "threads": a.threads, "torch_ms": round(m["torch"], 4),
                                  "fused_ms": round(m["fused"], 4), "sg_sep_ms": round(m["sep"], 4),
                                  "ratio_torch": round(rt, 3), "ratio_sg_sep": round(rs, 3)}))
            else:
                print("%6d %7d %3d %9.3f %9.3f %9.3f %9.2f %9.2f" % (rows, n, k, m["torch"], m["fused"],
                                                                    m["sep"], rt, rs))
            sys.stdout.flush()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Compare softgate's softmax against PyTorch, oneDNN and XNNPACK.

Runs every implementation's benchmark program, interleaved: for each rep,
for each thread count, each implementation runs once over all shapes (the
order of implementations rotates between reps so that none always runs first
or last). Each program warms up and prints the median GB/s per shape as JSON
lines; here we keep, per (impl, n, rows, threads, cache), the list across
reps and report its median. GB/s = rows * n * 8 bytes / seconds.

Run with /usr/bin/python3 (Debian's, which has torch), from the repo root:
    make -C bench/compare
    /usr/bin/python3 bench/compare/compare.py --softgate ./build/softgate \
        --threads 1,2 --reps 5 --op softmax [--quick] [--json]

A missing or failing competitor is reported on stderr and left out.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
COMPETITORS = ["torch", "onednn", "xnnpack"]
IMPLS = ["softgate"] + COMPETITORS


def note(msg):
    print("compare: " + msg, file=sys.stderr, flush=True)


def command(impl, args, threads):
    """argv for one run of impl, or None if it cannot run this op."""
    common = ["--threads", str(threads), "--op", args.op]
    if args.quick:
        common.append("--quick")
    if impl == "softgate":
        return [args.softgate, "bench", "softmax", "--json", "--algo",
                "auto"] + common + ["--reps", "3"]
    if impl == "torch":
        return [args.python, os.path.join(HERE, "bench_torch.py")] + common
    if impl == "xnnpack" and args.op == "log_softmax":
        return None  # XNNPACK has no log-softmax operator
    return [os.path.join(HERE, "build", "bench_" + impl)] + common


def missing_reason(impl, argv):
    """Why argv cannot be started, or None if it looks runnable."""
    prog = argv[1] if impl == "torch" else argv[0]
    if not os.path.isfile(prog):
        hint = {"softgate": "build softgate or pass --softgate PATH",
                "torch": "bench_torch.py is missing from bench/compare"}.get(
                    impl, "run: make -C bench/compare")
        return "%s not found (%s)" % (prog, hint)
    if impl != "torch" and not os.access(prog, os.X_OK):
        return "%s is not executable" % prog
    return None


def run_once(impl, argv, threads, args, results, seen_keys):
    """Runs one program over all shapes; adds its GB/s to results.
    Returns True if it ran cleanly."""
    env = dict(os.environ)
    # oneDNN and torch use OpenMP (libgomp), which reads OMP_NUM_THREADS
    # once at process start; oneDNN fixes its thread count per primitive.
    env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, text=True,
                              timeout=args.timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (
            e.stdout or "")
        rc, err = None, "timed out after %d s" % args.timeout
    except OSError as e:
        note("%s: cannot start %s: %s" % (impl, argv[0], e))
        return False
    else:
        out, rc, err = proc.stdout, proc.returncode, proc.stderr
    got = 0
    for line in out.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        if impl == "softgate":
            if rec.get("algorithm") != "auto":
                continue  # other algorithms are softgate's own business
        elif rec.get("impl") != impl:
            continue
        if rec.get("op", args.op) != args.op:
            continue
        try:
            key = (int(rec["n"]), int(rec["rows"]), str(rec["cache"]))
            gbps = float(rec["gbps"])
        except (KeyError, TypeError, ValueError):
            note("%s: skipping malformed line: %s" % (impl, line[:200]))
            continue
        if int(rec.get("threads", threads)) != threads:
            note("%s: asked for %d threads, line says %s"
                 % (impl, threads, rec.get("threads")))
        slot = results.setdefault((impl,) + key + (threads,), {
            "gbps": [], "probe": []})
        slot["gbps"].append(gbps)
        if impl == "softgate" and "probe_gbps" in rec:
            try:
                slot["probe"].append(float(rec["probe_gbps"]))
            except (TypeError, ValueError):
                pass
        seen_keys.add(key + (threads,))
        got += 1
    ok = rc == 0 and got > 0
    if args.verbose or not ok:
        tail = err.strip().splitlines()[-3:] if err else []
        status = "ok" if ok else ("exit status %s" % rc if rc is not None
                                  else err)
        note("%s threads=%d: %s, %d shapes, %.1f s%s" % (
            impl, threads, status, got, time.monotonic() - t0,
            "" if ok or not tail else ": " + " | ".join(tail)))
    return ok


def median(xs):
    return statistics.median(xs) if xs else None


def build_rows(results, seen_keys, impls, op):
    rows = []
    for n, nrows, cache, threads in sorted(
            seen_keys, key=lambda k: (k[2] != "in", k[3], k[0], k[1])):
        row = {"op": op, "n": n, "rows": nrows, "cache": cache,
               "threads": threads}
        for impl in impls:
            slot = results.get((impl, n, nrows, cache, threads))
            row[impl + "_gbps"] = median(slot["gbps"]) if slot else None
            row[impl + "_reps"] = len(slot["gbps"]) if slot else 0
        slot = results.get(("softgate", n, nrows, cache, threads))
        row["softgate_probe_gbps"] = median(slot["probe"]) if slot else None
        sg = row.get("softgate_gbps")
        best, best_gbps = None, None
        for c in impls:
            if c == "softgate":
                continue
            g = row[c + "_gbps"]
            row["ratio_" + c] = sg / g if sg is not None and g else None
            if g is not None and (best_gbps is None or g > best_gbps):
                best, best_gbps = c, g
        row["best_competitor"] = best
        row["best_competitor_gbps"] = best_gbps
        row["ratio_best"] = sg / best_gbps if sg is not None and best_gbps \
            else None
        rows.append(row)
    return rows


def fmt(v, width, prec=2):
    return ("%*.*f" % (width, prec, v)) if v is not None else "%*s" % (
        width, "-")


def print_table(rows, impls, args):
    comps = [c for c in impls if c != "softgate"]
    print("op=%s reps=%d  GB/s = rows*n*8 bytes / median time;  "
          "ratio = softgate GB/s / competitor GB/s (>1: softgate faster)"
          % (args.op, args.reps))
    head = "%9s %-5s %3s %8s" % ("n", "cache", "thr", "rows")
    head += "".join(" %8s" % i for i in impls)
    head += "".join(" %9s" % ("sg/" + c) for c in comps)
    head += " %8s %8s" % ("best", "sg/best")
    print(head)
    print("-" * len(head))
    for r in rows:
        line = "%9d %-5s %3d %8d" % (r["n"], r["cache"], r["threads"],
                                      r["rows"])
        line += "".join(" " + fmt(r[i + "_gbps"], 8) for i in impls)
        line += "".join(" " + fmt(r["ratio_" + c], 9) for c in comps)
        line += " %8s %s" % (r["best_competitor"] or "-",
                             fmt(r["ratio_best"], 8))
        print(line)
    # Geometric mean of softgate / best competitor, per thread count.
    for t in sorted({r["threads"] for r in rows}):
        rs = [r["ratio_best"] for r in rows
              if r["threads"] == t and r["ratio_best"]]
        if rs:
            g = 1.0
            for x in rs:
                g *= x
            print("threads=%d: geomean softgate/best competitor = %.3f over "
                  "%d shapes" % (t, g ** (1.0 / len(rs)), len(rs)))


def main():
    ap = argparse.ArgumentParser(
        description="softgate vs torch / oneDNN / XNNPACK softmax throughput")
    ap.add_argument("--softgate", default="./build/softgate",
                    help="softgate CLI binary (default ./build/softgate)")
    ap.add_argument("--threads", default="1,2",
                    help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--reps", type=int, default=5,
                    help="runs of each program per thread count (default 5)")
    ap.add_argument("--op", choices=["softmax", "log_softmax"],
                    default="softmax")
    ap.add_argument("--quick", action="store_true", help="fewer shapes")
    ap.add_argument("--json", action="store_true",
                    help="one JSON object per line instead of a table")
    ap.add_argument("--impls", default=",".join(IMPLS),
                    help="subset to run (default %s)" % ",".join(IMPLS))
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter for bench_torch.py (default: this one)")
    ap.add_argument("--timeout", type=int, default=600,
                    help="seconds allowed for one program run (default 600)")
    ap.add_argument("--verbose", action="store_true",
                    help="report every program run on stderr")
    args = ap.parse_args()

    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        ap.error("--threads wants comma-separated integers, got %r"
                 % args.threads)
    if not threads or min(threads) < 1:
        ap.error("--threads wants positive integers")
    if args.reps < 1:
        ap.error("--reps must be >= 1")
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    for i in impls:
        if i not in IMPLS:
            ap.error("unknown implementation %r (known: %s)"
                     % (i, ", ".join(IMPLS)))
    # Report in the canonical order whatever order --impls used.
    impls = [i for i in IMPLS if i in impls]

    # Decide up front what can run, so each problem is reported once.
    runnable = []
    for impl in impls:
        argv = command(impl, args, threads[0])
        if argv is None:
            note("%s: skipped, it has no %s" % (impl, args.op))
            continue
        why = missing_reason(impl, argv)
        if why:
            note("%s: skipped, %s" % (impl, why))
            continue
        runnable.append(impl)
    if not runnable:
        sys.exit("compare: nothing to run")

    results, seen_keys = {}, set()
    broken = set()  # (impl, threads) that failed once: not retried
    t_start = time.monotonic()
    for rep in range(args.reps):
        order = runnable[rep % len(runnable):] + runnable[:rep % len(runnable)]
        for t in threads:
            for impl in order:
                if (impl, t) in broken:
                    continue
                if not run_once(impl, command(impl, args, t), t, args,
                                results, seen_keys):
                    broken.add((impl, t))
                    note("%s threads=%d: left out of the remaining reps"
                         % (impl, t))
        if args.verbose:
            note("rep %d/%d done, %.0f s so far"
                 % (rep + 1, args.reps, time.monotonic() - t_start))

    rows = build_rows(results, seen_keys, impls, args.op)
    if not rows:
        sys.exit("compare: no results (see the notes above)")
    if args.json:
        for r in rows:
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                              for k, v in r.items()}))
    else:
        print_table(rows, impls, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""bench_route_torch.py - softgate's routers side by side with PyTorch.

The PyTorch side is router code as real models write it (Hugging Face
transformers' Mixtral, DeepSeek-V3 MoEGate, SwitchTransformers top-1 router,
expert choice as in the paper's pseudo-code, ST-MoE z-loss), on one thread.
For every configuration the two are timed in alternation (PyTorch in this
process, softgate through `softgate bench route --json` on the same shape),
repetition by repetition, and the medians' ratio is printed:
ratio = PyTorch time / softgate time (higher is better for softgate).

usage: bench_route_torch.py [--softgate build/softgate] [--reps 5] [--quick]
       [--t 1,4,16,512,4096] [--json]
"""
import argparse
import json
import math
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.set_grad_enabled(False)


def mixtral(logits, k):
    # transformers MixtralSparseMoeBlock.forward
    routing_weights = F.softmax(logits, dim=1, dtype=torch.float)
    routing_weights, selected_experts = torch.topk(routing_weights, k, dim=-1)
    routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
    return routing_weights, selected_experts


def deepseek(logits, k, bias, n_group, topk_group, scale=2.5):
    # DeepSeek-V3 MoEGate.forward (noaux_tc)
    t, e = logits.shape
    scores = logits.sigmoid()
    scores_for_choice = scores.view(t, -1) + bias.unsqueeze(0)
    group_scores = scores_for_choice.view(t, n_group, -1).topk(2, dim=-1)[0].sum(dim=-1)
    group_idx = torch.topk(group_scores, k=topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores)
    group_mask.scatter_(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(t, n_group, e // n_group).reshape(t, -1)
    tmp_scores = scores_for_choice.masked_fill(~score_mask.bool(), 0.0)
    _, topk_idx = torch.topk(tmp_scores, k=k, dim=-1, sorted=False)
    topk_weight = scores.gather(1, topk_idx)
    denominator = topk_weight.sum(dim=-1, keepdim=True) + 1e-20
    topk_weight = topk_weight / denominator * scale
    return topk_idx, topk_weight


def expert_choice(logits, capacity):
    # Zhou et al. 2022: S = softmax(X W_g); G, I = top_k(S^T, k = C)
    s = F.softmax(logits, dim=-1)
    g, i = torch.topk(s.t(), capacity, dim=-1)
    return g, i


def switch(logits, capacity):
    # transformers SwitchTransformersTop1Router (jitter off, inference)
    router_probs = F.softmax(logits, dim=-1)
    expert_index = torch.argmax(router_probs, dim=-1)
    expert_index = F.one_hot(expert_index, num_classes=logits.shape[-1])
    token_priority = torch.cumsum(expert_index, dim=-2)
    expert_capacity_mask = token_priority <= capacity
    expert_index = expert_index * expert_capacity_mask
    router_probs = torch.max(router_probs, dim=-1).values.unsqueeze(-1)
    return expert_index, router_probs


def zloss(logits):
    # ST-MoE router z-loss
    return torch.mean(torch.logsumexp(logits, dim=-1) ** 2)


def time_call(fn, n_windows, min_time=1e-3):
    iters, t0 = 0, time.perf_counter()
    while True:
        fn(iters % n_windows)
        iters += 1
        el = time.perf_counter() - t0
        if el >= min_time:
            return el / iters


def torch_fn(router, t, e, k, xs, bias):
    """fn(i) runs the router on window i of the pool (fresh rows per call,
    as softgate's benchmark does)."""
    if router == "mixtral":
        return lambda i: mixtral(xs[i], k)
    if router == "deepseek":
        ng, tg = (8, 4) if e >= 64 else (4, 2)
        return lambda i: deepseek(xs[i], k, bias, ng, tg)
    if router == "expert":
        c = min(t, math.ceil(1.0 * t / e))
        return lambda i: expert_choice(xs[i], c)
    if router == "switch":
        cap = math.ceil(1.25 * t / e)
        return lambda i: switch(xs[i], cap)
    return lambda i: zloss(xs[i])


def softgate_time(binary, router, t, e, k, best):
    out = subprocess.run([binary, "bench", "route", "--json", "--reps", "3", "--router", router,
                          "--t", str(t), "--e", str(e), "--k", str(k)] + (["--best"] if best else []),
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["us"] * 1e-6


TARGETS = {"mixtral": (20, 4), "deepseek": (20, 4), "expert": (20, 4), "switch": (20, 4),
           "zloss": (2, 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--softgate", default="build/softgate")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--t", default="1,4,16,512,4096")
    ap.add_argument("--routers", default="mixtral,deepseek,expert,switch,zloss")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table (BENCHMARKS.md)")
    ap.add_argument("--best", action="store_true",
                    help="fastest repetition on each side instead of the median (shared machine)")
    a = ap.parse_args()
    ts = [int(v) for v in a.t.split(",")]
    g = torch.Generator().manual_seed(7)
    if a.markdown:
        print("| router | E | K | T | PyTorch us | softgate us | ratio | target | verdict |")
        print("|---|---|---|---|---|---|---|---|---|")
    elif not a.json:
        print(f"# torch {torch.__version__}, 1 thread; us per call ({'best' if a.best else 'median'} of {a.reps}); "
              "ratio = torch / softgate; target: >= 20x at T <= 16, >= 4x at T >= 512 (z-loss >= 2x)")
        print(f"{'router':9} {'E':>4} {'K':>2} {'T':>5} {'torch_us':>9} {'softgate_us':>11} "
              f"{'ratio':>7} {'target':>6}  verdict")
    for e, k in ((8, 2), (64, 6), (256, 8)):
        for t in ts:
            # a 16 MiB pool of N(0, 1) logits cut into windows of t rows
            rows = max(t, (4 << 20) // e)
            pool = torch.randn(rows, e, generator=g)
            xs = [pool[i * t:(i + 1) * t] for i in range(min(4096, rows // t))]
            bias = 0.05 * torch.randn(e, generator=g)
            for router in a.routers.split(","):
                kk = 1 if router == "switch" else k
                fn = torch_fn(router, t, e, kk, xs, bias)
                fn(0)
                tt, ts_ = [], []
                for _ in range(a.reps):
                    tt.append(time_call(fn, len(xs)))
                    ts_.append(softgate_time(a.softgate, router, t, e, k, a.best))
                stat = min if a.best else statistics.median
                mt, ms = stat(tt), stat(ts_)
                target = TARGETS[router][0 if t <= 16 else 1]
                ratio = mt / ms
                verdict = "met" if ratio >= target else "NOT met"
                if a.markdown:
                    print(f"| {router} | {e} | {kk if router not in ('expert', 'zloss') else '-'} | {t} | "
                          f"{mt*1e6:.2f} | {ms*1e6:.3f} | {ratio:.1f} | >= {target}x | {verdict} |", flush=True)
                elif a.json:
                    print(json.dumps({"router": router, "e": e, "k": kk, "t": t, "torch_us": mt * 1e6,
                                      "softgate_us": ms * 1e6, "ratio": ratio, "target": target}))
                else:
                    print(f"{router:9} {e:4} {kk:2} {t:5} {mt*1e6:9.2f} {ms*1e6:11.3f} {ratio:7.1f} "
                          f"{target:5}x  {verdict}", flush=True)


if __name__ == "__main__":
    main()

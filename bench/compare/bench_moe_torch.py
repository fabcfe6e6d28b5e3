#!/usr/bin/python3
"""PyTorch competitor for `softgate bench moe`: the Mixtral-style expert loop
as real models write it (Hugging Face MixtralSparseMoeBlock: softmax router,
top-k, renormalize, one_hot expert mask, per expert torch.where + index_add_),
plus DeepSeek-style shared experts added to the output, on the same shapes:
D = 1024, SwiGLU experts (w2(silu(w1 x) * w3 x), nn.Linear without bias),
  mixtral:  8 experts, F = 2816, K = 2
  deepseek: 64 experts, F = 512, K = 6, 2 shared experts of F = 512
T in {1, 4, 16, 256, 1024}, torch.set_num_threads(threads), float32, no_grad.

With --softgate PATH, each repetition runs `PATH bench moe --json --reps 1`
over the same shapes and then the PyTorch loop over all shapes (interleaved
whole runs, medians across repetitions), and prints, per shape, both times,
the speedup torch / softgate, and both implementations' ratios to the
weight-streaming floor and the sgemm bound that softgate's run measured.
Without --softgate, prints one JSON line per shape with the torch time.

usage: /usr/bin/python3 bench/compare/bench_moe_torch.py [--softgate build/softgate]
       [--threads 1,2] [--t 1,4,16,256,1024] [--config both|mixtral|deepseek]
       [--reps 3] [--json]
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:
    sys.exit("torch: cannot import torch (%s); run with /usr/bin/python3 "
             "and install python3-torch" % e)

CONFIGS = {
    "mixtral": dict(d=1024, f=2816, e=8, k=2, shared=0),
    "deepseek": dict(d=1024, f=512, e=64, k=6, shared=2),
}
MIN_TIME = 0.05


class Expert(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.w1 = nn.Linear(d, f, bias=False)
        self.w2 = nn.Linear(f, d, bias=False)
        self.w3 = nn.Linear(d, f, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class SparseMoeBlock(nn.Module):
    """MixtralSparseMoeBlock.forward (transformers 4.36), plus shared experts."""

    def __init__(self, d, f, e, k, shared):
        super().__init__()
        self.hidden_dim, self.num_experts, self.top_k = d, e, k
        self.gate = nn.Linear(d, e, bias=False)
        self.experts = nn.ModuleList([Expert(d, f) for _ in range(e)])
        self.shared = nn.ModuleList([Expert(d, f) for _ in range(shared)])

    def forward(self, hidden_states):
        t, d = hidden_states.shape
        router_logits = self.gate(hidden_states)
        routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
        routing_weights, selected_experts = torch.topk(routing_weights, self.top_k, dim=-1)
        routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
        routing_weights = routing_weights.to(hidden_states.dtype)
        final = torch.zeros((t, d), dtype=hidden_states.dtype)
        expert_mask = F.one_hot(selected_experts, num_classes=self.num_experts).permute(2, 1, 0)
        for expert_idx in range(self.num_experts):
            idx, top_x = torch.where(expert_mask[expert_idx])
            if top_x.shape[0] == 0:
                continue
            current_state = hidden_states[None, top_x].reshape(-1, d)
            current = self.experts[expert_idx](current_state) * routing_weights[top_x, idx, None]
            final.index_add_(0, top_x, current.to(hidden_states.dtype))
        for s in self.shared:
            final = final + s(hidden_states)
        return final, router_logits


def time_torch(block, x):
    with torch.no_grad():
        block(x)
        it, t0 = 0, time.perf_counter()
        while True:
            block(x)
            it += 1
            el = time.perf_counter() - t0
            if el >= MIN_TIME:
                return el / it


def torch_run(args, blocks, out):
    for cname in args.configs:
        block = blocks[cname]
        d = CONFIGS[cname]["d"]
        for t in args.ts:
            g = torch.Generator().manual_seed(5 + t)
            x = torch.randn(t, d, generator=g)
            for th in args.threads:
                torch.set_num_threads(th)
                out.setdefault((cname, t, th), []).append(time_torch(block, x))


def softgate_run(args, out):
    cmd = [args.softgate, "bench", "moe", "--json", "--reps", "1",
           "--threads", ",".join(map(str, args.threads)),
           "--t", ",".join(map(str, args.ts)),
           "--config", "both" if len(args.configs) == 2 else args.configs[0]]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit("softgate failed: " + res.stderr)
    for line in res.stdout.splitlines():
        if line.startswith("{"):
            j = json.loads(line)
            out.setdefault((j["config"], j["t"], j["threads"]), []).append(j)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--softgate")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--t", default="1,4,16,256,1024")
    ap.add_argument("--config", default="both")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.threads = [int(v) for v in args.threads.split(",")]
    args.ts = [int(v) for v in args.t.split(",")]
    args.configs = list(CONFIGS) if args.config == "both" else [args.config]
    torch.manual_seed(0)
    blocks = {c: SparseMoeBlock(**CONFIGS[c]).eval() for c in args.configs}
    tt, st = {}, {}
    for _ in range(args.reps):
        if args.softgate:
            softgate_run(args, st)
        torch_run(args, blocks, tt)
    if not args.softgate or args.json:
        for key, v in sorted(tt.items()):
            rec = {"impl": "torch", "config": key[0], "t": key[1], "threads": key[2],
                   "torch_us": statistics.median(v) * 1e6}
            if key in st:
                med = lambda f: statistics.median(r[f] for r in st[key])
                rec.update(softgate_us=med("layer_us"), floor_us=med("floor_us"),
                           gemm_us=med("gemm_us"))
            print(json.dumps(rec))
        return
    print("# torch %s, Mixtral-style loop; softgate `bench moe`; medians of %d interleaved runs"
          % (torch.__version__, args.reps))
    print("# speedup = torch / softgate; *_floor = floor / time; *_gemm = sgemm bound / time")
    print("%-9s %5s %3s %11s %11s %8s %8s %8s %8s %8s" % (
        "config", "T", "thr", "torch_us", "softgate_us", "speedup", "sg_floor", "th_floor",
        "sg_gemm", "th_gemm"))
    for key in sorted(tt, key=lambda k: (k[0], k[1], k[2])):
        if key not in st:
            continue
        tor = statistics.median(tt[key]) * 1e6
        med = lambda f: statistics.median(r[f] for r in st[key])
        sg, fl, gm = med("layer_us"), med("floor_us"), med("gemm_us")
        print("%-9s %5d %3d %11.1f %11.1f %8.2f %8.3f %8.3f %8.3f %8.3f" % (
            key[0], key[1], key[2], tor, sg, tor / sg, fl / sg, fl / tor, gm / sg, gm / tor))


if __name__ == "__main__":
    main()

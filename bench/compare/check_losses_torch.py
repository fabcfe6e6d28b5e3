#!/usr/bin/python3
"""sg_cross_entropy_f32 against torch.nn.functional.cross_entropy (torch 1.13).

Loss and gradient for every reduction, label smoothing 0 / 0.1 / 1, ignored
rows (ignore_index -100 and a custom one), temperature (softgate's T against
cross_entropy(x / T)), and the all-ignored MEAN case (NaN loss, zero
gradient in both). The logit z-loss is not in PyTorch: it is checked
against autograd of lambda * logsumexp(x / T)^2 added to the loss.
Exits non-zero on the first mismatch.

usage: /usr/bin/python3 bench/compare/check_losses_torch.py [--lib build/libsoftgate.so]
"""
import argparse
import ctypes
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


class CEOptions(ctypes.Structure):
    _fields_ = [("reduction", ctypes.c_int), ("ignore_index", ctypes.c_int32),
                ("label_smoothing", ctypes.c_float), ("z_loss", ctypes.c_float)]


class SoftmaxOptions(ctypes.Structure):
    _fields_ = [("temperature", ctypes.c_float), ("algorithm", ctypes.c_int),
                ("keep_mask", ctypes.c_void_p), ("keep_mask_ld", ctypes.c_size_t),
                ("add_mask", ctypes.c_void_p), ("add_mask_ld", ctypes.c_size_t)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.path.join(HERE, "..", "..", "build", "libsoftgate.so"))
    a = ap.parse_args()
    lib = ctypes.CDLL(a.lib)
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    lib.sg_context_create.argtypes = [ctypes.POINTER(vp), ctypes.c_int]
    lib.sg_context_error.restype = ctypes.c_char_p
    lib.sg_context_error.argtypes = [vp]
    lib.sg_cross_entropy_f32.argtypes = [vp, sz, sz, vp, sz, vp, vp, vp, sz,
                                         ctypes.POINTER(CEOptions), ctypes.POINTER(SoftmaxOptions)]
    ctx = vp()
    lib.sg_context_create(ctypes.byref(ctx), 1)
    reds = ["none", "sum", "mean"]
    rng = np.random.default_rng(3)
    checked = 0
    for n in [1, 5, 17, 1000]:
        for rows in [1, 7]:
            x = (rng.standard_normal((rows, n)) * 4).astype(np.float32)
            for ignore in [-100, 2]:
                tg = rng.integers(0, n, rows).astype(np.int32)
                tg[::3] = ignore if ignore < 0 or ignore < n else tg[::3]
                for eps in [0.0, 0.1, 1.0]:
                    for lam in [0.0, 1e-3]:
                        for T in [1.0, 0.7]:
                            for r, red in enumerate(reds):
                                loss = np.zeros(rows, np.float32)
                                dx = np.zeros((rows, n), np.float32)
                                co = CEOptions(r, ignore, eps, lam)
                                so = SoftmaxOptions(T, 0, None, 0, None, 0)
                                st = lib.sg_cross_entropy_f32(ctx, rows, n, x.ctypes.data, n,
                                                              tg.ctypes.data, loss.ctypes.data,
                                                              dx.ctypes.data, n, ctypes.byref(co),
                                                              ctypes.byref(so))
                                if st != 0:
                                    sys.exit("softgate: %s" % lib.sg_context_error(ctx).decode())
                                xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
                                tt = torch.tensor(tg, dtype=torch.int64)
                                z = xt / T
                                l = F.cross_entropy(z, tt, reduction=red, ignore_index=ignore,
                                                    label_smoothing=eps)
                                if lam > 0 and (tg != ignore).any():
                                    keep = (tt != ignore).double()
                                    zl = lam * torch.logsumexp(z, -1) ** 2 * keep
                                    cnt = keep.sum()
                                    l = l + (zl if red == "none" else zl.sum() if red == "sum"
                                             else zl.sum() / cnt)
                                l.sum().backward()
                                want = l.detach().numpy().reshape(-1)
                                got = loss if red == "none" else loss[:1]
                                ok_l = np.allclose(got, want, rtol=2e-6, atol=2e-6, equal_nan=True)
                                ok_g = np.allclose(dx, xt.grad.numpy(), rtol=1e-5, atol=1e-6)
                                if not (ok_l and ok_g):
                                    sys.exit("mismatch n=%d rows=%d ignore=%d eps=%g lambda=%g T=%g %s:"
                                             "\n loss %s\n torch %s\n max grad diff %g"
                                             % (n, rows, ignore, eps, lam, T, red, got, want,
                                                np.abs(dx - xt.grad.numpy()).max()))
                                checked += 1
    # every row ignored: MEAN is NaN in both, the gradient 0 in both
    x = np.ones((3, 4), np.float32)
    tg = np.full(3, -100, np.int32)
    loss = np.zeros(3, np.float32)
    dx = np.ones((3, 4), np.float32)
    co = CEOptions(2, -100, 0.0, 0.0)
    lib.sg_cross_entropy_f32(ctx, 3, 4, x.ctypes.data, 4, tg.ctypes.data, loss.ctypes.data,
                             dx.ctypes.data, 4, ctypes.byref(co), None)
    xt = torch.tensor(x, requires_grad=True)
    lt = F.cross_entropy(xt, torch.tensor(tg, dtype=torch.int64))
    lt.backward()
    if not (math.isnan(loss[0]) and math.isnan(lt.item()) and (dx == 0).all()
            and (xt.grad == 0).all()):
        sys.exit("all-ignored MEAN: softgate %g, torch %g" % (loss[0], lt.item()))
    print("cross-entropy matches torch %s in %d configurations (and all-ignored MEAN: NaN, dx 0)"
          % (torch.__version__, checked + 1))


if __name__ == "__main__":
    main()

# Worst relative error of torch.softmax (and log-softmax absolute error) on rows of
# N(0,1) * 10 against a float64 reference: the accuracy target the tests use.
# Run: /usr/bin/python3 bench/compare/accuracy_torch.py
import torch, numpy as np
torch.set_num_threads(1)
for n in [1000, 10000, 100000]:
    worst=0; worst_log=0
    for seed in range(20 if n<100000 else 2):
        g=np.random.default_rng(seed+n)
        x=(g.standard_normal(n)*10).astype(np.float32)
        y=torch.softmax(torch.from_numpy(x),-1).numpy().astype(np.float64)
        ly=torch.log_softmax(torch.from_numpy(x),-1).numpy().astype(np.float64)
        xd=x.astype(np.float64); d=xd-xd.max(); ref=np.exp(d)/np.exp(d).sum(); lref=d-np.log(np.exp(d).sum())
        m=ref>1e-30
        worst=max(worst, np.max(np.abs(y[m]-ref[m])/ref[m]))
        worst_log=max(worst_log, np.max(np.abs(ly-lref)/np.maximum(1,np.abs(lref))))
    print(n, worst, worst_log)

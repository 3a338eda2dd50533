#!/usr/bin/env python3
"""Prints the rate (GB/s, 28 bytes per element) of torch.optim.AdamW(fused=True) on the CPU, for
`diagprec bench --torch-python PYTHON`. Best of several batches, like the Rust report."""
import argparse
import time

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--log2", type=int, default=24)
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)
n = 1 << args.log2
param = torch.nn.Parameter(torch.randn(n))
param.grad = torch.randn(n) * 1e-2
opt = torch.optim.AdamW([param], lr=1e-3, fused=True)
for _ in range(3):
    opt.step()
once = time.perf_counter()
opt.step()
once = time.perf_counter() - once
reps = max(1, int(0.01 / once))
best = float("inf")
start = time.perf_counter()
while time.perf_counter() - start < 1.0:
    t = time.perf_counter()
    for _ in range(reps):
        opt.step()
    best = min(best, (time.perf_counter() - t) / reps)
print(f"{28 * n / best / 1e9:.3f}")

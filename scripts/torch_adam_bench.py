#!/usr/bin/env python3
"""torch.optim.AdamW(fused=True) on the CPU, driven by `diagprec bench --torch-python PYTHON`.

Sets up one parameter of 2^log2 elements on `--threads` threads, takes three warm-up steps,
prints "ready", then for every line K read from stdin runs K optimizer steps and prints "done".
The Rust report times those batches itself, alternating them with its own kernel and the
streaming limit, so all three see the same machine state."""
import argparse
import sys

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
print("ready", flush=True)
for line in sys.stdin:
    for _ in range(int(line)):
        opt.step()
    print("done", flush=True)

#!/usr/bin/env python3
"""torch.optim.AdamW(fused=True) on the CPU beside diagprec's `dp_adam_step_f32` on the same
tensors, driven by `diagprec bench --torch-python PYTHON`.

Sets up one parameter of 2^log2 elements on `--threads` threads (torch and, through ctypes,
`--lib`, the libdiagprec shared library), takes three warm-up steps of each, prints "ready",
then for every line "torch K" or "ours K" read from stdin runs K steps of that optimizer and
prints "done". Both step the same param, grad, exp_avg and exp_avg_sq tensors (torch's own
allocations), so neither side gets a different memory layout: on this machine the relative
placement of the four arrays alone moves a DRAM-sized step by up to 40%. The Rust report times
the batches, alternating them with the streaming limit."""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diagprec_adam import adamw_step  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--log2", type=int, default=24)
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--lib", required=True)
args = parser.parse_args()
torch.set_num_threads(args.threads)
n = 1 << args.log2
param = torch.nn.Parameter(torch.randn(n))
param.grad = torch.randn(n) * 1e-2
opt = torch.optim.AdamW([param], lr=1e-3, fused=True)
opt.step()
state = opt.state[param]
ours = adamw_step(
    args.lib, args.threads, (param, param.grad, state["exp_avg"], state["exp_avg_sq"])
)

for _ in range(3):
    opt.step()
    ours()
print("ready", flush=True)
for line in sys.stdin:
    which, k = line.split()
    step = opt.step if which == "torch" else ours
    for _ in range(int(k)):
        step()
    print("done", flush=True)

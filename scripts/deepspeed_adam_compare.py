#!/usr/bin/env python3
"""DeepSpeed's CPU Adam (DeepSpeedCPUAdam, AdamW mode) beside diagprec's `dp_adam_step_f32`, in
one process, on the same tensors. Optional: nothing in the crate's tests or CI runs it.

    OMP_NUM_THREADS=2 DS_ACCELERATOR=cpu python scripts/deepspeed_adam_compare.py \
        --lib target/release/libdiagprec.so --threads 2 --log2 24

Needs torch and deepspeed (`pip install deepspeed` with `DS_ACCELERATOR=cpu` and ninja on PATH;
the first run builds DeepSpeed's CPU Adam extension). Set OMP_NUM_THREADS to `--threads`: the
extension's OpenMP runtime is not the one `torch.set_num_threads` sizes.

Both optimizers step the same param, grad, exp_avg and exp_avg_sq tensors (DeepSpeed's own
allocations), so neither gets a different memory layout. Each round times a batch of steps of
each, alternately (the order flips every round); the figure is the median over rounds of the
same-round ratio DeepSpeed time / ours (above 1: ours is faster), with the best time of each.
"""
import argparse
import os
import sys
import statistics
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diagprec_adam import adamw_step  # noqa: E402
from deepspeed.ops.adam import DeepSpeedCPUAdam

parser = argparse.ArgumentParser()
parser.add_argument("--log2", type=int, default=24)
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--lib", required=True)
parser.add_argument("--rounds", type=int, default=15)
parser.add_argument("--steps", type=int, default=5, help="steps per batch")
args = parser.parse_args()
torch.set_num_threads(args.threads)
n = 1 << args.log2
param = torch.nn.Parameter(torch.randn(n))
param.grad = torch.randn(n) * 1e-2
opt = DeepSpeedCPUAdam([param], lr=1e-3, weight_decay=1e-2, adamw_mode=True)
opt.step()
state = opt.state[param]
ours = adamw_step(
    args.lib, args.threads, (param, param.grad, state["exp_avg"], state["exp_avg_sq"])
)

def batch(step):
    begin = time.perf_counter()
    for _ in range(args.steps):
        step()
    return (time.perf_counter() - begin) / args.steps


for _ in range(3):
    opt.step()
    ours()
ratios, ds_best, ours_best = [], float("inf"), float("inf")
for r in range(args.rounds):
    if r % 2:
        o, d = batch(ours), batch(opt.step)
    else:
        d, o = batch(opt.step), batch(ours)
    ratios.append(d / o)
    ds_best, ours_best = min(ds_best, d), min(ours_best, o)
bytes_moved = 28 * n
print(
    f"2^{args.log2} threads={args.threads}: DeepSpeedCPUAdam {ds_best * 1e3:.2f} ms "
    f"({bytes_moved / ds_best / 1e9:.1f} GB/s), diagprec {ours_best * 1e3:.2f} ms "
    f"({bytes_moved / ours_best / 1e9:.1f} GB/s); DeepSpeed/ours median same-round ratio "
    f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})"
)

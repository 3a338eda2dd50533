#!/usr/bin/env python3
"""DeepSpeed's CPU Adam (DeepSpeedCPUAdam, AdamW mode) beside diagprec's `dp_adam_step_f32`, in
one process, on the same tensors. Optional: nothing in the crate's tests or CI runs it.

    OMP_NUM_THREADS=2 DS_ACCELERATOR=cpu python cli/deepspeed_adam_compare.py \
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
import ctypes
import statistics
import time

import torch
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


class Config(ctypes.Structure):
    """dp_adam_config of the C ABI 1.0 (include/diagprec.h); filled by dp_adam_config_default."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("lr", ctypes.c_double),
        ("beta1", ctypes.c_double),
        ("beta2", ctypes.c_double),
        ("eps", ctypes.c_double),
        ("weight_decay", ctypes.c_double),
        ("inv_grad_scale", ctypes.c_double),
        ("decoupled_weight_decay", ctypes.c_uint32),
        ("amsgrad", ctypes.c_uint32),
        ("maximize", ctypes.c_uint32),
        ("check_finite", ctypes.c_uint32),
    ]


lib = ctypes.CDLL(args.lib)
lib.dp_adam_config_default.restype = Config
lib.dp_set_num_threads.argtypes = [ctypes.c_size_t]
lib.dp_last_error_message.restype = ctypes.c_char_p
lib.dp_adam_step_f32.argtypes = [ctypes.POINTER(Config), ctypes.c_uint64] + [
    ctypes.c_void_p
] * 5 + [ctypes.c_size_t]
assert lib.dp_set_num_threads(args.threads) == 0
cfg = lib.dp_adam_config_default()
assert cfg.struct_size == ctypes.sizeof(Config)
cfg.decoupled_weight_decay = 1
cfg.weight_decay = 1e-2
pointers = [t.data_ptr() for t in (param, param.grad, state["exp_avg"], state["exp_avg_sq"])]


def ours():
    status = lib.dp_adam_step_f32(ctypes.byref(cfg), 10, *pointers, None, n)
    assert status == 0, lib.dp_last_error_message()


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

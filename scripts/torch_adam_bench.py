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
import ctypes
import sys

import torch

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
lib.dp_adam_step_f32.argtypes = [
    ctypes.POINTER(Config),
    ctypes.c_uint64,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_size_t,
]
assert lib.dp_set_num_threads(args.threads) == 0
cfg = lib.dp_adam_config_default()
cfg.decoupled_weight_decay = 1
assert cfg.struct_size == ctypes.sizeof(Config)
cfg.weight_decay = 1e-2  # torch.optim.AdamW's default, as above
pointers = [t.data_ptr() for t in (param, param.grad, state["exp_avg"], state["exp_avg_sq"])]


def ours():
    status = lib.dp_adam_step_f32(ctypes.byref(cfg), 10, *pointers, None, n)
    assert status == 0, lib.dp_last_error_message()


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

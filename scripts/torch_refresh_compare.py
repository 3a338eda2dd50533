#!/usr/bin/env python3
"""SOAP's basis refresh in torch beside diagprec's `dp_basis_refresh_f32` (`DP_REFRESH_POWER_QR`),
in one process, on the same statistic and starting basis. Optional: nothing in the crate's tests
or CI runs it.

    python scripts/torch_refresh_compare.py --lib target/release/libdiagprec.so --threads 2 --n 256

Needs torch. Three versions of one power-iteration step plus QR are timed:
- `soap`: SOAP's own code (`get_orthogonal_matrix_QR` of the SOAP optimizer): the Rayleigh
  quotients from `diag(Q^T A Q)` (two GEMMs), the sort, `A Q`, `torch.linalg.qr`;
- `torch`: the same with the quotients from the product `A Q` itself (one GEMM, as diagprec
  does), so the two sides do the same arithmetic;
- `diagprec`: `dp_basis_refresh_f32` on a dense basis handle (no optimizer state carried).

First, one refresh from the same start on each side is compared: the bases must agree to
`1e-3` once each torch column's sign is chosen as diagprec's (`R`'s diagonal made
non-negative; torch leaves the signs to LAPACK), and the quotients' order must agree. Then each
round times a batch of refreshes of each version, alternately (the order flips every round);
each figure is the median over rounds of the same-round ratio (above 1: diagprec is faster),
with the best time of each.
"""
import argparse
import ctypes
import statistics
import time

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--lib", required=True)
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--n", type=int, default=256)
parser.add_argument("--rounds", type=int, default=11)
parser.add_argument("--steps", type=int, default=20, help="refreshes per batch")
args = parser.parse_args()
torch.set_num_threads(args.threads)
n = args.n
DP_REFRESH_POWER_QR, DP_TRANSFER_PERMUTE, DP_FACTOR_LEFT = 1, 0, 0

lib = ctypes.CDLL(args.lib)
lib.dp_set_num_threads.argtypes = [ctypes.c_size_t]
lib.dp_last_error_message.restype = ctypes.c_char_p
lib.dp_basis_create_dense_f32.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_size_t,
    ctypes.POINTER(ctypes.c_void_p),
]
lib.dp_basis_refresh_f32.argtypes = [
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_uint32,
    ctypes.c_uint32,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_size_t,
]
lib.dp_basis_get_matrix_f32.argtypes = [
    ctypes.c_void_p,
    ctypes.c_uint32,
    ctypes.c_void_p,
    ctypes.c_size_t,
]
lib.dp_basis_free.argtypes = [ctypes.c_void_p]
assert lib.dp_set_num_threads(args.threads) == 0


def check(status):
    assert status == 0, lib.dp_last_error_message()


# A statistic with a spread spectrum, and a start basis near (not at) its eigenbasis.
g = torch.Generator().manual_seed(0)
x = torch.randn(4 * n, n, generator=g, dtype=torch.float64) * torch.logspace(0, -1, n, dtype=torch.float64)
a64 = x.T @ x / (4 * n)
a = a64.float().contiguous()
turn = torch.linalg.qr(torch.eye(n, dtype=torch.float64) + 0.05 * torch.randn(n, n, generator=g, dtype=torch.float64))[0]
q0 = (torch.linalg.eigh(a64)[1] @ turn).float().contiguous()


def new_basis():
    handle = ctypes.c_void_p()
    # A contiguous torch matrix is row-major, as the C ABI takes and gives matrices.
    check(lib.dp_basis_create_dense_f32(q0.data_ptr(), n * n, n, ctypes.byref(handle)))
    return handle


def diagprec_refresh(handle):
    check(
        lib.dp_basis_refresh_f32(
            handle, a.data_ptr(), n * n, None, 0, DP_REFRESH_POWER_QR, DP_TRANSFER_PERMUTE,
            None, None, None, 0,
        )
    )


def basis_of(handle):
    out = torch.empty(n, n)
    check(lib.dp_basis_get_matrix_f32(handle, DP_FACTOR_LEFT, out.data_ptr(), n * n))
    return out


def soap_refresh(o):
    est = torch.diag(o.T @ a @ o)
    o = o[:, torch.argsort(est, descending=True)]
    q, _ = torch.linalg.qr(a @ o)
    return q


def torch_refresh(o):
    p = a @ o
    order = torch.argsort((o * p).sum(0), descending=True)
    q, _ = torch.linalg.qr(p[:, order])
    return q


# One refresh from the same start: the same basis up to column signs.
handle = new_basis()
diagprec_refresh(handle)
ours = basis_of(handle)
lib.dp_basis_free(handle)
for name, refresh in (("soap", soap_refresh), ("torch", torch_refresh)):
    q = refresh(q0.clone())
    q = q * torch.sign((q * ours).sum(0))
    err = (q - ours).abs().max().item()
    print(f"{name} against diagprec after one refresh: max |difference| {err:.2e}")
    assert err < 1e-3, f"{name}: the bases differ"

handle = new_basis()
state = {"soap": q0.clone(), "torch": q0.clone()}


def run(name):
    begin = time.perf_counter()
    if name == "diagprec":
        for _ in range(args.steps):
            diagprec_refresh(handle)
    else:
        refresh = soap_refresh if name == "soap" else torch_refresh
        for _ in range(args.steps):
            state[name] = refresh(state[name])
    return (time.perf_counter() - begin) / args.steps


names = ["diagprec", "soap", "torch"]
for name in names:
    run(name)
best = {name: float("inf") for name in names}
ratios = {"soap": [], "torch": []}
for r in range(args.rounds):
    order = names if r % 2 == 0 else names[::-1]
    t = {name: run(name) for name in order}
    for name in names:
        best[name] = min(best[name], t[name])
    for name in ratios:
        ratios[name].append(t[name] / t["diagprec"])
lib.dp_basis_free(handle)
print(
    f"n={n} threads={args.threads} (torch {torch.__version__}): best ms per refresh: "
    + ", ".join(f"{name} {best[name] * 1e3:.3f}" for name in names)
)
for name in ratios:
    print(
        f"  {name} time / diagprec: median same-round ratio {statistics.median(ratios[name]):.2f}"
        f" (min {min(ratios[name]):.2f}, max {max(ratios[name]):.2f})"
    )

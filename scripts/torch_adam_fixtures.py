#!/usr/bin/env python3
"""Writes tests/fixtures/adam/*.txt: 50-step trajectories of torch.optim.Adam / AdamW (CPU, f32,
foreach=False, i.e. PyTorch's single-tensor path) that `cargo test` replays through diagprec.

Needs torch; CI does not (the fixtures are committed). Regenerate with:
    python3 scripts/torch_adam_fixtures.py
Every f32 is written as the hex of its bit pattern, so nothing is lost in printing.

File format, one record per line:
    torch <version>
    optimizer adam|adamw
    config <key>=<value> ...      (lr beta1 beta2 eps weight_decay amsgrad maximize)
    len <n>
    steps <k>
    param0 <hex> ...              initial parameters
    grad <hex> ...                the gradient of step t        (k lines, in order)
    param <hex> ...               the parameters after step t   (k lines, in order)
    exp_avg / exp_avg_sq / max_exp_avg_sq <hex> ...   the state after the last step
"""
import pathlib
import struct

import torch

STEPS = 50
OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "adam"

# name: (optimizer, kwargs, length). Odd lengths exercise SIMD tails.
CASES = {
    "adam_default": ("adam", {}, 263),
    "adam_amsgrad": ("adam", {"amsgrad": True}, 67),
    "adam_maximize": ("adam", {"maximize": True, "lr": 3e-3}, 33),
    "adam_l2": ("adam", {"weight_decay": 0.1}, 129),
    "adam_l2_amsgrad_maximize": ("adam", {"weight_decay": 0.05, "amsgrad": True, "maximize": True}, 7),
    "adam_low_betas": ("adam", {"betas": (0.3, 0.5), "lr": 5e-2, "eps": 1e-6}, 33),
    "adamw_default": ("adamw", {"lr": 1e-2}, 263),
    "adamw_amsgrad": ("adamw", {"weight_decay": 0.1, "amsgrad": True}, 67),
    "adamw_maximize": ("adamw", {"maximize": True, "weight_decay": 0.5, "lr": 2e-2}, 1),
}


def hexes(t):
    return " ".join(f"{struct.unpack('<I', struct.pack('<f', float(x)))[0]:08x}" for x in t.tolist())


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(20250101)
    for name, (kind, kwargs, n) in CASES.items():
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        param = torch.nn.Parameter(torch.randn(n, dtype=torch.float32))
        opt = cls([param], foreach=False, fused=False, **kwargs)
        group = opt.param_groups[0]
        lines = [
            f"torch {torch.__version__}",
            f"optimizer {kind}",
            "config "
            + " ".join(
                [
                    f"lr={group['lr']!r}",
                    f"beta1={group['betas'][0]!r}",
                    f"beta2={group['betas'][1]!r}",
                    f"eps={group['eps']!r}",
                    f"weight_decay={group['weight_decay']!r}",
                    f"amsgrad={int(group['amsgrad'])}",
                    f"maximize={int(group['maximize'])}",
                ]
            ),
            f"len {n}",
            f"steps {STEPS}",
            "param0 " + hexes(param.detach()),
        ]
        # Gradients spanning several orders of magnitude, fixed per element, with a drift.
        scale = 10.0 ** torch.empty(n).uniform_(-3.0, 1.0)
        grads, params = [], []
        for _ in range(STEPS):
            g = (torch.randn(n) * scale + 0.1 * param.detach()).to(torch.float32)
            param.grad = g.clone()
            opt.step()
            grads.append("grad " + hexes(g))
            params.append("param " + hexes(param.detach()))
        lines += grads + params
        state = opt.state[param]
        lines.append("exp_avg " + hexes(state["exp_avg"]))
        lines.append("exp_avg_sq " + hexes(state["exp_avg_sq"]))
        if group["amsgrad"]:
            lines.append("max_exp_avg_sq " + hexes(state["max_exp_avg_sq"]))
        (OUT / f"{name}.txt").write_text("\n".join(lines) + "\n")
        print(f"wrote {name}.txt")


if __name__ == "__main__":
    main()

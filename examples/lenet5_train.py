"""LeNet-5 (the textbook's §11.1) trained for a few SGD steps with cuconv.torch layers, beside the
same model in plain PyTorch from the same initial weights and on the same synthetic batch.

    python examples/lenet5_train.py [--steps 6] [--batch 16] [--device cpu|cuda]

On CPU tensors cuconv's kernels run on its emulator (slowly, but the same kernels); on CUDA
tensors on the GPU. Each step prints both losses: they agree within float32 tolerance and
decrease (the model memorises one fixed batch). Exits 1 when either fails.
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

import cuconv.torch as ct

LOSS_RTOL = 1e-4          # float32: the two models differ only in summation order


def lenet5(layers) -> nn.Sequential:
    """§11.1: Conv(6, 5×5) → AvgPool(2×2, s=2) → Conv(16, 5×5) → AvgPool(2×2, s=2) → FC(120) →
    FC(84) → FC(10) on 32×32×1. The book lists no non-linearity; LeNet-5's is tanh after each
    conv and hidden FC (as in cuconv.models.lenet5). ``layers``: torch.nn or cuconv.torch."""
    return nn.Sequential(
        layers.Conv2d(1, 6, 5), nn.Tanh(), layers.AvgPool2d(2, 2),
        layers.Conv2d(6, 16, 5), nn.Tanh(), layers.AvgPool2d(2, 2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))


def train(steps: int = 6, batch: int = 16, device: str = "cpu", lr: float = 0.05, seed: int = 0, log=print):
    """SGD (momentum 0.9) on one synthetic batch; returns [(cuconv loss, torch loss)] per step."""
    torch.manual_seed(seed)
    reference = lenet5(nn).to(device)
    model = lenet5(ct).to(device)
    model.load_state_dict(reference.state_dict())     # the same initial weights
    x = torch.randn(batch, 1, 32, 32, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    optims = [torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9) for m in (model, reference)]
    losses = []
    for step in range(steps):
        pair = []
        for m, opt in zip((model, reference), optims):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x), labels)
            loss.backward()
            opt.step()
            pair.append(loss.item())
        log(f"step {step}: loss cuconv.torch {pair[0]:.6f}  torch {pair[1]:.6f}  "
            f"|difference| {abs(pair[0] - pair[1]):.1e}")
        losses.append(tuple(pair))
    return losses


def check(losses) -> list[str]:
    """The failures: losses that differ by more than LOSS_RTOL, or that do not decrease."""
    bad = [f"step {i}: {a} vs {b}" for i, (a, b) in enumerate(losses) if abs(a - b) > LOSS_RTOL * abs(b)]
    ours = [a for a, _ in losses]
    if any(later >= earlier for earlier, later in zip(ours, ours[1:])):
        bad.append(f"the loss does not decrease: {ours}")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    print(f"LeNet-5 on {args.device}, batch {args.batch}, {args.steps} steps")
    bad = check(train(args.steps, args.batch, args.device))
    for line in bad:
        print("FAILED:", line)
    print("losses equal within", LOSS_RTOL, "and decreasing" if not bad else "")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

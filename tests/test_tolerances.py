"""The tolerance table (cuconv.testing.TOLERANCES) against measurement (issue 22 item 7).

A bound that a correct implementation cannot meet says less than the truth. On the measured
problems below — the longest reduction of the landmark models (512×3×3 = 4608 products, with data
that cannot cancel, the worst case for a sequential sum), a 7×7 and a 1×1 layer, awkward small
ones — torch's own float32 convolution and gradients must be within every float32 bound, exact
tf32 arithmetic (operands rounded to tf32, products and sums exact) within the tf32 bound, and
every cuconv algorithm within its own bound. The reasons in the table quote these figures.
"""
from __future__ import annotations

import sys
import zlib

import numpy as np
import pytest

import cuconv
from cuconv.problem import Conv2dProblem
from cuconv.testing import REDUCTION, TOLERANCES, rel_error, tolerance

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (name, x shape, w shape, conv2d arguments, x range, w range)
MEASURED = [
    ("512x3x3_nonneg", (1, 512, 7, 7), (8, 512, 3, 3), dict(padding=1), (0, 1), (0, 1)),
    ("512x3x3_signed", (1, 512, 7, 7), (8, 512, 3, 3), dict(padding=1), (-1, 1), (-1, 1)),
    ("64x7x7_nonneg", (1, 64, 9, 9), (4, 64, 7, 7), dict(padding=3), (0, 1), (-1, 1)),
    ("1024x1x1_nonneg", (1, 1024, 5, 5), (8, 1024, 1, 1), dict(), (0, 1), (0, 1)),
    ("awkward_stride2_groups", (2, 6, 7, 9), (4, 3, 3, 3), dict(stride=2, padding=1, groups=2), (-1, 1), (-1, 1)),
]
# The table's keys for sums of products in float32 (each bound holds for up to REDUCTION products).
FLOAT32_SUMS = ("direct", "im2col_gemm", "pointwise", "implicit_gemm", "gemm", "depthwise", "separable",
                "conv_transpose", "dgrad", "wgrad")
TF32 = ("implicit_gemm_tf32", "implicit_gemm_tc_simple")


def _problem(case, draw=0):
    _, xs, ws, args, xr, wr = case
    rng = np.random.default_rng(zlib.crc32(case[0].encode()) + draw)
    x = rng.uniform(*xr, size=xs).astype(np.float32)
    w = rng.uniform(*wr, size=ws).astype(np.float32)
    return x, w, args


def _torch(x, w, dy, args, dtype):
    xt = torch.from_numpy(x).to(dtype).requires_grad_()
    wt = torch.from_numpy(w).to(dtype).requires_grad_()
    y = F.conv2d(xt, wt, **args)
    dx, dw = torch.autograd.grad(y, (xt, wt), torch.from_numpy(dy).to(dtype))
    return [a.detach().double().numpy() for a in (y, dx, dw)]


def _tf32(a):
    """fp32 -> tf32 as cvt.rna does it (nearest, ties away from zero: 10 explicit mantissa bits)."""
    bits = a.astype(np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def test_every_entry_states_its_reason():
    for key, entry in TOLERANCES.items():
        assert entry.bound >= 0 and len(entry.reason) > 20, key


@pytest.mark.parametrize("case", MEASURED, ids=[c[0] for c in MEASURED])
def test_torch_float32_and_exact_tf32_meet_the_bounds(case):
    """The bounds are not tighter than float32 (and tf32) arithmetic itself: torch's float32
    forward, data and weight gradients on the same problem, against float64."""
    x, w, args = _problem(case)
    K = x.shape[1] // args.get("groups", 1) * w.shape[2] * w.shape[3]
    y64 = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), **args).numpy()
    dy = np.random.default_rng(1).uniform(-1, 1, y64.shape).astype(np.float32)
    ref = _torch(x, w, dy, args, torch.float64)
    got = _torch(x, w, dy, args, torch.float32)
    errors = dict(zip(("forward", "dgrad", "wgrad"), (rel_error(g, r) for g, r in zip(got, ref))))
    reductions = dict(forward=K, dgrad=w.shape[0] // args.get("groups", 1) * w.shape[2] * w.shape[3],
                      wgrad=y64.shape[0] * y64.shape[2] * y64.shape[3])
    for algo in FLOAT32_SUMS:
        kind = algo if algo in ("dgrad", "wgrad") else "forward"
        bound = tolerance("float32", algo, reduction=reductions[kind])
        assert errors[kind] <= bound, f"torch float32 {kind} error {errors[kind]:.3g} > the {algo} bound {bound:.3g}"
    tf32 = F.conv2d(torch.from_numpy(_tf32(x)).double(), torch.from_numpy(_tf32(w)).double(), **args).numpy()
    for algo in TF32:
        assert rel_error(tf32, y64) <= tolerance("float32", algo, reduction=K), algo


@pytest.mark.parametrize("case", MEASURED, ids=[c[0] for c in MEASURED])
def test_every_algorithm_meets_its_bound(case):
    """cuconv's own error on the measured problems (emulator), every algorithm that runs them."""
    x, w, args = _problem(case)
    problem = Conv2dProblem.from_shapes(x.shape, w.shape, **args)
    K = problem.C_per_group * problem.R * problem.S
    ref = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), **args).numpy()
    with cuconv.backend("emulator"):
        for info in cuconv.algorithms(problem):
            if info.ok:
                err = rel_error(cuconv.conv2d(x, w, algo=info.name, **args), ref)
                assert err <= tolerance("float32", info.name, reduction=K), f"{info.name}: {err:.3g}"


def test_bounds_grow_with_the_reduction_beyond_the_measured_length():
    for key, entry in TOLERANCES.items():
        grown = tolerance(*key, reduction=4 * REDUCTION)
        assert grown == (2 * entry.bound if entry.grows else entry.bound), key
        assert tolerance(*key, reduction=REDUCTION // 2) == entry.bound


def measure(draws: int = 10) -> None:
    """Print the figures the table's reasons quote, the worst over ``draws`` seeded draws of each
    problem: ``PYTHONPATH=src python tests/test_tolerances.py [draws]``."""
    for case in MEASURED:
        worst: dict[str, float] = {}

        def note(what, err):
            worst[what] = max(worst.get(what, 0.0), err)

        for draw in range(draws):
            x, w, args = _problem(case, draw)
            y64 = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), **args).numpy()
            dy = np.random.default_rng(draw).uniform(-1, 1, y64.shape).astype(np.float32)
            ref, got = _torch(x, w, dy, args, torch.float64), _torch(x, w, dy, args, torch.float32)
            for what, g, r in zip(("torch forward", "torch dgrad", "torch wgrad"), got, ref):
                note(what, rel_error(g, r))
            tf32 = F.conv2d(torch.from_numpy(_tf32(x)).double(), torch.from_numpy(_tf32(w)).double(), **args)
            note("exact tf32", rel_error(tf32.numpy(), y64))
            problem = Conv2dProblem.from_shapes(x.shape, w.shape, **args)
            with cuconv.backend("emulator"):
                for info in cuconv.algorithms(problem):
                    if info.ok:
                        note(info.name, rel_error(cuconv.conv2d(x, w, algo=info.name, **args), y64))
        print(f"{case[0]} (worst of {draws}): " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()), flush=True)


if __name__ == "__main__":
    measure(*(int(a) for a in sys.argv[1:]))

"""Measure Winograd's fp32 error against a float64 reference, next to im2col_gemm's.

    python bench/winograd_accuracy.py                       # emulator, writes docs/winograd_accuracy.md
    python bench/winograd_accuracy.py --backend cupy        # the same on a GPU
    python bench/winograd_accuracy.py --channels 8 64 --no-write

For each input channel count C and input distribution, one seeded draw of x (N×C×H×W) and w
(K×C×3×3, U(-1,1)) runs through every algorithm on the chosen backend (the real kernels of
kernels/winograd.cu and kernels/im2col.cu + gemm.cu), and the error is cuconv's normwise
max|y − y64| / max|y64| against cuconv.reference.conv2d_ref in float64 (the metric of the
tolerance table). A second table runs a float32 NumPy model of the non-fused pipeline
(transforms by matrix products, the GEMM by float32 matmul) with two interpolation-point sets
for F(4x4,3x3), Lavin's {0, ±1, ±2, ∞} and its reciprocal {0, ±1, ±1/2, ∞}, over several draws.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

import cuconv
import cuconv.ops  # noqa: F401
from cuconv.ops import winograd as wg
from cuconv.reference import conv2d_ref
from cuconv.testing import rel_error, to_numpy

ROOT = Path(__file__).resolve().parent.parent
ALGOS = ("im2col_gemm", "winograd_f2x2_3x3", "winograd_fused_f2x2_3x3", "winograd_f4x4_3x3")
COLUMN = {"im2col_gemm": "im2col_gemm", "winograd_f2x2_3x3": "F(2x2,3x3)",
          "winograd_fused_f2x2_3x3": "F(2x2,3x3) fused", "winograd_f4x4_3x3": "F(4x4,3x3)"}


def draw(rng, shape, dist: str) -> np.ndarray:
    """Input values: 'U(-1,1)'; 'U(0,1)' (post-ReLU activations, all of one sign);
    'U(-1,1)x1e3' (a scale: the relative error should not move); 'wide' (sign·10^U(-3,3),
    six decades mixed in one tensor)."""
    if dist == "U(-1,1)":
        a = rng.uniform(-1, 1, shape)
    elif dist == "U(0,1)":
        a = rng.uniform(0, 1, shape)
    elif dist == "U(-1,1)x1e3":
        a = rng.uniform(-1, 1, shape) * 1e3
    elif dist == "wide":
        a = rng.choice([-1.0, 1.0], shape) * 10.0 ** rng.uniform(-3, 3, shape)
    else:
        raise ValueError(f"unknown distribution {dist!r}")
    return a.astype(np.float32)


DISTS = ("U(-1,1)", "U(0,1)", "U(-1,1)x1e3", "wide")


def measure_kernels(backend: str, channels, dists, draws: int, N: int, H: int, K: int, seed: int) -> list[dict]:
    """Per (distribution, C): every algorithm's error on ``draws`` seeded draws (the same inputs
    for every algorithm)."""
    rows = []
    for dist in dists:
        for C in channels:
            errs = {a: [] for a in ALGOS}
            for d in range(draws):
                rng = np.random.default_rng([seed, C, DISTS.index(dist), d])
                x = draw(rng, (N, C, H, H), dist)
                w = rng.uniform(-1, 1, (K, C, 3, 3)).astype(np.float32)
                ref = conv2d_ref(x, w, padding=1)
                with cuconv.backend(backend) as be:
                    xb, wb = be.xp.asarray(x), be.xp.asarray(w)
                    for algo in ALGOS:
                        errs[algo].append(rel_error(to_numpy(cuconv.conv2d(xb, wb, padding=1, algo=algo)), ref))
            row = {"dist": dist, "C": C}
            for a in ALGOS:
                row[a] = float(np.median(errs[a]))
                row[a + "_max"] = float(np.max(errs[a]))
            row["ratio"] = float(np.median(np.array(errs["winograd_f4x4_3x3"]) / np.array(errs["winograd_f2x2_3x3"])))
            rows.append(row)
            print(f"{dist:>12} C={C:4d} " + " ".join(f"{COLUMN[a]}={row[a]:.2e}/{row[a + '_max']:.2e}" for a in ALGOS),
                  flush=True)
    return rows


# ----------------------------------------------------------------------------- the float32 model
def model_matrices(points, m):
    AT, G, BT = wg.interpolation_matrices([Fraction(p) for p in points], m)
    return (np.array(AT, dtype=np.float64), np.array(G, dtype=np.float64), np.array(BT, dtype=np.float64))


def model_winograd(x, w, m, mats, pad=1):
    """The non-fused pipeline in float32 NumPy: U in float64 rounded once, V = Bᵀ d B, the α²
    GEMMs and Y = Aᵀ M A in float32. (BT holds powers of two only, so float32 keeps it exact.)"""
    AT, G, BT = mats
    alpha = m + 2
    N, C, H, W = x.shape
    K = w.shape[0]
    P, Q = H + 2 * pad - 2, W + 2 * pad - 2
    th, tw = -(-P // m), -(-Q // m)
    xp = np.zeros((N, C, th * m + 2, tw * m + 2), np.float32)
    xp[:, :, pad:pad + H, pad:pad + W] = x
    U = np.einsum("ir,kcrs,js->ijkc", G, w.astype(np.float64), G).astype(np.float32)
    tiles = np.lib.stride_tricks.sliding_window_view(xp, (alpha, alpha), axis=(2, 3))[:, :, ::m, ::m]
    BT32, AT32 = BT.astype(np.float32), AT.astype(np.float32)
    V = np.einsum("ik,nchwkl,jl->ijcnhw", BT32, tiles, BT32, dtype=np.float32, optimize=True)
    V = V.reshape(alpha, alpha, C, -1)
    Mx = np.matmul(U.reshape(alpha * alpha, K, C), V.reshape(alpha * alpha, C, -1))   # float32 GEMMs
    Mx = Mx.reshape(alpha, alpha, K, N, th, tw)
    Y = np.einsum("ik,klznhw,jl->znhiwj", AT32, Mx, AT32, dtype=np.float32, optimize=True)
    Y = Y.reshape(K, N, th * m, tw * m)[:, :, :P, :Q]
    return Y.transpose(1, 0, 2, 3)


POINT_SETS = {"F(2x2,3x3) {0,±1,∞}": (2, (0, 1, -1)),
              "F(4x4,3x3) {0,±1,±2,∞}": (4, (0, 1, -1, 2, -2)),
              "F(4x4,3x3) {0,±1,±1/2,∞}": (4, (0, 1, -1, Fraction(1, 2), Fraction(-1, 2)))}


def measure_model(channels, dists, draws: int, N: int, H: int, K: int, seed: int) -> list[dict]:
    mats = {name: (m, model_matrices(pts, m)) for name, (m, pts) in POINT_SETS.items()}
    rows = []
    for dist in dists:
        for C in channels:
            errs = {name: [] for name in mats}
            for d in range(draws):
                rng = np.random.default_rng([seed, C, DISTS.index(dist), 1000 + d])
                x = draw(rng, (N, C, H, H), dist)
                w = rng.uniform(-1, 1, (K, C, 3, 3)).astype(np.float32)
                ref = conv2d_ref(x, w, padding=1)
                for name, (m, M) in mats.items():
                    errs[name].append(rel_error(model_winograd(x, w, m, M), ref))
            row = {"dist": dist, "C": C}
            row.update({name: float(np.median(v)) for name, v in errs.items()})
            rows.append(row)
            print(f"model {dist:>12} C={C:4d} " + " ".join(f"{n}={row[n]:.2e}" for n in mats), flush=True)
    return rows


# ----------------------------------------------------------------------------- the report
def _git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def report(rows, model_rows, args, command: str, elapsed: float) -> str:
    lines = [
        "# Winograd accuracy (fp32)",
        "",
        "Normwise relative error `max|y − y64| / max|y64|` of each algorithm against the float64",
        "reference (`cuconv.reference.conv2d_ref`), the metric of `cuconv.testing.TOLERANCES`.",
        f"Problem: N={args.batch}, C as listed, H=W={args.size}, K={args.k}, 3x3, stride 1, padding 1;",
        f"w ~ U(-1,1); x as listed. Each cell: median over {args.draws} seeded draws, and in brackets the",
        "worst of them (every algorithm sees the same draws).",
        "",
        f"Produced by `{command}` on backend `{args.backend}` "
        f"({datetime.date.today().isoformat()}, git {_git_rev()}, {platform.machine()}, {elapsed:.0f} s).",
        "",
        "## The kernels",
        "",
        "| x | C | " + " | ".join(COLUMN[a] for a in ALGOS) + " | F(4x4)/F(2x2) |",
        "|---|--:|" + "--:|" * (len(ALGOS) + 1),
    ]
    for r in rows:
        lines.append(f"| {r['dist']} | {r['C']} | " + " | ".join(f"{r[a]:.1e} ({r[a + '_max']:.1e})" for a in ALGOS)
                     + f" | {r['ratio']:.1f}x |")
    ratios = [r["ratio"] for r in rows]
    f2_vs_gemm = [r["winograd_f2x2_3x3"] / r["im2col_gemm"] for r in rows if r["im2col_gemm"] > 0]
    f4_vs_gemm = [r["winograd_f4x4_3x3"] / r["im2col_gemm"] for r in rows if r["im2col_gemm"] > 0]
    worst = {a: max(r[a + "_max"] for r in rows) for a in ALGOS}
    lines += [
        "",
        f"F(4x4,3x3)'s error over F(2x2,3x3)'s (same draw): median {np.median(ratios):.1f}x "
        f"(rows range {min(ratios):.1f}x–{max(ratios):.1f}x). Over im2col_gemm's: F(2x2,3x3) median "
        f"{np.median(f2_vs_gemm):.2f}x, F(4x4,3x3) median {np.median(f4_vs_gemm):.1f}x. Worst over all draws: "
        + ", ".join(f"{COLUMN[a]} {worst[a]:.1e}" for a in ALGOS) + ".",
    ]
    if model_rows:
        names = list(POINT_SETS)
        lines += [
            "",
            "## Interpolation points (float32 NumPy model)",
            "",
            f"The pipeline modelled in NumPy float32 (`model_winograd` in the script), median over "
            f"{args.model_draws} draws per row, same problem shape.",
            "",
            "| x | C | " + " | ".join(names) + " |",
            "|---|--:|" + "--:|" * len(names),
        ]
        for r in model_rows:
            lines.append(f"| {r['dist']} | {r['C']} | " + " | ".join(f"{r[n]:.2e}" for n in names) + " |")
    lines += [
        "",
        "## Reading the tables",
        "",
        "* Why F(4x4,3x3) is worse: its transforms mix values with larger coefficients (Bᵀ up to 5,",
        "  Aᵀ up to 8, G down to 1/24), so the transformed tiles are larger than the data and the",
        "  output transform cancels much of what the products add up; the float32 rounding of those",
        "  large intermediates survives the cancellation. F(2x2,3x3) only adds and subtracts (Bᵀ, Aᵀ",
        "  in {0, ±1}) and halves (G).",
        "* The error grows slowly with C (the reduction over channels) for every algorithm, and does",
        "  not depend on the scale of x (the U(-1,1)x1e3 rows match U(-1,1)): the error is relative.",
        "* F(2x2,3x3) is *more* accurate than im2col_gemm: per transform position its float32 sum",
        "  runs over C products (the output transform then adds a few such sums), while im2col_gemm",
        "  sums all 9·C products of an output in one chain, and a sequential sum's rounding grows with",
        "  its length. The fused and non-fused F(2x2,3x3) kernels accumulate over C in the same order,",
        "  so their errors coincide.",
        "* {0, ±1, ±1/2, ∞} is the reciprocal of {0, ±1, ±2, ∞}: it reverses every transform",
        "  polynomial, so it is the same algorithm on reversed tiles up to power-of-two scales, which",
        "  float32 applies exactly. The model rows agree within draw-to-draw noise, so the kernels keep",
        "  Lavin's matrices (kernels/winograd.cu derives them).",
        "* The tests (tests/test_winograd.py) assert bounds taken from these numbers: see",
        "  `test_accuracy_against_measured_bounds` and the Winograd rows of `cuconv.testing.TOLERANCES`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="emulator", choices=("emulator", "cupy"))
    ap.add_argument("--channels", type=int, nargs="+", default=[8, 32, 128, 512])
    ap.add_argument("--dists", nargs="+", default=list(DISTS), choices=DISTS)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=12, help="H = W")
    ap.add_argument("--k", type=int, default=16, help="output channels")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--draws", type=int, default=3, help="seeded draws per row (kernels)")
    ap.add_argument("--model-draws", type=int, default=5)
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "docs" / "winograd_accuracy.md"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    command = "python bench/winograd_accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    t0 = time.perf_counter()
    rows = measure_kernels(args.backend, args.channels, args.dists, args.draws, args.batch, args.size, args.k,
                           args.seed)
    model_rows = [] if args.no_model else measure_model(args.channels, args.dists, args.model_draws,
                                                        args.batch, args.size, args.k, args.seed)
    text = report(rows, model_rows, args, command.strip(), time.perf_counter() - t0)
    if args.no_write:
        print(text)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

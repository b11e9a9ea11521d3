"""Measure the FFT algorithms' fp32 error against a float64 reference, next to im2col_gemm's.

    python bench/fft_accuracy.py                    # emulator, writes docs/fft_accuracy.md
    python bench/fft_accuracy.py --backend cupy     # the same on a GPU (cuFFT instead of pocketfft)
    python bench/fft_accuracy.py --quick --no-write

Cases: the stride-1 large-kernel layers of cuconv.models (LeNet-5's two 5x5 convolutions,
AlexNet's conv2 5x5, EfficientNet-B0's 5x5 depthwise at a reduced channel count; the 7x7 and
11x11 stems of ResNet/GoogLeNet/AlexNet are strided, which the FFT algorithms refuse) and
synthetic 5x5 ... 15x15 "same" convolutions at C = 16 and 128. For each case and input
distribution, seeded draws of x and w (U(-1,1)) run through every algorithm on the chosen
backend — the real kernels of kernels/fft_conv.cu around the backend's FFT (pocketfft in
float32 on the emulator; cuFFT on a GPU) — and the error is cuconv's normwise
max|y − y64| / max|y64| against cuconv.reference.conv2d_ref in float64, the metric of the
tolerance table.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

import cuconv
import cuconv.ops  # noqa: F401
from cuconv.ops import fft_conv
from cuconv.problem import Conv2dProblem
from cuconv.reference import conv2d_ref
from cuconv.testing import TOLERANCES, rel_error, to_numpy

ROOT = Path(__file__).resolve().parent.parent
ALGOS = ("im2col_gemm", "fft", "fft_tiling")
DISTS = ("U(-1,1)", "U(0,1)", "wide")

# name, x shape (N, C, H, W), weight shape (K, C/g, R, S), padding, groups
LANDMARK = [
    ("LeNet-5 conv1 5x5 1->6", (1, 1, 32, 32), (6, 1, 5, 5), 0, 1),
    ("LeNet-5 conv2 5x5 6->16", (1, 6, 14, 14), (16, 6, 5, 5), 0, 1),
    ("AlexNet conv2 5x5 64->192", (1, 64, 27, 27), (192, 64, 5, 5), 2, 1),
    ("EfficientNet-B0 dw 5x5 (64 of 240 ch)", (1, 64, 28, 28), (64, 1, 5, 5), 2, 64),
]
SYNTHETIC_KERNELS = (5, 7, 9, 11, 13, 15)
SYNTHETIC_CHANNELS = (16, 128)
SYNTHETIC_SIZE = 32
SYNTHETIC_K = 16


def synthetic_cases(kernels, channels) -> list:
    return [(f"synthetic {k}x{k} C={c}", (1, c, SYNTHETIC_SIZE, SYNTHETIC_SIZE), (SYNTHETIC_K, c, k, k), k // 2, 1)
            for c in channels for k in kernels]


def draw(rng, shape, dist: str) -> np.ndarray:
    """'U(-1,1)'; 'U(0,1)' (post-ReLU activations, one sign: a large DC term in every spectrum);
    'wide' (sign·10^U(-3,3), six decades mixed in one tensor)."""
    if dist == "U(-1,1)":
        a = rng.uniform(-1, 1, shape)
    elif dist == "U(0,1)":
        a = rng.uniform(0, 1, shape)
    elif dist == "wide":
        a = rng.choice([-1.0, 1.0], shape) * 10.0 ** rng.uniform(-3, 3, shape)
    else:
        raise ValueError(f"unknown distribution {dist!r}")
    return a.astype(np.float32)


def measure(backend: str, cases, dists, draws: int, seed: int) -> list[dict]:
    rows = []
    for name, xs, ws, pad, groups in cases:
        p = Conv2dProblem.from_shapes(xs, ws, 1, pad, 1, groups)
        sizes = {a: "x".join(map(str, fft_conv.fft_size(p, a))) for a in ("fft", "fft_tiling")}
        for dist in dists:
            errs = {a: [] for a in ALGOS}
            for d in range(draws):
                rng = np.random.default_rng([seed, d, zlib.crc32(name.encode()), DISTS.index(dist)])
                x, w = draw(rng, xs, dist), rng.uniform(-1, 1, ws).astype(np.float32)
                ref = conv2d_ref(x, w, padding=pad, groups=groups)
                with cuconv.backend(backend) as be:
                    for a in ALGOS:
                        y = cuconv.conv2d(be.xp.asarray(x), be.xp.asarray(w), padding=pad, groups=groups, algo=a)
                        errs[a].append(rel_error(to_numpy(y), ref))
            rows.append(dict(name=name, dist=dist, C=xs[1], R=ws[2], sizes=sizes,
                             median={a: float(np.median(v)) for a, v in errs.items()},
                             worst={a: float(np.max(v)) for a, v in errs.items()}))
            print(f"{name:40s} {dist:8s} " + "  ".join(f"{a} {rows[-1]['median'][a]:.2e} ({rows[-1]['worst'][a]:.2e})"
                                                     for a in ALGOS), flush=True)
    return rows


def _git() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return "unknown"


def markdown(rows, backend: str, draws: int, seconds: float, command: str) -> str:
    worst = {a: max(r["worst"][a] for r in rows) for a in ALGOS}
    ratio = [r["median"][a] / r["median"]["im2col_gemm"] for r in rows for a in ("fft", "fft_tiling")]
    lines = [
        "# FFT convolution accuracy (fp32 data, complex64 spectra)",
        "",
        "Normwise relative error `max|y − y64| / max|y64|` of each algorithm against the float64",
        "reference (`cuconv.reference.conv2d_ref`), the metric of `cuconv.testing.TOLERANCES`. Stride 1",
        f"(the FFT algorithms refuse strided convolutions), w ~ U(-1,1), x as listed. Each cell: median over "
        f"{draws} seeded draws, in brackets the worst (every algorithm sees the same draws). The transform",
        "size is the fft / fft_tiling Lh×Lw.",
        "",
        f"Produced by `{command}` on backend `{backend}` ({datetime.date.today()}, git {_git()}, "
        f"{platform.machine()}, {seconds:.0f} s). On the emulator the transforms are NumPy's pocketfft "
        f"in float32 (NumPy {np.__version__}); cuFFT's rounding differs in detail and is not measured here "
        "(no GPU run yet): rerun with `--backend cupy` on a device.",
        "",
        "| case | x | fft / fft_tiling size | im2col_gemm | fft | fft_tiling |",
        "|---|---|---|--:|--:|--:|",
    ]
    for r in rows:
        cells = " | ".join(f"{r['median'][a]:.1e} ({r['worst'][a]:.1e})" for a in ALGOS)
        lines.append(f"| {r['name']} | {r['dist']} | {r['sizes']['fft']} / {r['sizes']['fft_tiling']} | {cells} |")
    lines += [
        "",
        f"Worst over all draws: im2col_gemm {worst['im2col_gemm']:.1e}, fft {worst['fft']:.1e}, fft_tiling "
        f"{worst['fft_tiling']:.1e}. FFT error over im2col_gemm's (same draw, medians): median "
        f"{np.median(ratio):.2f}x, range {min(ratio):.2f}x–{max(ratio):.2f}x.",
        "",
        "Reading: the FFT rows barely move with the kernel size (5x5 ... 15x15) and grow slowly with C",
        "(the channel sum runs in the frequency domain, in complex64), while the direct sum's error",
        "grows with its reduction length C·R·S. That fits the usual analysis of FFT rounding: it is",
        "relative to a whole plane's norm and grows with log2(Lh·Lw), not with the window. None of the",
        "distributions here (one-sign inputs with a large DC term, six decades of magnitude) made the FFT",
        "worse than the direct sum.",
        "",
        f"Tolerance table: `(\"float32\", \"fft\")` and `(\"float32\", \"fft_tiling\")` = "
        f"{TOLERANCES[('float32', 'fft')]:.0e}, the fp32 direct algorithms' bound: "
        f"{TOLERANCES[('float32', 'fft')] / max(worst['fft'], worst['fft_tiling']):.1f}x the worst FFT error "
        "measured here, the margin covering cuFFT's transforms, which no run has measured yet.",
        "",
        'Non-finite values: a transform spreads one NaN or ±Inf over its whole plane (every output of the',
        'item — the image for `fft`, the tile for `fft_tiling` — and, for a weight, of the whole output',
        'channel), and relu would then turn that NaN into a plausible 0. The plans flag every item whose',
        'input window holds a non-finite value, every item where a transform produced one from finite data',
        "(the spectra overflow float32 long before direct convolution's sum does), and every output channel",
        "whose filter holds one, and `fft_conv_fixup` recomputes those outputs in `direct.cu`'s order and",
        "epilogue (kernels/fft_conv.cu's header). So NaN/±Inf reach exactly the outputs direct convolution",
        'gives them, and every flagged output equals `algo="direct"` bit for bit; the rest are the FFT\'s',
        'values, within the tolerance above (tests/test_fft_conv.py, `test_non_finite_*`). Not covered:',
        'a finite but huge input (say 1e30) that does not overflow still raises the rounding error of every',
        'output of its item to about 1e-7 of the largest value (the normwise error above), far above the',
        "small outputs' own magnitude (one 1e30 in a 20x20 image, 5x5 filter, C=K=4: outputs of magnitude",
        "<= 10 outside its window off by up to 1.6e22; normwise error 7e-8).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="emulator", choices=("emulator", "cupy"))
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--quick", action="store_true", help="7x7 and 11x11 at C=16 only, one distribution")
    ap.add_argument("--no-write", action="store_true", help="print only, do not write docs/fft_accuracy.md")
    args = ap.parse_args(argv)
    if args.quick:
        cases, dists = synthetic_cases((7, 11), (16,)), ("U(-1,1)",)
    else:
        cases, dists = LANDMARK + synthetic_cases(SYNTHETIC_KERNELS, SYNTHETIC_CHANNELS), DISTS
    t = time.time()
    rows = measure(args.backend, cases, dists, args.draws, args.seed)
    seconds = time.time() - t
    command = "python bench/fft_accuracy.py" + (f" --backend {args.backend}" if args.backend != "emulator" else "")
    text = markdown(rows, args.backend, args.draws, seconds, command)
    if args.no_write or args.quick:
        print(text)
    else:
        out = ROOT / "docs" / "fft_accuracy.md"
        out.write_text(text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

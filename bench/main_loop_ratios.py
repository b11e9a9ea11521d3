"""Static main-loop figures of the kernels `auto` plans for one convolution layer (no GPU needed).

    PYTHONPATH=src python bench/main_loop_ratios.py                      # ResNet-50 3x3 128->128, 28x28, batch 32
    PYTHONPATH=src python bench/main_loop_ratios.py --layer 32,64,56,56,64 --arch sm_80 --arch sm_90

For each (dtype, layout, algorithm) the record backend plans the layer for the arch (its
compute capability; 108 SMs for sm_80, 132 otherwise), and cuconv.analysis reads the SASS of
the compute kernel the plan launches: registers, spill bytes, main-loop instructions per
iteration, the issue ceiling and the uncapped issue ratio (math-pipe clocks per warp over
issue slots; docs/static_analysis.md). These are static figures from NVRTC's code, not
measurements: no GPU has timed these kernels here.
"""
from __future__ import annotations

import argparse

import numpy as np

import cuconv
from cuconv import analysis
from cuconv.compile import find_kernel

JOBS = (("float32", "NCHW", "implicit_gemm"), ("float16", "NHWC", "implicit_gemm_tc"),
        ("float16", "NCHW", "implicit_gemm_tc"), ("float16", "NHWC", "auto"))


def rows(layer, archs):
    N, C, H, W, K = layer
    for dtype, layout, algo in JOBS:
        for arch in archs:
            cc = int(arch.removeprefix("sm_").rstrip("a"))
            x = np.zeros((N, H, W, C) if layout == "NHWC" else (N, C, H, W), dtype)
            w = np.zeros((K, 3, 3, C) if layout == "NHWC" else (K, C, 3, 3), dtype)
            with cuconv.backend("record", cc=cc, sms=108 if cc == 80 else 132) as rec:
                cuconv.conv2d(x, w, padding=1, algo=algo, layout=layout)
            for label in rec.kernels():
                entry = find_kernel(label)
                target = arch if arch in entry.archs else next(a for a in entry.archs if a.rstrip("a") == arch)
                a = analysis.analyze_entry(entry, target)
                if a.main_loop is None or not a.main_loop.path_mix.math:
                    continue   # a layout pack, not the compute kernel
                yield (f"{dtype} {layout} {algo}", target, label, a.registers, a.spill_bytes,
                       a.main_loop.instructions, a.ceiling, a.issue_ratio)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="32,128,28,28,128", help="N,C,H,W,K of a 3x3 stride-1 padding-1 layer")
    ap.add_argument("--arch", action="append", default=None, help="sm_80, sm_90, ... (repeatable; default sm_80, sm_90)")
    args = ap.parse_args(argv)
    layer = tuple(int(v) for v in args.layer.split(","))
    print("| job | arch | kernel | regs | spill B | loop instr | issue ceiling | uncapped issue ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for job, arch, label, regs, spill, instr, ceiling, ratio in rows(layer, args.arch or ["sm_80", "sm_90"]):
        fmt = lambda v, f: "-" if v is None else f.format(v)  # noqa: E731
        print(f"| {job} | {arch} | {label} | {regs} | {spill} | {instr} | {fmt(ceiling, '{:.0%}')} | "
              f"{fmt(ratio, '{:.2f}')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

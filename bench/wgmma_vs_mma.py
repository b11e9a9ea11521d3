"""mma.sync (HMMA) against wgmma (HGMMA) on the same GEMM and convolution shapes, on a GPU.

    python bench/wgmma_vs_mma.py                         # fp16, the default shapes
    python bench/wgmma_vs_mma.py --dtype bfloat16 --json bench/wgmma_vs_mma_h100.json
    python bench/wgmma_vs_mma.py --quick                 # fewer shapes, a short budget per kernel
    python bench/wgmma_vs_mma.py --convs-only --cudnn    # every wgmma config (the warp-specialized
                                                         # TMA one included) against cuDNN via PyTorch

For each shape, every kernel is first checked against a float64 reference computed on the
device from the same (quantized) operands, then timed with CUDA events after warm-up, L2
flushed between runs (cuconv.bench.measure): median and p20/p80 of the kernel time and the
effective TFLOP/s (2·M·N·K, or 2·N·K·P·Q·C·R·S for a convolution, over the median).

Kernels per shape (NHWC activations, KRSC weights: both kernels' native layout, so no pack):
  * GEMM M x N x K, as a 1x1 convolution of an (1, M, 1, K) image with N filters:
    tc_gemm (mma.sync; row-major A and B) next to wgmma_conv (a 1x1 conv is the same GEMM);
  * convolutions: implicit_gemm_tc (tc_conv, mma.sync) next to implicit_gemm_wgmma.
Each wgmma row also runs every wgmma config that can implement the shape ("wgmma best" is the
fastest). ``--cudnn`` adds PyTorch's conv2d (cuDNN, channels_last, cudnn.benchmark) on the same
device arrays (shared through DLPack, no copy), verified the same way; ``--convs-only`` skips the
GEMMs. Needs an sm_90 device (H100/H200); elsewhere it prints why and exits 2. Nothing here
is a test and nothing asserts a time.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys

import numpy as np

GEMMS = [(4096, 4096, 4096), (8192, 8192, 8192), (16384, 4096, 4096), (2048, 2048, 8192)]
# (N, C, H, W, K, R, S, stride, pad): ResNet-50 layers at batch 32 and a few larger ones
CONVS = [
    (32, 64, 56, 56, 64, 3, 3, 1, 1),
    (32, 128, 28, 28, 128, 3, 3, 1, 1),
    (32, 256, 14, 14, 256, 3, 3, 1, 1),
    (32, 512, 7, 7, 512, 3, 3, 1, 1),
    (32, 256, 56, 56, 64, 1, 1, 1, 0),
    (32, 1024, 14, 14, 256, 1, 1, 1, 0),
    (32, 128, 56, 56, 128, 3, 3, 2, 1),
    (16, 256, 64, 64, 256, 3, 3, 1, 1),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtype", default="float16", choices=("float16", "bfloat16"))
    ap.add_argument("--quick", action="store_true", help="two shapes of each kind, 0.5 s per kernel")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of timing per kernel (default 2)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON to this path")
    ap.add_argument("--cudnn", action="store_true", help="also time cuDNN through PyTorch (torch.nn.functional.conv2d)")
    ap.add_argument("--convs-only", action="store_true", help="only the convolution shapes")
    args = ap.parse_args(argv)

    import cupy as cp

    import cuconv
    from cuconv.bench.measure import L2Flusher, TimingOptions, time_gpu
    from cuconv.ops import tc_gemm
    from cuconv.ops import wgmma_conv as wg
    from cuconv.problem import Conv2dProblem

    try:
        dev = cp.cuda.Device()
        cc = int(dev.compute_capability)
    except Exception as exc:  # no driver / device
        print(f"no CUDA device: {exc}", file=sys.stderr)
        return 2
    if cc != 90:
        print(f"this benchmark needs an sm_90 device (H100/H200) for wgmma; this one is sm_{cc}", file=sys.stderr)
        return 2
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    opts = TimingOptions(budget_s=0.5 if args.quick else args.budget)
    flusher = L2Flusher(props.get("l2CacheSize"))
    if args.dtype == "bfloat16":
        import ml_dtypes  # noqa: PLC0415  (CuPy takes bfloat16 arrays through ml_dtypes' dtype)
        dt = ml_dtypes.bfloat16
    else:
        dt = np.float16
    rng = np.random.default_rng(0)
    gemms = [] if args.convs_only else GEMMS[:2] if args.quick else GEMMS
    torch = _torch_cudnn() if args.cudnn else None
    convs = CONVS[:2] if args.quick else CONVS
    rows = []

    def draw(shape, scale=1.0):
        return cp.asarray((rng.uniform(-1, 1, shape) * scale).astype(np.float32).astype(dt))

    def check(y, ref):
        err = float(cp.max(cp.abs(y.astype(cp.float64) - ref)) / (cp.max(cp.abs(ref)) + 1e-30))
        return err < 2e-2 if args.dtype == "bfloat16" else err < 4e-3, err

    def timed(label, shape_text, flops, fn, ref):
        y = fn()
        ok, err = check(y, ref)
        stats = time_gpu(fn, opts, flusher)
        row = dict(kernel=label, shape=shape_text, dtype=args.dtype, verified=ok, rel_err=err,
                   median_ms=stats.median_s * 1e3, p20_ms=stats.p20_s * 1e3, p80_ms=stats.p80_s * 1e3,
                   tflops=flops / stats.median_s / 1e12)
        rows.append(row)
        print(f"  {label:<34} {'ok ' if ok else 'BAD'} {row['median_ms']:9.3f} ms "
              f"[{row['p20_ms']:.3f}, {row['p80_ms']:.3f}]  {row['tflops']:7.1f} TFLOP/s", flush=True)
        return row

    print(f"{name} (sm_{cc}), CuPy {cp.__version__}, {args.dtype}")
    for M, N, K in gemms:
        print(f"GEMM {M}x{N}x{K}")
        a, b = draw((M, K)), draw((K, N))
        ref = a.astype(cp.float64) @ b.astype(cp.float64)
        flops = 2.0 * M * N * K
        timed("tc_gemm (mma.sync)", f"{M}x{N}x{K}", flops, lambda: tc_gemm.tc_gemm(a, b), ref)
        x = a.reshape(1, M, 1, K)
        w = cp.ascontiguousarray(b.T).reshape(N, 1, 1, K)
        p = Conv2dProblem.from_shapes((1, K, M, 1), (N, K, 1, 1), dtype=args.dtype)
        for cfg in wg.CONFIGS:
            if cfg.dtype == args.dtype and cfg.stages > 1 and cfg.can_implement(p) is None:
                timed(f"wgmma {cfg.name}", f"{M}x{N}x{K}", flops,
                      lambda cfg=cfg: cuconv.conv2d(x, w, algo="implicit_gemm_wgmma", layout="NHWC",
                                                    config=cfg.name).reshape(M, N), ref)
    for N_, C, H, W, K, R, S, st, pad in convs:
        shape = f"N{N_} C{C} H{H} W{W} K{K} {R}x{S}/{st}"
        print(f"conv {shape}")
        x, w = draw((N_, H, W, C)), draw((K, R, S, C), 1.0 / np.sqrt(C * R * S))
        p = Conv2dProblem.from_shapes((N_, C, H, W), (K, C, R, S), st, pad, dtype=args.dtype)
        xr = cp.ascontiguousarray(x.astype(cp.float64).transpose(0, 3, 1, 2))
        wr = cp.ascontiguousarray(w.astype(cp.float64).transpose(0, 3, 1, 2))
        ref = _conv_ref_gpu(cp, xr, wr, st, pad).transpose(0, 2, 3, 1)
        flops = float(p.flops()) if callable(getattr(p, "flops", None)) else 2.0 * N_ * K * p.P * p.Q * C * R * S
        timed("implicit_gemm_tc (mma.sync)", shape, flops,
              lambda: cuconv.conv2d(x, w, stride=st, padding=pad, algo="implicit_gemm_tc", layout="NHWC"), ref)
        for cfg in wg.CONFIGS:
            if cfg.dtype == args.dtype and cfg.stages > 1 and cfg.can_implement(p) is None:
                timed(f"wgmma {cfg.name}", shape, flops,
                      lambda cfg=cfg: cuconv.conv2d(x, w, stride=st, padding=pad, algo="implicit_gemm_wgmma",
                                                    layout="NHWC", config=cfg.name), ref)
        if torch is not None:
            # NHWC storage seen as NCHW tensors in channels_last format: the same bytes, no copy.
            xt = torch.from_dlpack(x).permute(0, 3, 1, 2)
            wt = torch.from_dlpack(w).permute(0, 3, 1, 2)

            def cudnn_conv(xt=xt, wt=wt, st=st, pad=pad):
                y = torch.nn.functional.conv2d(xt, wt, stride=st, padding=pad)
                return cp.from_dlpack(y.permute(0, 2, 3, 1).contiguous())
            timed("cuDNN (PyTorch conv2d)", shape, flops, cudnn_conv, ref)
    if torch is not None:
        _summary(rows, "cuDNN", lambda r: r["kernel"].startswith("cuDNN"))
    _summary(rows, "mma.sync", lambda r: "mma.sync" in r["kernel"])
    if args.json:
        header = dict(device=name, compute_capability=cc, cupy=cp.__version__, python=platform.python_version(),
                      dtype=args.dtype)
        with open(args.json, "w") as f:
            json.dump(dict(header=header, rows=rows), f, indent=2)
    return 0 if all(r["verified"] for r in rows) else 1


def _summary(rows, base: str, is_base) -> None:
    """Per shape: the baseline's TFLOP/s, the TMA config's, the best wgmma config's, its ratio."""
    print(f"\n| shape | {base} TFLOP/s | wgmma TMA TFLOP/s | wgmma best TFLOP/s | best config | best / {base} |")
    print("|---|---|---|---|---|---|")
    for shape in dict.fromkeys(r["shape"] for r in rows):
        group = [r for r in rows if r["shape"] == shape and r["verified"]]
        ref = [r for r in group if is_base(r)]
        tma = [r["tflops"] for r in group if "_tma_" in r["kernel"]]
        wgs = [r for r in group if r["kernel"].startswith("wgmma")]
        if ref and wgs:
            best = max(wgs, key=lambda r: r["tflops"])
            print(f"| {shape} | {ref[0]['tflops']:.1f} | {tma[0] if tma else float('nan'):.1f} | {best['tflops']:.1f} | "
                  f"{best['kernel'][6:]} | {best['tflops'] / ref[0]['tflops']:.2f} |")


def _torch_cudnn():
    """PyTorch with CUDA and cuDNN (benchmark mode: it picks its fastest algorithm), or None with
    the reason printed: the cuDNN rows are then missing, the rest runs."""
    try:
        import torch  # noqa: PLC0415  (optional: only for the cuDNN baseline)
    except ImportError as exc:
        print(f"no cuDNN baseline: PyTorch is not installed ({exc})", file=sys.stderr)
        return None
    if not torch.cuda.is_available() or not torch.backends.cudnn.is_available():
        print("no cuDNN baseline: this PyTorch has no CUDA/cuDNN", file=sys.stderr)
        return None
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    return torch


def _conv_ref_gpu(cp, x, w, stride, pad):
    """float64 NCHW cross-correlation on the device: one batched matmul per filter tap."""
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P = (H + 2 * pad - R) // stride + 1
    Q = (W + 2 * pad - S) // stride + 1
    xp = cp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = cp.zeros((N, K, P, Q), cp.float64)
    for r in range(R):
        for s in range(S):
            patch = xp[:, :, r:r + stride * P:stride, s:s + stride * Q:stride]      # N C P Q
            out += cp.einsum("ncpq,kc->nkpq", patch, w[:, :, r, s])
    return out


if __name__ == "__main__":
    sys.exit(main())

"""`cuconv check`: cuconv's kernels against the float64 reference, on the CPU emulator or on the GPU.

    cuconv check                                    # every algorithm on the bench layers, emulated
    cuconv check --sanitize address,undefined --order random --seed 3
    cuconv check seed -k depthwise
    cuconv check --gpu                              # every kernel on the GPU, small awkward sizes
    cuconv check --gpu --devices all                # ... on each GPU, one process per device
    cuconv check --gpu --one-per-file               # one small problem per kernel file (sanitizer runs)

Without ``--gpu``: the same cases as `cuconv bench` (default: the `algos` suite — every
algorithm on every layer where it applies), verified at a reduced size on the emulator,
optionally under the sanitizers and a race-exposing thread order. Nothing is timed. Exit
status 1 when any case fails verification.

``--gpu`` is the first thing to run on a new machine, and the output a bug report should
include: every registered kernel that can run on the device (each GEMM, implicit-GEMM and
tensor-core config, each depthwise, pooling, Winograd and transposed-convolution variant),
launched through the public ops on small awkward problems (C=3, odd H and W, stride 2,
dilation 2, groups, sizes no tile divides) with NaN-poisoned outputs, against the float64
reference with cuconv.testing's tolerance table. One line per kernel file: cases, failures,
kernels exercised out of those registered for the device's arch. Exit status 1 when a case is
wrong or raises, 0 when all pass, and 4 (EXIT_NO_GPU) when there is no GPU to check (or the
device is older than sm_75, which cuconv builds nothing for: said once, nothing is run).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import sys
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import __version__, launchability
from ..arch import normalize_arch
from ..dtypes import tag
from ..backend import gpu_available, gpu_unsupported_reason, using
from ..backend import backend as use_backend
from ..ops import conv2d as conv2d_mod
from ..ops._algorithm import DGRAD, WGRAD
from ..ops import depthwise as depthwise_mod
from ..ops import gemm as gemm_mod
from ..ops import implicit_gemm as implicit_gemm_mod
from ..ops import tc_common, wgmma_conv
from ..ops.conv_transpose import conv_transpose2d
from ..ops.gemm import gemm
from ..ops.im2col import im2col
from ..ops.pool import avg_pool2d, global_avg_pool2d, max_pool2d
from ..ops.separable import separable_conv2d
from ..ops.tc_gemm import tc_gemm
from ..problem import Conv2dProblem
from .. import grad as grad_ops
from ..ops import conv_dgrad as conv_dgrad_mod
from ..ops import conv_wgrad as conv_wgrad_mod
from ..reference import (
    avg_pool2d_backward_ref,
    conv2d_bias_ref,
    conv2d_input_ref,
    conv2d_ref,
    conv2d_weight_ref,
    gemm_ref,
    global_avg_pool2d_backward_ref,
    im2col_ref,
    max_pool2d_backward_ref,
)
from ..reference.pool import avg_pool2d_ref, global_avg_pool2d_ref, max_pool2d_ref
from ..reference.transposed import conv_transpose2d_ref
from ..compile import runs_on
from ..registry import kernel as registered_kernel
from ..registry import registered_kernels
from ..testing import poison, rel_error, tolerance
from . import bench

# Exit status of `cuconv check --gpu` when there is no GPU: distinct from a failure (1) and from
# bad usage (2), so a script can tell "nothing was checked" from "something is wrong".
EXIT_NO_GPU = 4
# Kernel files that no op launches: tc_probe.cu holds instruction probes (mma, ldmatrix,
# cp.async semantics) that tests/test_tc_probe.py drives against hand-derived tables.
NOT_OP_KERNELS = {"tc_probe.cu": "instruction probes: checked by tests/test_tc_probe.py (pytest -m gpu)",
                  "wgmma_probe.cu": "instruction probes: checked by tests/test_wgmma_probe.py (pytest -m gpu)"}


def add_arguments(parser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n", 1)[1]
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help="bench suites or models to check on the emulator (default: algos)")
    parser.add_argument("--gpu", action="store_true",
                        help="every kernel on the GPU against the float64 reference at small sizes")
    parser.add_argument("--one-per-file", action="store_true",
                        help="--gpu: only the first case of each kernel file (for compute-sanitizer runs)")
    parser.add_argument("--device", type=int, default=0, help="--gpu: CUDA device index (default 0)")
    parser.add_argument("--devices", default=None, metavar="all|I,J,...",
                        help="--gpu: check each of these devices, one process per device")
    parser.add_argument("--sanitize", default=None, metavar="KINDS",
                        help='emulator sanitizers, e.g. "address,undefined"')
    parser.add_argument("--order", default=None, choices=("forward", "reverse", "random"),
                        help="order in which the threads of a block run between barriers")
    parser.add_argument("--seed", type=int, default=None, help="seed of --order random (and of --gpu's inputs)")
    parser.add_argument("-k", "--filter", default=None, help="only cases whose name contains TEXT")
    parser.add_argument("--algo", default="all", help="conv2d algorithm(s): all (default), auto or a name")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the rows as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar / no per-case lines")
    parser.add_argument("--launchability", nargs="?", const="all", default=None, metavar="all|device|sm_XX,...",
                        help="plan every landmark model's conv/pool layers on the record backend and check every "
                             "launch against each arch's limits (cuconv.launchability); 'device': this GPU's arch, "
                             "SM count and memory; no kernel runs")
    parser.add_argument("--all-batches", action="store_true",
                        help="--launchability: every batch size (1, 32, 256) for every model, arch and dtype")


def run(args) -> int:
    if args.launchability is not None:
        return run_launchability(args)
    if args.gpu:
        return run_gpu(args)
    if args.devices:
        print("cuconv check: --devices goes with --gpu (the emulator has one device)", file=sys.stderr)
        return 2
    # The emulator reads its checking modes from these when an op does not pass them.
    for var, value in (("CUCONV_EMU_SANITIZE", args.sanitize), ("CUCONV_EMU_ORDER", args.order),
                       ("CUCONV_EMU_SEED", None if args.seed is None else str(args.seed))):
        if value is not None:
            os.environ[var] = value
    parser = argparse.ArgumentParser(prog="cuconv check")
    bench.add_arguments(parser)
    argv = [*(args.targets or ["algos"]), "--emulate", "--no-resources", "--no-baseline", "--algo", args.algo]
    if args.filter:
        argv += ["--filter", args.filter]
    if args.json:
        argv += ["--json", args.json]
    if args.quiet:
        argv.append("--quiet")
    return bench.run(parser.parse_args(argv))


# =========================================================================== device checks
@dataclass(frozen=True)
class DeviceCheck:
    """One small problem on one op: ``run(xp, rng) -> (output, float64 reference, dtype, algo)``
    where (dtype, algo) keys cuconv.testing's tolerance table."""
    name: str
    run: Callable
    needs: str = ""          # "bf16": needs ml_dtypes for the NumPy side
    tc: str = ""             # tensor-core kernel dtype (float16 | bfloat16 | tf32): needs its arch
    kernel: str = ""         # the label of the config it forces (skipped where that is not built)


@dataclass
class CheckResult:
    name: str
    kernels: list = field(default_factory=list)
    error: float | None = None
    tolerance: float | None = None
    ok: bool = False
    message: str | None = None
    skipped: str | None = None


def _dt(dtype: str):
    if dtype == "bfloat16":
        import ml_dtypes  # noqa: PLC0415  (optional third-party package)
        return ml_dtypes.bfloat16
    return np.dtype(dtype)


def _draw(rng, shape, dtype="float32"):
    """Host values in [-1, 1) as stored in ``dtype`` (the reference reads exactly these)."""
    return rng.uniform(-1.0, 1.0, size=shape).astype(_dt(dtype))


def _f64(a):
    return None if a is None else np.asarray(a).astype(np.float64)


def _out(xp, shape, dtype):
    out = xp.empty(shape, _dt(dtype))
    poison(out)
    return out


def _nhwc(a):
    return np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1)))


# (x NCHW, w KCRS, stride, padding, dilation, groups, epilogue): awkward on purpose.
CONV_PROBLEMS = (
    ((2, 3, 9, 7), (5, 3, 3, 3), 1, 1, 1, 1, "bias+relu"),          # C = 3, odd H, W
    ((2, 16, 9, 9), (16, 16, 3, 3), 1, 1, 1, 1, "residual"),        # Winograd's C, K >= 16
    ((2, 4, 11, 9), (6, 2, 5, 5), 2, 2, 1, 2, "bias"),              # grouped, strided, 5x5
    ((1, 6, 9, 9), (12, 1, 3, 3), 1, 2, 2, 6, "bias+relu"),         # depthwise x2, dilated
    ((2, 8, 7, 9), (10, 8, 1, 1), 1, 0, 1, 1, "residual+relu"),     # 1x1
    ((1, 20, 13, 11), (36, 20, 3, 3), 2, 1, 1, 1, "bias"),          # stride 2, no tile divides
)


def _conv_inputs(rng, case, dtype="float32"):
    xs, ws, stride, pad, dil, groups, epi = case
    x, w = _draw(rng, xs, dtype), _draw(rng, ws, dtype)
    p = Conv2dProblem.from_shapes(xs, ws, stride, pad, dil, groups, dtype)
    bias = _draw(rng, (p.K,), dtype) if "bias" in epi else None
    residual = _draw(rng, p.output_shape, dtype) if "residual" in epi else None
    act = "relu" if "relu" in epi else None
    return p, x, w, bias, residual, act, dict(stride=stride, padding=pad, dilation=dil, groups=groups)


def _conv_check(case, algo: str, dtype: str = "float32", layout: str = "NCHW", **extra) -> DeviceCheck:
    xs, ws = case[0], case[1]
    name = (f"conv2d {algo}{''.join(f' {k}={v}' for k, v in extra.items())} {dtype} {layout} "
            f"x{'x'.join(map(str, xs))} w{'x'.join(map(str, ws))} s{case[2]}p{case[3]}d{case[4]}g{case[5]} "
            f"{case[6]}")

    def run(xp, rng):
        p, x, w, bias, residual, act, args = _conv_inputs(rng, case, dtype)
        ref = conv2d_ref(_f64(x), _f64(w), _f64(bias), activation=act, residual=_f64(residual), **args)
        xa, wa, ra = x, w, residual
        if layout == "NHWC":
            xa, wa, ra = _nhwc(x), _nhwc(w), None if residual is None else _nhwc(residual)
            ref = np.ascontiguousarray(np.transpose(ref, (0, 2, 3, 1)))
        put = xp.asarray
        out = _out(xp, ref.shape, dtype)
        conv2d_mod.conv2d(put(xa), put(wa), None if bias is None else put(bias), activation=act,
                          residual=None if ra is None else put(ra), out=out, layout=layout, algo=algo,
                          **args, **extra)
        return out, ref, dtype, algo
    tc = tc_common.kernel_dtype(dtype) if ("_tc" in algo or "tf32" in algo) else ""
    config = extra.get("config")
    forced = {**tc_common.CONFIGS_BY_NAME, **wgmma_conv.CONFIGS_BY_NAME}
    kernel = config if isinstance(config, str) and config in forced else ""
    return DeviceCheck(name, run, "bf16" if dtype == "bfloat16" else "", tc, kernel)


def _gemm_check(M, N, K, config, epilogue: bool) -> DeviceCheck:
    label = config.label if hasattr(config, "label") else str(config)
    dt = getattr(config, "dtype", "float32")

    def run(xp, rng):
        a, b = _draw(rng, (M, K), dt), _draw(rng, (K, N), dt)
        bias = _draw(rng, (M,), dt) if epilogue else None
        residual = _draw(rng, (M, N), dt) if epilogue else None
        ref = gemm_ref(_f64(a), _f64(b))
        if epilogue:
            ref = np.maximum(ref + _f64(bias)[:, None] + _f64(residual), 0.0)
        out = _out(xp, (M, N), dt)
        gemm(xp.asarray(a), xp.asarray(b), out=out, bias=None if bias is None else xp.asarray(bias),
             residual=None if residual is None else xp.asarray(residual),
             activation="relu" if epilogue else None, config=config)
        return out, ref, dt, "gemm"
    return DeviceCheck(f"gemm {label} {M}x{N}x{K}{' bias+residual+relu' if epilogue else ''}", run)


def _tc_gemm_check(dtype: str, config, M=67, N=40, K=72) -> DeviceCheck:
    label = config if isinstance(config, str) else config.name
    store = "float32" if dtype == "tf32" else dtype

    def run(xp, rng):
        a, b = _draw(rng, (M, K), store), _draw(rng, (K, N), store)
        bias = _draw(rng, (M,), store)
        ref = gemm_ref(_f64(a), _f64(b)) + _f64(bias)[:, None]
        out = _out(xp, (M, N), store)
        tc_gemm(xp.asarray(a), xp.asarray(b), out, bias=xp.asarray(bias), allow_tf32=dtype == "tf32",
                config=config)
        algo = "implicit_gemm_tf32" if dtype == "tf32" else "implicit_gemm_tc"
        return out, ref, store, algo
    kernel = f"tc_gemm_simple_{tag(dtype)}" if config == "simple" else label
    return DeviceCheck(f"tc_gemm {label} {store} {M}x{N}x{K} bias", run, "bf16" if dtype == "bfloat16" else "",
                       dtype, kernel)


def _pool_check(kind: str, shape, dtype: str = "float32", layout: str = "NCHW", **kw) -> DeviceCheck:
    """A pooling forward check on an N, C, H, W = ``shape`` input laid out in ``layout``."""
    def run(xp, rng):
        x = _draw(rng, shape, dtype)
        xd = xp.asarray(_nhwc(x) if layout == "NHWC" else x)
        lay = dict(layout=layout)
        if kind == "max_indices":
            ref, _ = max_pool2d_ref(x, return_indices=True, **kw)
            out = _out(xp, _laid_out(ref.shape, layout), dtype)
            idx = xp.full(out.shape, -7, np.int64)
            max_pool2d(xd, return_indices=True, out=out, out_indices=idx, **kw, **lay)
            # the indices must point at the maxima: gather them back and compare with the output
            flat = np.asarray(_host(x)).reshape(x.shape[0], x.shape[1], -1)
            got = np.take_along_axis(flat, _nchw(_host(idx), layout).reshape(x.shape[0], x.shape[1], -1), axis=2)
            bad = int(np.sum(got.reshape(ref.shape) != _nchw(_host(out), layout)))
            if bad:
                raise AssertionError(f"{bad} max-pool indices do not point at their maxima")
        elif kind == "max":
            ref = max_pool2d_ref(x, **kw)
            out = _out(xp, _laid_out(ref.shape, layout), dtype)
            max_pool2d(xd, out=out, **kw, **lay)
        elif kind == "avg":
            ref = avg_pool2d_ref(x, **kw)
            out = _out(xp, _laid_out(ref.shape, layout), dtype)
            avg_pool2d(xd, out=out, **kw, **lay)
        else:
            ref = global_avg_pool2d_ref(x)
            out = _out(xp, _laid_out(ref.shape, layout), dtype)
            global_avg_pool2d(xd, out=out, **lay)
        return out, _nhwc(ref) if layout == "NHWC" else ref, dtype, "pool"
    args = " ".join(f"{k}={v}" for k, v in kw.items())
    return DeviceCheck(f"{kind}_pool2d {dtype} {layout} x{'x'.join(map(str, shape))} {args}".rstrip(), run,
                       "bf16" if dtype == "bfloat16" else "")


def _laid_out(shape, layout: str) -> tuple:
    n, c, h, w = shape
    return (n, h, w, c) if layout == "NHWC" else tuple(shape)


def _nchw(a, layout: str):
    return np.transpose(a, (0, 3, 1, 2)) if layout == "NHWC" else a


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _im2col_check(shape, dtype: str = "float32", **kw) -> DeviceCheck:
    def run(xp, rng):
        x = _draw(rng, shape, dtype)
        ref = im2col_ref(_f64(x), **kw)
        out = _out(xp, ref.shape, dtype)
        im2col(xp.asarray(x), out=out, **kw)
        return out, ref, dtype, "im2col"
    return DeviceCheck(f"im2col {dtype} x{'x'.join(map(str, shape))} " + " ".join(f"{k}={v}" for k, v in kw.items()),
                       run)


def _transpose_check(xs, ws, variant: str, stride=2, padding=1, output_padding=1, groups=1,
                     dtype: str = "float32") -> DeviceCheck:
    def run(xp, rng):
        x, w = _draw(rng, xs, dtype), _draw(rng, ws, dtype)
        bias = _draw(rng, (ws[1] * groups,), dtype)
        ref = conv_transpose2d_ref(_f64(x), _f64(w), _f64(bias), stride, padding, output_padding, groups,
                                   activation="relu")
        out = _out(xp, ref.shape, dtype)
        conv_transpose2d(xp.asarray(x), xp.asarray(w), xp.asarray(bias), stride, padding, output_padding, groups,
                         activation="relu", out=out, variant=variant)
        return out, ref, dtype, "conv_transpose"
    return DeviceCheck(f"conv_transpose2d {variant} {dtype} x{'x'.join(map(str, xs))} w{'x'.join(map(str, ws))} "
                       f"s{stride} g{groups}", run)


def _separable_check(fused: bool) -> DeviceCheck:
    def run(xp, rng):
        x, wd, wp = _draw(rng, (2, 12, 9, 7)), _draw(rng, (12, 1, 3, 3)), _draw(rng, (20, 12, 1, 1))
        mid = conv2d_ref(x, wd, None, 1, 1, 1, 12)
        ref = conv2d_ref(mid, wp, activation="relu")
        out = _out(xp, ref.shape, "float32")
        separable_conv2d(xp.asarray(x), xp.asarray(wd), xp.asarray(wp), padding=1, activation="relu",
                         fused=fused, out=out)
        return out, ref, "float32", "separable"
    return DeviceCheck(f"separable_conv2d fused={fused} x2x12x9x7 3x3 12->20", run)


# (x NCHW, w KCRS, stride, padding, dilation, groups) of the gradient checks.
GRAD_PROBLEMS = {
    "C3": ((2, 3, 9, 7), (5, 3, 3, 3), 2, 1, 1, 1),              # dgrad direct (C/g < 8), stride 2
    "C20": ((2, 20, 9, 8), (36, 20, 3, 3), (2, 1), 1, (1, 2), 1),  # every GEMM config, no tile divides
    "splitk": ((4, 8, 16, 16), (8, 8, 3, 3), 1, 1, 1, 1),         # few tiles: split-K + reduction
    "depthwise": ((2, 6, 17, 15), (12, 1, 3, 3), 2, 1, 1, 6),     # multiplier 2, stride 2
    "depthwise_split": ((2, 6, 40, 33), (6, 1, 3, 3), 1, 1, 1, 6),  # N·P·Q = 2640: 3 wgrad splits
}


def _grad_check(case: str, which: str, dtype: str, algo: str = "auto", layout: str = "NCHW", **kw) -> DeviceCheck:
    """One gradient of a forward conv2d through cuconv.grad: ``which`` "input" (dx), "weight"
    (dw, with db fused by conv2d_backward when ``bias``) or "bias" (db alone); ``layout="NHWC"``:
    the arrays NHWC/KRSC (the references' NCHW answers transposed)."""
    xs, ws, stride, padding, dilation, groups = GRAD_PROBLEMS[case]
    bias = kw.pop("bias", False)
    tensor_cores = kw.pop("tensor_cores", True)     # False: a 16-bit check that runs on sm_75 too
    args = (stride, padding, dilation, groups)
    # an N,C,H,W (K,C,R,S) array or shape in the call's layout
    lay = _nhwc if layout == "NHWC" else (lambda a: a)
    lay_shape = (lambda s: (s[0], *s[2:], s[1])) if layout == "NHWC" else tuple
    if layout != "NCHW":
        kw["layout"] = layout

    def run(xp, rng):
        p = Conv2dProblem.from_shapes(xs, ws, *args, dtype)
        x, w, dy = _draw(rng, xs, dtype), _draw(rng, ws, dtype), _draw(rng, p.output_shape, dtype)
        X, Wt, DY = xp.asarray(lay(x)), xp.asarray(lay(w)), xp.asarray(lay(dy))
        f = [_f64(a) for a in (x, w, dy)]
        tol = "tc_grad" if dtype in ("float16", "bfloat16") else ("dgrad" if which == "input" else "wgrad")
        if which == "input":
            out = _out(xp, lay_shape(xs), dtype)
            grad_ops.conv2d_input(lay_shape(xs), Wt, DY, *args, algo=algo, out=out, **kw)
            return out, lay(conv2d_input_ref(xs, f[1], f[2], *args)), dtype, tol
        if which == "bias":
            out = _out(xp, (p.K,), dtype)
            grad_ops.conv2d_bias(DY, out=out, **kw)
            return out, conv2d_bias_ref(f[2]), dtype, tol
        ref = lay(conv2d_weight_ref(f[0], ws, f[2], *args))
        if bias:
            options = {k: kw[k] for k in ("config", "splits") if k in kw}
            rest = {k: v for k, v in kw.items() if k not in options}
            _, dw, db = grad_ops.conv2d_backward(X, Wt, DY, *args, output_mask=(False, True, True),
                                                 weight_algo=algo, weight_options=options, **rest)
            db_err = rel_error(db, conv2d_bias_ref(f[2]))
            if not db_err <= tolerance(dtype, tol):
                raise AssertionError(f"the fused bias gradient is off: relative error {db_err:.3g}")
            return dw, ref, dtype, tol
        out = _out(xp, lay_shape(ws), dtype)
        grad_ops.conv2d_weight(X, lay_shape(ws), DY, *args, algo=algo, out=out, **kw)
        return out, ref, dtype, tol

    extra = "".join(f" {k}={v}" for k, v in kw.items() if k != "layout") + (" +bias" if bias else "")
    tc = dtype if dtype in ("float16", "bfloat16") and tensor_cores else ""
    name = f"grad {which} {algo}{extra} {dtype}{'' if layout == 'NCHW' else ' ' + layout} {case}"
    return DeviceCheck(name, run, "bf16" if dtype == "bfloat16" else "", tc)


def _pool_grad_check(kind: str, dtype: str, layout: str = "NCHW", C: int = 3, **kw) -> DeviceCheck:
    """A pooling gradient check on an input of 2, C, 9, 8 laid out in ``layout``."""
    shape = (2, C, 9, 8)
    size = _laid_out(shape, layout)

    def lay(a):
        return np.ascontiguousarray(_nhwc(a)) if layout == "NHWC" else a

    def run(xp, rng):
        x = _draw(rng, shape)              # the forward pools in float32
        if kind in ("max_scatter", "max_gather"):
            # the reference forward's indices: the backward is checked on its own
            y, idx = max_pool2d_ref(x, return_indices=True, **kw)
            dy = _draw(rng, y.shape, dtype)
            out = _out(xp, size, dtype)
            window = {} if kind == "max_scatter" else kw
            grad_ops.max_pool2d(xp.asarray(lay(dy)), xp.asarray(lay(idx)), size, out=out, layout=layout, **window)
            algo = "pool_grad_scatter" if kind == "max_scatter" and dtype in ("float16", "bfloat16") else "pool_grad"
            return out, lay(max_pool2d_backward_ref(_f64(dy), idx, shape)), dtype, algo
        if kind == "avg":
            dy = _draw(rng, avg_pool2d_ref(x, **kw).shape, dtype)
            out = _out(xp, size, dtype)
            grad_ops.avg_pool2d(xp.asarray(lay(dy)), size, out=out, layout=layout, **kw)
            return out, lay(avg_pool2d_backward_ref(_f64(dy), shape, **kw)), dtype, "pool_grad"
        dy = _draw(rng, (*shape[:2], 1, 1), dtype)
        out = _out(xp, size, dtype)
        grad_ops.global_avg_pool2d(xp.asarray(lay(dy)), size, out=out, layout=layout)
        return out, lay(global_avg_pool2d_backward_ref(_f64(dy), shape)), dtype, "pool_grad"
    args = " ".join(f"{k}={v}" for k, v in kw.items())
    return DeviceCheck(f"{kind}_pool2d backward {dtype} {layout} C{C} {args}".rstrip(), run,
                       "bf16" if dtype == "bfloat16" else "")


def _pool_grad_checks(dt: str) -> list[DeviceCheck]:
    """Every pooling gradient kernel of ``dt``: NCHW with C = 3; NHWC with C = 16, 12, 6 and 3 (each
    vector width of every dtype, and one channel a thread)."""
    checks = []
    for layout, C in (("NCHW", 3), ("NHWC", 16), ("NHWC", 12), ("NHWC", 6), ("NHWC", 3)):
        checks += [_pool_grad_check("max_gather", dt, layout, C, kernel_size=(3, 2), stride=1, padding=1, dilation=2,
                                    ceil_mode=True),
                   _pool_grad_check("avg", dt, layout, C, kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                    count_include_pad=False),
                   _pool_grad_check("global_avg", dt, layout, C)]
        if C in (3, 16):
            checks.append(_pool_grad_check("max_scatter", dt, layout, C, kernel_size=3, stride=2, padding=1))
    return checks


def _depthwise_grad_nhwc_check(which: str, dtype: str, splits: int = 1) -> DeviceCheck:
    """depthwise_grad.cu's NHWC kernels through the depthwise algorithm's plan (cuconv.grad has no
    layout argument yet): dx, or dW with db fused, NHWC x/dy/dx and KRSC w."""
    xs, ws, stride, padding, dilation, groups = GRAD_PROBLEMS["depthwise_split" if splits > 1 else "depthwise"]
    args = (stride, padding, dilation, groups)

    def run(xp, rng):
        p = Conv2dProblem.from_shapes(xs, ws, *args, dtype)
        x, w, dy = _draw(rng, xs, dtype), _draw(rng, ws, dtype), _draw(rng, p.output_shape, dtype)
        f = [_f64(a) for a in (x, w, dy)]
        tol = "depthwise_grad" if dtype in ("float16", "bfloat16") else ("dgrad" if which == "input" else "wgrad")
        if which == "input":
            out = _out(xp, _nhwc(np.empty(xs, np.float32)).shape, dtype)
            conv2d_mod.select(conv2d_mod.spec_of(p, DGRAD, layout="NHWC"), "depthwise").run(
                xp.asarray(_nhwc(w)), xp.asarray(_nhwc(dy)), dx=out)
            return out, _nhwc(conv2d_input_ref(xs, f[1], f[2], *args)), dtype, tol
        out, db = _out(xp, _nhwc(w).shape, dtype), _out(xp, (p.K,), dtype)
        conv2d_mod.select(conv2d_mod.spec_of(p, WGRAD, layout="NHWC", has_bias=True, splits=splits), "depthwise").run(
            xp.asarray(_nhwc(x)), xp.asarray(_nhwc(dy)), dw=out, db=db)
        db_err = rel_error(db, conv2d_bias_ref(f[2]))
        if not db_err <= tolerance(dtype, tol):
            raise AssertionError(f"the fused bias gradient is off: relative error {db_err:.3g}")
        return out, _nhwc(conv2d_weight_ref(f[0], ws, f[2], *args)), dtype, tol
    return DeviceCheck(f"grad {which} depthwise NHWC splits={splits} {dtype}", run,
                       "bf16" if dtype == "bfloat16" else "")


def grad_checks() -> list[DeviceCheck]:
    """The backward kernels: every dgrad and wgrad config in its dtype, the depthwise and
    split-K paths, the bias reduction, each pooling backward kernel, the tensor-core gradients."""
    checks = []
    for dt in ("float32", "float64"):
        for layout in ("NCHW", "NHWC"):     # the NHWC configs: conv_dgrad/conv_wgrad's _nhwc kernels
            checks.append(_grad_check("C20", "input", dt, "direct", layout))
            for cfg in conv_dgrad_mod.GEMM_BY_LAYOUT[layout]:
                if cfg.dtype == dt:
                    checks.append(_grad_check("C20", "input", dt, "implicit_gemm", layout, config=cfg.name))
            checks.append(_grad_check("C20", "weight", dt, "direct", layout, bias=True))
            for cfg in conv_wgrad_mod.GEMM_BY_LAYOUT[layout]:
                if cfg.dtype == dt:
                    checks.append(_grad_check("C20", "weight", dt, "implicit_gemm", layout, bias=True,
                                              config=cfg.name, **({"deterministic": False} if cfg.atomic else {})))
        checks.append(_grad_check("C3", "input", dt))
        checks.append(_grad_check("depthwise", "input", dt))
        checks.append(_grad_check("C3", "bias", dt, layout="NHWC"))
        checks.append(_grad_check("splitk", "weight", dt))
        checks.append(_grad_check("splitk", "weight", dt, bias=True))
        checks.append(_grad_check("depthwise", "weight", dt, bias=True))
        checks.append(_grad_check("C3", "bias", dt))
    for dt in ("float32", "float64", "float16", "bfloat16"):
        checks += _pool_grad_checks(dt)
    for dt in ("float16", "bfloat16"):
        for algo in ("implicit_gemm_tc", "implicit_gemm_tc_simple"):
            checks.append(_grad_check("C20", "input", dt, algo))
            checks.append(_grad_check("C20", "weight", dt, algo, bias=True))
        checks.append(_grad_check("C3", "bias", dt))
        # 16-bit depthwise: the tile, the wgrad with one split and with fp32 split partials.
        checks.append(_grad_check("depthwise", "input", dt, tensor_cores=False))
        checks.append(_grad_check("depthwise", "weight", dt, bias=True, tensor_cores=False))
        checks.append(_grad_check("depthwise_split", "weight", dt, "depthwise", bias=True, splits=3))
    for dt in ("float32", "float64", "float16", "bfloat16"):
        checks += [_depthwise_grad_nhwc_check("input", dt), _depthwise_grad_nhwc_check("weight", dt),
                   _depthwise_grad_nhwc_check("weight", dt, splits=3)]
    return checks


def device_checks() -> list[DeviceCheck]:
    """The `cuconv check --gpu` cases, grouped roughly by kernel file (the summary groups them by
    the kernels they actually launched)."""
    checks: list[DeviceCheck] = []
    # Every conv2d algorithm on every problem it can run (fp32, NCHW): direct, im2col+GEMM,
    # pointwise, implicit GEMM, Winograd, depthwise, tf32 tensor cores.
    for case in CONV_PROBLEMS:
        p = Conv2dProblem.from_shapes(case[0], case[1], case[2], case[3], case[4], case[5])
        for info in conv2d_mod.algorithms(p, allow_tf32=True):
            if info.ok:
                checks.append(_conv_check(case, info.name))
    # float64, and the NHWC layouts, for the algorithms that take them (direct, implicit GEMM,
    # im2col+GEMM, pointwise, depthwise).
    for case in CONV_PROBLEMS:
        p = Conv2dProblem.from_shapes(case[0], case[1], case[2], case[3], case[4], case[5])
        for dt, layout in (("float64", "NCHW"), ("float32", "NHWC"), ("float64", "NHWC")):
            for info in conv2d_mod.algorithms(p.with_(dtype=dt), layout=layout):
                if info.ok and info.name in ("direct", "implicit_gemm", "im2col_gemm", "pointwise", "depthwise"):
                    checks.append(_conv_check(case, info.name, dt, layout))
    # Each implicit-GEMM config (every dtype and layout), each Winograd multiply stage.
    for cfg in implicit_gemm_mod.CONFIGS:
        checks.append(_conv_check(CONV_PROBLEMS[5], "implicit_gemm", cfg.dtype, cfg.layout, config=cfg.name))
    for algo in ("winograd_f2x2_3x3", "winograd_f4x4_3x3"):
        for multiply in ("simple", "gemm"):
            checks.append(_conv_check(CONV_PROBLEMS[1], algo, multiply=multiply))
    # FFT: both algorithms, each channel-GEMM kernel (narrow K/g < 32, wide K/g >= 32, simple).
    fft_wide = ((1, 8, 12, 10), (36, 8, 5, 5), 1, 2, 1, 1, "bias+relu")
    fft_grouped = ((2, 4, 11, 9), (6, 2, 5, 5), 1, 2, 2, 2, "residual")
    for algo in ("fft", "fft_tiling"):
        for case in (fft_wide, fft_grouped):
            checks.append(_conv_check(case, algo))
        checks.append(_conv_check(fft_grouped, algo, multiply="simple"))
    # Depthwise: each specialized config on its filter size and stride, the generic and direct kernels;
    # 16-bit NHWC: C = 8 (16-byte vectors), 12 (8-byte vectors) or 6 (the scalar strips).
    for dt in ("float32", "float64", "float16", "bfloat16"):
        for cfg in (*depthwise_mod.SPECIALIZEDS[dt], *depthwise_mod.NHWC_CONFIGS[dt],
                    *depthwise_mod.VEC_CONFIGS.get(dt, ())):
            k, st = cfg.ks, cfg.stride
            c = cfg.vec or (6 if cfg.layout == "NHWC" and dt in ("float16", "bfloat16") else 8)
            c = 12 if c == 4 else c
            dw = ((2, c, 17, 15), (c, 1, k, k), st, k // 2, 1, c, "bias+relu")
            checks.append(_conv_check(dw, "depthwise", dt, cfg.layout, variant="specialized"))
        odd = ((2, 6, 9, 7), (12, 1, 3, 5), (2, 1), 1, 2, 6, "residual")
        for variant in ("generic", "direct"):
            checks.append(_conv_check(odd, "depthwise", dt, variant=variant))
        checks.append(_conv_check(odd, "depthwise", dt, "NHWC", variant="direct"))
    # GEMM: every config, with and without the fused epilogue, on sizes no tile divides.
    for cfg in gemm_mod.CONFIGS:
        checks.append(_gemm_check(67, 45, 53, cfg, epilogue=False))
        checks.append(_gemm_check(131, 70, 37, cfg, epilogue=True))
    # Tensor cores: every config of tc_gemm.cu and tc_conv.cu in its dtype, the simple kernels,
    # and the NCHW path (which packs into NHWC first).
    for cfg in tc_common.CONFIGS:
        if cfg.op == "gemm":
            checks.append(_tc_gemm_check(cfg.dtype, cfg))
        else:
            store = "float32" if cfg.dtype == "tf32" else cfg.dtype
            algo = "implicit_gemm_tf32" if cfg.dtype == "tf32" else "implicit_gemm_tc"
            checks.append(_conv_check(((2, 16, 9, 7), (24, 16, 3, 3), 1, 1, 1, 1, "bias+relu"), algo, store,
                                      "NHWC", config=cfg.name))
    for dt in ("float16", "bfloat16", "tf32"):
        checks.append(_tc_gemm_check(dt, "simple"))
    for dt, algo in (("float16", "implicit_gemm_tc"), ("bfloat16", "implicit_gemm_tc"),
                     ("float32", "implicit_gemm_tf32")):
        checks.append(_conv_check(((2, 3, 9, 7), (20, 3, 3, 3), 2, 1, 1, 1, "residual+relu"), algo, dt, "NCHW"))
        checks.append(_conv_check(((2, 12, 9, 7), (21, 4, 3, 3), 1, 2, 2, 3, "bias"), "implicit_gemm_tc_simple",
                                  dt, "NHWC"))
    # Hopper wgmma (sm_90 only; skipped elsewhere): every config in its dtype, NHWC in place, and
    # the NCHW path with C = 3 (packed to NHWC with channels padded to 8).
    for cfg in wgmma_conv.CONFIGS:
        checks.append(_conv_check(((2, 16, 9, 7), (24, 16, 3, 3), 1, 1, 1, 1, "bias+relu"), "implicit_gemm_wgmma",
                                  cfg.dtype, "NHWC", config=cfg.name))
    for dt in ("float16", "bfloat16"):
        checks.append(_conv_check(((1, 3, 11, 9), (20, 3, 3, 3), 2, 1, 1, 1, "residual+relu"), "implicit_gemm_wgmma",
                                  dt, "NCHW", config=f"wgmma_conv_{tag(dt)}_64x64x64_s3"))
    # Pooling, im2col, transposed convolution, the separable block.
    for dt in ("float32", "float64", "float16", "bfloat16"):
        checks += [_pool_check("max", (2, 5, 11, 9), dt, kernel_size=3, stride=2, padding=1),
                   _pool_check("max_indices", (2, 3, 9, 7), dt, kernel_size=3, stride=2, padding=1),
                   _pool_check("avg", (2, 3, 9, 9), dt, kernel_size=2, ceil_mode=True),
                   _pool_check("global_avg", (2, 5, 7, 9), dt),
                   _pool_check("global_avg", (2, 3, 33, 35), dt)]
        # NHWC: C = 16, 12, 6, 3 take every vector width of every dtype and one channel a thread
        for C in (16, 12, 6, 3):
            checks += [_pool_check("max", (2, C, 11, 9), dt, "NHWC", kernel_size=3, stride=2, padding=1),
                       _pool_check("max_indices", (2, C, 9, 7), dt, "NHWC", kernel_size=3, stride=2, padding=1,
                                   dilation=2),
                       _pool_check("avg", (2, C, 9, 9), dt, "NHWC", kernel_size=3, stride=2, padding=1,
                                   ceil_mode=True, count_include_pad=False),
                       _pool_check("global_avg", (2, C, 7, 9), dt, "NHWC")]
    for dt in ("float32", "float64"):
        checks += [_im2col_check((2, 3, 9, 7), dt, kernel_size=3, stride=2, padding=1, dilation=2),
                   _transpose_check((2, 4, 5, 7), (4, 3, 3, 3), "simple", dtype=dt),
                   _transpose_check((2, 4, 5, 7), (4, 3, 3, 3), "phase", dtype=dt)]
    checks += [
        _pool_check("max", (2, 5, 11, 9), kernel_size=3, stride=2, padding=1),
        _pool_check("max", (2, 3, 9, 9), kernel_size=(3, 2), stride=1, padding=1, dilation=2, ceil_mode=True),
        _pool_check("max_indices", (2, 3, 9, 7), kernel_size=3, stride=2, padding=1),
        _pool_check("avg", (2, 5, 11, 9), kernel_size=3, stride=2, padding=1, count_include_pad=False),
        _pool_check("avg", (2, 3, 9, 9), kernel_size=2, ceil_mode=True),
        _pool_check("global_avg", (2, 5, 7, 9)),
        _pool_check("global_avg", (2, 3, 33, 35)),          # H*W >= 1024: a block per plane
        _im2col_check((2, 3, 9, 7), kernel_size=3, stride=2, padding=1, dilation=2),
        _transpose_check((2, 4, 5, 7), (4, 3, 3, 3), "simple"),
        _transpose_check((2, 4, 5, 7), (4, 3, 3, 3), "phase"),
        _transpose_check((2, 6, 5, 7), (6, 9, 4, 4), "phase", stride=2, padding=1, output_padding=0),
        _transpose_check((1, 8, 5, 5), (8, 5, 3, 3), "phase", stride=3, padding=0, output_padding=2, groups=2),
        _separable_check(True),
        _separable_check(False),
    ]
    return checks + grad_checks()


def _file_of(label: str, files: dict) -> str:
    return files.get(label, "?")


class _Watch:
    """A backend whose launches are recorded by label (everything else is the wrapped one's)."""

    def __init__(self, be):
        self._be = be
        self.labels: list[str] = []

    def __getattr__(self, name):
        return getattr(self._be, name)

    def launch(self, entry, grid, block, args, shared_mem: int = 0) -> None:
        self.labels.append(entry.label)
        self._be.launch(entry, grid, block, args, shared_mem)


def run_checks(be, checks, seed: int = 0, sync=None, progress=None) -> list[CheckResult]:
    """Run ``checks`` on backend ``be`` (each a fresh seeded draw); never raises for a case."""
    results = []
    have_bf16 = _have_ml_dtypes()
    cc = be.caps().cc
    for i, chk in enumerate(checks):
        res = CheckResult(chk.name)
        if chk.needs == "bf16" and not have_bf16:
            res.skipped = "needs ml_dtypes for bfloat16 (pip install 'cuconv[bf16]')"
        elif chk.tc and tc_common.arch_reason(chk.tc, cc):
            res.skipped = tc_common.arch_reason(chk.tc, cc)
        elif chk.kernel and not runs_on(registered_kernel(chk.kernel), cc):
            res.skipped = f"{chk.kernel} is not built for sm_{cc}"
        if res.skipped:
            results.append(res)
            if progress is not None:
                progress(res)
            continue
        watch = _Watch(be)
        rng = np.random.default_rng([seed, i])
        try:
            with using(watch):
                out, ref, dtype, algo = chk.run(be.xp, rng)
                if sync is not None:
                    sync()
            res.kernels = list(dict.fromkeys(watch.labels))
            res.error = rel_error(out, ref)
            res.tolerance = tolerance(dtype, algo)
            res.ok = bool(res.error <= res.tolerance)
            if not res.ok:
                res.message = (f"max relative error {res.error:.3g} > tolerance {res.tolerance:.3g}"
                               if np.isfinite(res.error) else "NaN/Inf in the output (an element left unwritten?)")
        except Exception as exc:
            res.kernels = list(dict.fromkeys(watch.labels))
            res.message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if os.environ.get("CUCONV_CHECK_TRACEBACK"):
                traceback.print_exc()
        results.append(res)
        if progress is not None:
            progress(res)
    return results


def _have_ml_dtypes() -> bool:
    try:
        import ml_dtypes  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def one_per_file(checks: list[DeviceCheck], be) -> list[DeviceCheck]:
    """The first check that launches each kernel file (planned on ``be``'s device, nothing run)."""
    files = {e.label: e.file for e in registered_kernels()}
    picked, seen = [], set()
    with use_backend("record", cc=be.caps().cc, sms=be.caps().sms) as rec:
        for chk in checks:
            rec.clear()
            try:
                chk.run(np, np.random.default_rng(0))
            except Exception:
                pass
            new = {files.get(k) for k in rec.kernels()} - seen
            if new:
                picked.append(chk)
                seen |= new
    return picked


def runnable(entry, cc: int) -> bool:
    """Whether a device of compute capability ``cc`` can run ``entry``: it is built for it, and a
    bf16/tf32 tensor-core kernel (the layout packs are registered for every arch) needs sm_80."""
    dt = next((d for d in ("bf16", "tf32") if f"_{d}" in entry.label), None)
    if dt and entry.file in (tc_common.GEMM_FILE, tc_common.CONV_FILE):
        if tc_common.arch_reason("bfloat16" if dt == "bf16" else "tf32", cc):
            return False
    return runs_on(entry, cc)


def summarize(results: list[CheckResult], cc: int) -> tuple[list[str], bool]:
    """One line per kernel file (cases, failures, kernels exercised / registered for a device of
    compute capability ``cc``), the failures, what was not exercised; and whether all passed."""
    entries = [e for e in registered_kernels() if runnable(e, cc)]
    files = {e.label: e.file for e in registered_kernels()}
    per_file: dict = defaultdict(lambda: dict(cases=0, failed=[], kernels=set()))
    for r in results:
        if r.skipped:
            continue
        for f in {_file_of(k, files) for k in r.kernels} or {"(no launch)"}:
            d = per_file[f]
            d["cases"] += 1
            if not r.ok:
                d["failed"].append(r)
        for k in r.kernels:
            per_file[_file_of(k, files)]["kernels"].add(k)
    registered = defaultdict(set)
    for e in entries:
        registered[e.file].add(e.label)
    lines, all_ok = [], True
    for f in sorted(set(registered) | set(per_file)):
        d = per_file.get(f, dict(cases=0, failed=[], kernels=set()))
        reg = registered.get(f, set())
        if f in NOT_OP_KERNELS and not d["cases"]:
            lines.append(f"{f:<20} not checked here: {NOT_OP_KERNELS[f]}")
            continue
        bad = len(d["failed"])
        all_ok &= bad == 0
        verdict = "ok" if bad == 0 else f"{bad} FAILED"
        lines.append(f"{f:<20} {verdict:<9} {d['cases']:>3} case(s), {len(d['kernels'] & reg)}/{len(reg)} "
                     f"kernels exercised")
        missing = sorted(reg - d["kernels"])
        if missing:
            lines.append(f"{'':<20}   not exercised: {', '.join(missing)}")
    failed = [r for r in results if not r.ok and not r.skipped]
    for r in failed:
        all_ok = False
        lines.append(f"FAILED {r.name}: {r.message}" + (f" [kernels: {', '.join(r.kernels)}]" if r.kernels else ""))
    skipped = [r for r in results if r.skipped]
    if skipped:
        lines.append(f"{len(skipped)} case(s) not run: " + "; ".join(sorted({r.skipped for r in skipped})))
    return lines, all_ok


def _header_lines(caps, device_name: str) -> list[str]:
    import importlib.metadata as md  # noqa: PLC0415
    versions = []
    for pkg in ("numpy", "cupy", "cupy-cuda12x", "cupy-cuda13x"):
        try:
            versions.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            pass
    return [f"cuconv {__version__} check --gpu on {device_name} (sm_{caps.cc}, {caps.sms} SMs); "
            f"Python {platform.python_version()}, {', '.join(versions)}"]


def check_device(index: int | None, seed: int = 0, one: bool = False, name_filter: str | None = None,
                 quiet: bool = False, backend_name: str = "cupy") -> tuple[list[str], bool, list[CheckResult]]:
    """Run every device check on CUDA device ``index`` (``backend_name="emulator"``: on the CPU
    emulator, for testing this command without a GPU)."""
    stack = contextlib.ExitStack()
    with stack:
        sync = None
        if backend_name == "cupy":
            import cupy  # noqa: PLC0415  (optional: only with a GPU)
            stack.enter_context(cupy.cuda.Device(index))
            sync = cupy.cuda.get_current_stream().synchronize
        be = stack.enter_context(use_backend(backend_name))
        caps = be.caps()
        name = caps.name if backend_name == "cupy" else f"the {backend_name} backend"
        checks = device_checks()
        if name_filter:
            checks = [c for c in checks if name_filter in c.name]
        if one:
            checks = one_per_file(checks, be)
        t0 = time.perf_counter()

        def progress(r: CheckResult):
            if not quiet:
                word = "ok  " if r.ok else ("skip" if r.skipped else "FAIL")
                print(f"  {word} {r.name}" + ("" if r.ok else f"  ({r.message or r.skipped})"), flush=True)
        results = run_checks(be, checks, seed, sync, progress)
        lines, ok = summarize(results, caps.cc)
        head = _header_lines(caps, name)
        head.append(f"{len(results)} case(s) in {time.perf_counter() - t0:.1f} s")
        return head + lines, ok, results


def _child(index: int, seed: int, one: bool, name_filter, queue) -> None:
    try:
        lines, ok, _ = check_device(index, seed, one, name_filter, quiet=True)
        queue.put((index, lines, ok))
    except Exception as exc:
        queue.put((index, [f"device {index}: {type(exc).__name__}: {exc}"], False))


def parse_devices(text: str, count: int) -> list[int]:
    """``all`` or ``0,2`` -> device indices (ValueError naming the bad one)."""
    if text.strip().lower() == "all":
        return list(range(count))
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            i = int(part)
        except ValueError:
            raise ValueError(f"--devices takes 'all' or comma-separated device indices, got {text!r}") from None
        if not 0 <= i < count:
            raise ValueError(f"--devices {text}: device {i} does not exist (this machine has {count})")
        if i not in out:
            out.append(i)
    if not out:
        raise ValueError(f"--devices {text!r} names no device")
    return out


def run_launchability(args) -> int:
    """`cuconv check --launchability`: the report of cuconv.launchability.sweep; exit status 1 when
    a launch would be refused, an auto workspace exceeds the cap or planning raised anything but
    ValueError/TypeError."""
    spec = args.launchability
    devices = None
    if spec == "device":
        if not gpu_available():
            print("cuconv check --launchability device: no GPU here; name archs (e.g. sm_90) or use 'all'",
                  file=sys.stderr)
            return EXIT_NO_GPU
        reason = gpu_unsupported_reason(args.device)
        if reason:
            print(f"cuconv check --launchability: {reason}", file=sys.stderr)
            return EXIT_NO_GPU
        import cupy  # noqa: PLC0415  (optional: only with a GPU)
        with cupy.cuda.Device(args.device), use_backend("cupy") as be:
            caps = be.caps()
        archs = (f"sm_{caps.cc}",)
        devices = {archs[0]: (caps.name, caps.sms, caps.memory_bytes)}
        print(f"{caps.name}: sm_{caps.cc}, {caps.sms} SMs, {caps.memory_bytes / 2**30:.3g} GiB "
              f"({(caps.free_bytes or 0) / 2**30:.3g} GiB free); auto's default workspace cap "
              f"{caps.workspace_cap / 2**30:.3g} GiB")
    elif spec == "all":
        archs = launchability.ARCHS
    else:
        archs = tuple(normalize_arch(a.strip()) for a in spec.split(",") if a.strip())
        unknown = [a for a in archs if a not in launchability.DEVICES]
        if unknown:
            print(f"cuconv check --launchability: no device for {', '.join(unknown)}; known: "
                  f"{', '.join(launchability.DEVICES)} (or 'device' on a GPU)", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    report = launchability.sweep(archs, all_batches=args.all_batches, devices=devices)
    print("\n".join(report.lines()))
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0 if report.ok else 1


def run_gpu(args) -> int:
    if not gpu_available():
        reason = ""
        try:
            with use_backend("cupy") as be:
                be.ensure_device()
        except Exception as exc:
            reason = f" ({str(exc).split('. ')[0]})"
        print(f"cuconv check --gpu: no GPU was found{reason}; nothing was checked. "
              "`cuconv check` (no --gpu) runs the kernels on the CPU emulator.", file=sys.stderr)
        return EXIT_NO_GPU
    import cupy  # noqa: PLC0415
    count = cupy.cuda.runtime.getDeviceCount()
    seed = args.seed or 0
    if args.devices:
        try:
            indices = parse_devices(args.devices, count)
        except ValueError as exc:
            print(f"cuconv check: {exc}", file=sys.stderr)
            return 2
    else:
        if not 0 <= args.device < count:
            print(f"cuconv check: --device {args.device}: this machine has {count} CUDA device(s)", file=sys.stderr)
            return 2
        indices = [args.device]
    unsupported = [r for r in (gpu_unsupported_reason(i) for i in indices) if r]
    if unsupported:     # once per device, instead of every case failing the same way
        for reason in unsupported:
            print(f"cuconv check --gpu: {reason}", file=sys.stderr)
        print("cuconv check --gpu: nothing was checked on the device(s) above.", file=sys.stderr)
        return EXIT_NO_GPU
    if len(indices) == 1:
        lines, ok, results = check_device(indices[0], seed, args.one_per_file, args.filter, args.quiet)
        print("\n".join(lines))
        if args.json:
            _write_json(args.json, {indices[0]: results})
        return 0 if ok else 1
    # One process per device ("spawn": a CUDA context does not survive fork).
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(i, seed, args.one_per_file, args.filter, queue)) for i in indices]
    for p in procs:
        p.start()
    done = {}
    for _ in procs:
        i, lines, ok = queue.get()
        done[i] = (lines, ok)
    for p in procs:
        p.join()
    all_ok = True
    for i in indices:
        lines, ok = done[i]
        print(f"== device {i}")
        print("\n".join(lines))
        all_ok &= ok
    return 0 if all_ok else 1


def _write_json(path: str, by_device: dict) -> None:
    rows = [dict(device=dev, **{k: v for k, v in r.__dict__.items()}) for dev, rs in by_device.items() for r in rs]
    with open(path, "w") as f:
        json.dump(dict(rows=rows), f, indent=1, default=str)

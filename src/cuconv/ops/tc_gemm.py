"""Tensor-core GEMM (kernels/tc_gemm.cu): fp16, bf16 and tf32 in, fp32 accumulation.

``tc_gemm(a, b, out=None, *, bias=None, activation=None, residual=None, allow_tf32=False,
config=None)`` computes ``act(a @ b + bias[:, None] + residual)`` for float16/bfloat16 (and
float32 with ``allow_tf32=True``), output in the input dtype; ``cuconv.gemm`` dispatches
those dtypes here. Configs, dtypes and device rules: ops/tc_common.py.
"""
from __future__ import annotations

import math

import numpy as np

from ..dtypes import INT32_MAX
from ..plan import Launch, Output, Plan, Ref
from ..problem import GemmProblem
from . import _common
from ._common import i32, i64
from ._frontend import FrontEnd
from .tc_common import (  # noqa: F401
    AUX,
    AUX_ENTRIES,
    VEC_WIDTHS,
    ENTRIES,
    GEMM_FILE,
    GRID_YZ_MAX,
    TcConfig,
    arch_reason,
    check_dtype,
    find_config,
    pick_vec,
    resolve_named,
)


def choose_gemm_config(kdt: str, M: int, N: int, vec: int, cc: int = 90, sms: int = 132,
                       batch: int = 1) -> TcConfig:
    """The default GEMM config (a heuristic, not tuned by measurement yet).

    sm_75: the 2-stage fp16 configs. Otherwise, when every SM gets at least one 128x256 tile
    (and 16-byte copies are possible): 128x256 (most reuse); else 128x128 when every SM gets
    one; else 64x64 (more, smaller blocks). Misaligned operands take the 64x64 configs, which
    exist for every cp.async width.
    """
    stages_small = 2 if cc < 80 else 3
    full = VEC_WIDTHS[kdt][0]
    tiles = lambda bm, bn: math.ceil(M / bm) * math.ceil(N / bn) * batch  # noqa: E731
    if vec == full:
        if cc >= 80 and kdt != "tf32" and tiles(128, 256) >= sms:
            return find_config("gemm", kdt, 128, 3, vec, bn=256)
        if tiles(128, 128) >= sms:
            return find_config("gemm", kdt, 128, 2 if cc < 80 else 4, vec, bn=128)
    return find_config("gemm", kdt, 64, stages_small, vec)


def tc_gemm_launches(a: Ref, b: Ref, c: Ref, M, N, K, *, batch=1, stride_a=0, stride_b=0, stride_c=0,
                     bias: Ref | None = None, act=0, residual: Ref | None = None, config=None, kdt=None,
                     cc: int = 90, sms: int = 132, aligned: bool = True) -> list[Launch]:
    """The launches of c[i] = act(a[i] @ b[i] + bias + residual[i]) on tensor cores (no argument checks).

    ``a``: (M, K), ``b``: (K, N), ``c``: (M, N), row-major and contiguous per matrix, element
    strides between batch matrices (0 broadcasts). ``kdt``: "float16", "bfloat16" or "tf32".
    ``aligned``: whether the arrays behind a and b start 16-byte aligned.
    """
    M, N, K, batch = int(M), int(N), int(K), int(batch)
    if M == 0 or N == 0 or batch == 0:
        return []
    cfg = config
    if cfg is None:
        vec = pick_vec(kdt, (K, N), aligned)
        # No cp.async width fits (odd K or N, or misaligned operands): the simple kernel.
        cfg = "simple" if vec is None else choose_gemm_config(kdt, M, N, vec, cc, sms, batch)
    if cfg != "simple":
        reason = cfg.can_implement(M=M, N=N, K=K, cc=cc)
        if reason is None and not aligned:
            reason = f"a and b must be {cfg.vec * cfg.esize}-byte aligned"
        if reason:
            raise ValueError(f"config {cfg.name} cannot run a {M}x{N}x{K} GEMM: {reason}")
    out_dt = "float32" if kdt == "tf32" else kdt
    ph = Ref.absent(out_dt if out_dt != "bfloat16" else "uint16")
    launches = []
    for b0 in range(0, batch, GRID_YZ_MAX):
        nb = min(GRID_YZ_MAX, batch - b0)
        av = Ref(a.name, a.offset + b0 * stride_a)
        bv = Ref(b.name, b.offset + b0 * stride_b)
        cv = Ref(c.name, c.offset + b0 * stride_c)
        rv = None if residual is None else Ref(residual.name, residual.offset + b0 * stride_c)
        args = (av, bv, cv, i32(M), i32(N), i32(K), i32(K), i32(N), i32(N),
                i64(stride_a), i64(stride_b), i64(stride_c),
                bias if bias is not None else ph, i32(bias is not None), rv if rv is not None else ph,
                i32(rv is not None), i32(act))
        if cfg == "simple":
            grid = (math.ceil(M / 32) * math.ceil(N / 16), nb, 1)
            launches.append(Launch(AUX_ENTRIES[("tc_gemm_simple", kdt)], grid, (128, 1, 1), args))
        else:
            grid = (math.ceil(M / cfg.bm) * math.ceil(N / cfg.bn), nb, 1)
            launches.append(Launch(ENTRIES[cfg], grid, (cfg.threads, 1, 1), args, cfg.smem_bytes))
    return launches


def gemm_plan(be, a, b, bias, residual, out, activation, config, allow_tf32, misaligned=frozenset()) -> Plan:
    """Check every argument of a tensor-core GEMM (clear errors, nothing launched) and plan it."""
    a = _common.as_tensor(a, "a", None, ("float16", "bfloat16", "float32"), be)
    b = _common.as_tensor(b, "b", None, ("float16", "bfloat16", "float32"), be)
    dtype = np.dtype(a.dtype)
    if np.dtype(b.dtype) != dtype:
        raise TypeError(f"a and b must have the same dtype, got {dtype.name} and {np.dtype(b.dtype).name}")
    kdt = check_dtype(dtype.name, allow_tf32, "tc_gemm")
    prob = GemmProblem.from_shapes(a.shape, b.shape, dtype.name)
    M, N, K, batch = prob.M, prob.N, prob.K, prob.batch
    for name, v in (("M", M), ("N", N), ("K", K)):
        if v > INT32_MAX - 256:
            raise ValueError(f"{name}={v} is larger than 2**31-256, the kernels' 32-bit index range "
                             f"(a {tuple(a.shape)}, b {tuple(b.shape)})")
    if math.ceil(M / 32) * math.ceil(N / 16) > INT32_MAX:
        raise ValueError(f"a {M}x{N} output needs more than 2**31-1 blocks")
    _common.optional_tensor(bias, "bias", (M,), dtype, be)
    _common.optional_tensor(residual, "residual", prob.output_shape, dtype, be)
    act = _common.activation_code(activation)
    cfg = None if config is None else resolve_named(config, "gemm", kdt)
    caps = be.caps()
    reason = arch_reason(kdt, caps.cc)
    if reason:
        raise ValueError(f"tc_gemm cannot run here: {reason}")
    _common.same_device(be, a=a, b=b, bias=bias, residual=residual, out=out)
    if out is not None:
        _common.check_out(out, prob.output_shape, dtype, be)
    launches = tc_gemm_launches(
        Ref("a"), Ref("b"), Ref("out"), M, N, K, batch=batch, stride_a=M * K if prob.a_batched else 0,
        stride_b=K * N if prob.b_batched else 0, stride_c=M * N,
        bias=Ref("bias") if bias is not None else None, act=act,
        residual=Ref("residual") if residual is not None else None, config=cfg, kdt=kdt, cc=caps.cc,
        sms=caps.sms, aligned=not ({"a", "b"} & misaligned))
    absent = frozenset(r for r, v in (("bias", bias), ("residual", residual)) if v is None)
    dn = dtype.name
    return Plan("gemm", launches[0].kernel if launches else "tc_gemm", prob, tuple(launches),
                ("a", "b", "bias", "residual"), (Output("out", prob.output_shape, dtype),), be.device_key(),
                aligned=("a", "b"), absent=absent,
                expected=(("a", tuple(a.shape), dn), ("b", tuple(b.shape), dn), ("bias", (M,), dn),
                          ("residual", prob.output_shape, dn)))


def tc_gemm(a, b, out=None, *, bias=None, activation=None, residual=None, allow_tf32=False, config=None):
    """``out = activation(a @ b + bias[:, None] + residual)`` on tensor cores, fp32 accumulation.

    ``a``: (M, K) or (batch, M, K); ``b``: (K, N) or (batch, K, N), both float16, both bfloat16,
    or both float32 with ``allow_tf32=True`` (operands rounded to tf32). A 2-D operand is
    broadcast over the other's batch. ``bias``: (M,), ``residual``: the output's shape, both in
    the input dtype; the output has the input dtype. ``config``: None (heuristic), "simple" (the
    analytic kernel), or a config name / ``TcConfig`` from ``CONFIGS``.
    """
    return _FRONT({"a": a, "b": b, "bias": bias, "residual": residual, "out": out}, (activation, config, allow_tf32))


_FRONT = FrontEnd("tc_gemm", ("a", "b", "bias", "residual", "out"), lambda be, env, args, extra, misaligned: gemm_plan(
    be, env["a"], env["b"], env["bias"], env["residual"], env["out"], *args, misaligned))

"""``cuconv.separable_conv2d``: the depthwise-separable block (§9.5), depthwise then 1×1.

    y = activation(pointwise(activation_depthwise(depthwise(x) + bias_depthwise))
                   + bias_pointwise + residual)

``w_depthwise`` is (M·C, 1, R, S) (channel multiplier M), ``w_pointwise`` is (K, M·C, 1, 1).

Two paths:

* fused (kernels/depthwise.cu's ``separable_fused_f32``, labelled
  ``depthwise_separable_fused_f32_p64_k64_c32``): a block takes 64 output pixels × 64
  pointwise output channels; for each chunk of 32 depthwise channels it computes the
  depthwise results into shared memory and multiplies them by the matching 32×64 slice of the
  pointwise weights there. The intermediate (N, M·C, P, Q) tensor never goes to global memory.
  Chunking C means any channel count fits; the price is that each 64-channel slice of K
  recomputes the depthwise part (R·S FMAs per intermediate element per slice against 64 for
  the pointwise part: 14 % extra arithmetic for 3×3).
* unfused: the depthwise kernels into an (N, M·C, P, Q) workspace, then the pointwise
  convolution as one batched GEMM (``cuconv.ops.gemm.gemm_launch``, bias/activation/residual
  fused in its epilogue).

``fused=None`` (default) takes the fused path whenever ``fused_reason`` is None; True demands
it (ValueError with the reason otherwise); False takes the unfused path.
"""
from __future__ import annotations

import numpy as np

from ..dtypes import INT32_MAX
from ..plan import Launch, Output, Plan, Ref, layout_buffers
from ..problem import Conv2dProblem
from ..registry import KernelEntry, register_kernel
from . import _common
from . import depthwise as _dw
from ._common import OUT, X, i32
from ._frontend import FrontEnd, plan_of
from .gemm import gemm_launches

FILE = "depthwise.cu"
FUSED_EXPRESSION = "separable_fused_f32"
FUSED_NAME = "depthwise_separable_fused_f32_p64_k64_c32"     # in depthwise.cu: its label starts there
THREADS = 256
TILE_PIX = 64
TILE_K = 64

# Two blocks per SM: its 16 accumulators need more than the 64 registers of four. depthwise.cu
# includes cuda_fp16.h / cuda_bf16.h (its 16-bit kernels): cuda_headers=True as for all of them.
FUSED_ENTRY = register_kernel(KernelEntry(FILE, FUSED_EXPRESSION, FUSED_NAME, block_threads=THREADS,
                                          min_blocks_per_sm=2, cuda_headers=True))


def fused_reason(dw: Conv2dProblem, K: int) -> str | None:
    """None if the fused kernel can run depthwise problem ``dw`` followed by a 1×1 to ``K``
    channels, else why not. Shared memory is fixed (chunks of 32 channels), so the limits are
    those of its 32-bit index arithmetic and grid."""
    if dw.dtype != "float32":
        return f"the fused kernel takes float32, got {dw.dtype}"
    reason = _dw.int32_reason(dw)
    if reason is not None:
        return reason
    PQ = dw.P * dw.Q
    if PQ > INT32_MAX or K > INT32_MAX or dw.K * K > INT32_MAX:
        return f"P·Q={PQ}, K={K} or M·C·K={dw.K * K} does not fit a 32-bit int"
    blocks = dw.N * (-(-PQ // TILE_PIX)) * (-(-K // TILE_K))
    if blocks > INT32_MAX:
        return f"{blocks} blocks exceed the grid limit 2**31-1"
    return None


_ROLES = ("x", "w_depthwise", "w_pointwise", "bias_depthwise", "bias_pointwise", "residual")


def _plan(be, env, args, extra, misaligned) -> Plan:
    stride, padding, dilation, activation_depthwise, activation, fused = args
    x = _common.as_tensor(env["x"], "input", ndim=4, dtypes=("float32",), be=be)
    wd = _common.as_tensor(env["w_depthwise"], "w_depthwise", ndim=4, dtypes=("float32",), be=be)
    wp = _common.as_tensor(env["w_pointwise"], "w_pointwise", ndim=4, dtypes=("float32",), be=be)
    N, C, H, W = (int(d) for d in x.shape)
    if wd.shape[1] != 1 or wd.shape[0] == 0 or wd.shape[0] % C:
        raise ValueError(f"w_depthwise must have shape (M·C, 1, R, S) with C={C} the input channels "
                         f"(input {tuple(x.shape)}), got {tuple(wd.shape)}")
    CM = int(wd.shape[0])
    if wp.shape[1] != CM or wp.shape[2:] != (1, 1) or wp.shape[0] == 0:
        raise ValueError(f"w_pointwise must have shape (K, {CM}, 1, 1) to follow w_depthwise "
                         f"{tuple(wd.shape)}, got {tuple(wp.shape)}")
    K = int(wp.shape[0])
    dw = Conv2dProblem.from_shapes(x.shape, wd.shape, stride, padding, dilation, C, "float32")
    out_shape = (N, K, dw.P, dw.Q)
    bd = _common.optional_tensor(env["bias_depthwise"], "bias_depthwise", (CM,), np.float32, be)
    bp = _common.optional_tensor(env["bias_pointwise"], "bias_pointwise", (K,), np.float32, be)
    residual = _common.optional_tensor(env["residual"], "residual", out_shape, np.float32, be)
    act_d = _common.activation_code(activation_depthwise)
    act = _common.activation_code(activation)
    _common.same_device(be, input=x, w_depthwise=wd, w_pointwise=wp, bias_depthwise=bd,
                        bias_pointwise=bp, residual=residual, out=env["out"])
    if env["out"] is not None:
        _common.check_out(env["out"], out_shape, np.float32, be)
    if fused not in (None, True, False):
        raise TypeError(f"fused must be None, True or False, got {fused!r}")
    reason = fused_reason(dw, K)
    if fused is True and reason is not None:
        raise ValueError(f"fused=True cannot run depthwise {dw.describe()} then 1x1 to K={K}: {reason}")
    has = {r: env[r] is not None for r in _ROLES}
    ph = Ref.absent("float32")
    workspace = ()
    if N == 0:                      # an empty batch: an empty output, nothing to launch
        launches, algo = [], "empty"
    elif reason is None and fused is not False:
        blocks = N * (-(-(dw.P * dw.Q) // TILE_PIX)) * (-(-K // TILE_K))
        launches = [Launch(FUSED_ENTRY, (blocks, 1, 1), (THREADS, 1, 1), (
            X, Ref("w_depthwise"), Ref("bias_depthwise") if has["bias_depthwise"] else ph, Ref("w_pointwise"),
            Ref("bias_pointwise") if has["bias_pointwise"] else ph, Ref("residual") if has["residual"] else ph,
            OUT, i32(N), i32(C), i32(H), i32(W), i32(CM // C), i32(dw.P), i32(dw.Q), i32(dw.R), i32(dw.S),
            i32(dw.stride_h), i32(dw.stride_w), i32(dw.pad_h), i32(dw.pad_w),
            i32(dw.dilation_h), i32(dw.dilation_w), i32(K),
            i32(has["bias_depthwise"]), i32(act_d), i32(has["bias_pointwise"]), i32(has["residual"]), i32(act)))]
        algo = FUSED_NAME
    else:
        # Unfused: the intermediate goes through global memory; then per image
        # y[n] (K × P·Q) = w_pointwise (K × M·C) · mid[n] (M·C × P·Q), one batched GEMM.
        PQ = dw.P * dw.Q
        workspace = layout_buffers(("mid", "float32", N * CM * PQ))
        pl, launches = _dw.launches(dw, X, Ref("w_depthwise"), Ref("mid"), has["bias_depthwise"], False, act_d,
                                    bias=Ref("bias_depthwise"))
        launches += gemm_launches(Ref("w_pointwise"), Ref("mid"), OUT, K, PQ, CM, lda=CM, ldb=PQ, ldc=PQ,
                                  batch=N, stride_a=0, stride_b=CM * PQ, stride_c=K * PQ,
                                  bias=Ref("bias_pointwise") if has["bias_pointwise"] else None, act=act,
                                  residual=Ref("residual") if has["residual"] else None)
        algo = f"unfused:{pl.kernel}"
    return Plan("separable_conv2d", algo, dw, tuple(launches), _ROLES,
                (Output("out", out_shape, np.dtype(np.float32)),), be.device_key(),
                workspace_bytes=workspace[1] if workspace else 0, buffers=workspace[0] if workspace else (),
                absent=frozenset(r for r in _ROLES if not has[r]),
                expected=tuple((r, tuple(env[r].shape), "float32") for r in _ROLES if has[r]))


_FRONT = FrontEnd("separable_conv2d", (*_ROLES, "out"), _plan, batched=("x", "residual", "out"),
                  names={"x": "input"})


def separable_conv2d(x, w_depthwise, w_pointwise, bias_depthwise=None, bias_pointwise=None,
                     stride=1, padding=0, dilation=1, *, activation_depthwise=None, activation=None,
                     residual=None, fused=None, out=None):
    """Depthwise-separable convolution: depthwise (M·C, 1, R, S) then pointwise (K, M·C, 1, 1).

    ``stride``, ``padding``, ``dilation`` apply to the depthwise stage. ``x`` (N, C, H, W), or
    (C, H, W) unbatched as PyTorch takes it; returns (N, K, P, Q) ((K, P, Q)) on the current
    backend. See the module docstring for ``fused``.
    """
    return _FRONT({"x": x, "w_depthwise": w_depthwise, "w_pointwise": w_pointwise, "bias_depthwise": bias_depthwise,
                   "bias_pointwise": bias_pointwise, "residual": residual, "out": out},
                  args=(stride, padding, dilation, activation_depthwise, activation, fused))


plan_separable_conv2d = plan_of(separable_conv2d)

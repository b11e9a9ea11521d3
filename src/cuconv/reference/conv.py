"""float64 references for convolution, im2col and GEMM."""
from __future__ import annotations

import numpy as np

from ..problem import Conv2dProblem, pair


def _act(y: np.ndarray, activation) -> np.ndarray:
    if activation in (None, "none", "identity"):
        return y
    if activation == "relu":
        return np.maximum(y, 0.0)
    if activation == "relu6":
        return np.clip(y, 0.0, 6.0)
    if activation == "silu":
        return y / (1.0 + np.exp(-y))
    raise ValueError(f"unknown activation {activation!r}")


def apply_epilogue(y: np.ndarray, bias=None, residual=None, activation=None) -> np.ndarray:
    """y = activation(y + bias[k] + residual), in float64 (cuconv's fused-epilogue order)."""
    y = np.asarray(y, dtype=np.float64)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64).reshape(1, -1, 1, 1)
    if residual is not None:
        y = y + np.asarray(residual, dtype=np.float64)
    return _act(y, activation)


def conv2d_ref(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
               activation=None, residual=None) -> np.ndarray:
    """Direct convolution in float64 with torch.nn.functional.conv2d's semantics."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    p = Conv2dProblem.from_shapes(x.shape, w.shape, stride, padding, dilation, groups, "float64")
    xp = np.pad(x, ((0, 0), (0, 0), (p.pad_h, p.pad_bottom), (p.pad_w, p.pad_right)))
    y = np.zeros(p.output_shape, dtype=np.float64)
    cg, kg = p.C_per_group, p.K_per_group
    hi = p.stride_h * (p.P - 1) + 1
    wi = p.stride_w * (p.Q - 1) + 1
    for g in range(p.groups):
        xg = xp[:, g * cg:(g + 1) * cg]
        wg = w[g * kg:(g + 1) * kg]
        for r in range(p.R):
            for s in range(p.S):
                h0, w0 = r * p.dilation_h, s * p.dilation_w
                patch = xg[:, :, h0:h0 + hi:p.stride_h, w0:w0 + wi:p.stride_w]  # N, cg, P, Q
                y[:, g * kg:(g + 1) * kg] += np.einsum("ncpq,kc->nkpq", patch, wg[:, :, r, s])
    return apply_epilogue(y, bias, residual, activation)


def im2col_ref(x, kernel_size, stride=1, padding=0, dilation=1) -> np.ndarray:
    """The §8.3 column matrix per image: shape (N, C·R·S, P·Q), rows ordered (c, r, s)."""
    x = np.asarray(x, dtype=np.float64)
    R, S = pair(kernel_size, "kernel_size")
    N, C = x.shape[:2]
    p = Conv2dProblem.from_shapes(x.shape, (1, C, R, S), stride, padding, dilation, 1, "float64")
    xp = np.pad(x, ((0, 0), (0, 0), (p.pad_h, p.pad_bottom), (p.pad_w, p.pad_right)))
    cols = np.empty((N, C, R, S, p.P, p.Q), dtype=np.float64)
    hi = p.stride_h * (p.P - 1) + 1
    wi = p.stride_w * (p.Q - 1) + 1
    for r in range(R):
        for s in range(S):
            h0, w0 = r * p.dilation_h, s * p.dilation_w
            cols[:, :, r, s] = xp[:, :, h0:h0 + hi:p.stride_h, w0:w0 + wi:p.stride_w]
    return cols.reshape(N, C * R * S, p.P * p.Q)


def gemm_ref(a, b) -> np.ndarray:
    return np.asarray(a, dtype=np.float64) @ np.asarray(b, dtype=np.float64)

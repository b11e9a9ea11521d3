"""float64 references for the backward passes, written from the textbook's §9.8.

For the forward ``y = conv2d(x, w) + b`` and an upstream gradient ``dy = ∂L/∂y``:

* (c) ``conv2d_input_ref``: ∂L/∂x = full_conv2d(dy, flip(w)) — literally: dy with stride − 1
  zeros inserted between its elements (the strided forward skipped those positions), padded by
  dilation·(k − 1) − pad ("full" padding, less the forward's own), correlated with the filter
  rotated by 180° and transposed (input and output channels swapped, per group), at the
  forward's dilation. Rows past the last output that still belong to x (the forward's
  floor division dropped them) get zeros.
* (a) ``conv2d_weight_ref``: ∂L/∂w = the correlation of x with dy: for each tap (r, s), the
  padded input sampled at the forward's stride from offset (r·dh, s·dw), contracted with dy
  over the batch and output positions.
* (b) ``conv2d_bias_ref``: ∂L/∂b = Σ over batch and spatial positions of dy.
* Pooling: max routes each dy to its window's argmax through the int64 indices (summed where
  windows overlap); average spreads dy / divisor over its window (PyTorch's divisor rules,
  shared with ``avg_pool2d_ref``); global average spreads dy / (H·W).

``padding`` is torch's (an int, a pair, "same", "valid") or explicit ((top, bottom),
(left, right)) — the asymmetric padding a ``Conv2dProblem`` can hold.
"""
from __future__ import annotations

import numpy as np

from ..problem import Conv2dProblem, pair
from .conv import conv2d_ref
from .pool import pool_out_size_ref


def conv_problem(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
                 dtype="float64") -> Conv2dProblem:
    """A validated Conv2dProblem; ``padding`` may also be ((top, bottom), (left, right))."""
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(v, (tuple, list)) for v in padding)):
        (top, bottom), (left, right) = padding
        p = Conv2dProblem.from_shapes(input_shape, weight_shape, stride, (top, left), dilation,
                                      groups, dtype)
        p = p.with_(pad_h_end=bottom if bottom != top else None,
                    pad_w_end=right if right != left else None)
        return p.validate(x_shape=tuple(input_shape), w_shape=tuple(weight_shape))
    return Conv2dProblem.from_shapes(input_shape, weight_shape, stride, padding, dilation, groups,
                                     dtype)


def _pad_or_crop(a: np.ndarray, axis: int, before: int, after: int) -> np.ndarray:
    """Pad with zeros (a positive amount) or crop (a negative one) at both ends of ``axis``."""
    lo = max(-before, 0)
    hi = a.shape[axis] - max(-after, 0)
    a = np.take(a, np.arange(lo, hi), axis=axis)
    widths = [(0, 0)] * a.ndim
    widths[axis] = (max(before, 0), max(after, 0))
    return np.pad(a, widths)


def conv2d_input_ref(input_size, weight, grad_output, stride=1, padding=0, dilation=1,
                     groups=1) -> np.ndarray:
    """∂L/∂x (§9.8 (c)) in float64, shape ``input_size``."""
    w = np.asarray(weight, dtype=np.float64)
    dy = np.asarray(grad_output, dtype=np.float64)
    p = conv_problem(input_size, w.shape, stride, padding, dilation, groups)
    if dy.shape != p.output_shape:
        raise ValueError(f"grad_output must have the forward's output shape {p.output_shape}, got {dy.shape}")
    N, K, P, Q = dy.shape
    # Insert stride − 1 zeros between the elements of dy.
    up = np.zeros((N, K, (P - 1) * p.stride_h + 1, (Q - 1) * p.stride_w + 1))
    up[:, :, ::p.stride_h, ::p.stride_w] = dy
    # "Full" padding dilation·(k − 1), less the forward's leading padding; the trailing side is
    # sized so that the correlation below yields exactly H × W.
    eff_h, eff_w = p.dilation_h * (p.R - 1), p.dilation_w * (p.S - 1)
    lead_h, lead_w = eff_h - p.pad_h, eff_w - p.pad_w
    up = _pad_or_crop(up, 2, lead_h, p.H + eff_h - lead_h - up.shape[2])
    up = _pad_or_crop(up, 3, lead_w, p.W + eff_w - lead_w - up.shape[3])
    # The rotated, transposed filter: w_t[g·Cg + c, k, r, s] = w[g·Kg + k, c, R−1−r, S−1−s].
    cg, kg = p.C_per_group, p.K_per_group
    w_t = np.empty((p.C, kg, p.R, p.S))
    for g in range(p.groups):
        w_t[g * cg:(g + 1) * cg] = w[g * kg:(g + 1) * kg, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    return conv2d_ref(up, w_t, stride=1, padding=0, dilation=(p.dilation_h, p.dilation_w),
                      groups=p.groups)


def conv2d_weight_ref(input, weight_size, grad_output, stride=1, padding=0, dilation=1,
                      groups=1) -> np.ndarray:
    """∂L/∂w (§9.8 (a)) in float64, shape ``weight_size``."""
    x = np.asarray(input, dtype=np.float64)
    dy = np.asarray(grad_output, dtype=np.float64)
    p = conv_problem(x.shape, weight_size, stride, padding, dilation, groups)
    if dy.shape != p.output_shape:
        raise ValueError(f"grad_output must have the forward's output shape {p.output_shape}, got {dy.shape}")
    xp = np.pad(x, ((0, 0), (0, 0), (p.pad_h, p.pad_bottom), (p.pad_w, p.pad_right)))
    dw = np.zeros(p.weight_shape)
    cg, kg = p.C_per_group, p.K_per_group
    hi = p.stride_h * (p.P - 1) + 1
    wi = p.stride_w * (p.Q - 1) + 1
    for g in range(p.groups):
        xg = xp[:, g * cg:(g + 1) * cg]
        dyg = dy[:, g * kg:(g + 1) * kg]
        for r in range(p.R):
            for s in range(p.S):
                h0, w0 = r * p.dilation_h, s * p.dilation_w
                patch = xg[:, :, h0:h0 + hi:p.stride_h, w0:w0 + wi:p.stride_w]   # N, cg, P, Q
                dw[g * kg:(g + 1) * kg, :, r, s] = np.einsum("nkpq,ncpq->kc", dyg, patch)
    return dw


def conv2d_bias_ref(grad_output) -> np.ndarray:
    """∂L/∂b (§9.8 (b)): the sum of dy over batch and spatial positions, shape (K,)."""
    return np.asarray(grad_output, dtype=np.float64).sum(axis=(0, 2, 3))


def max_pool2d_backward_ref(grad_output, indices, input_size) -> np.ndarray:
    """dx: each dy added at its plane's flat index ih·W + iw (overlaps summed)."""
    dy = np.asarray(grad_output, dtype=np.float64)
    idx = np.asarray(indices)
    N, C, H, W = (int(d) for d in input_size)
    dx = np.zeros((N * C, H * W))
    planes = np.repeat(np.arange(N * C), dy.shape[2] * dy.shape[3])
    np.add.at(dx, (planes, idx.reshape(-1)), dy.reshape(-1))
    return dx.reshape(N, C, H, W)


def avg_pool2d_backward_ref(grad_output, input_size, kernel_size, stride=None, padding=0,
                            ceil_mode=False, count_include_pad=True, divisor_override=None):
    """dx: dy[p, q] / divisor(p, q) added over window (p, q)'s input elements."""
    dy = np.asarray(grad_output, dtype=np.float64)
    N, C, H, W = (int(d) for d in input_size)
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = (kh, kw) if stride is None else pair(stride, "stride")
    ph, pw = pair(padding, "padding")
    P = pool_out_size_ref(H, kh, sh, ph, 1, ceil_mode)
    Q = pool_out_size_ref(W, kw, sw, pw, 1, ceil_mode)
    if dy.shape != (N, C, P, Q):
        raise ValueError(f"grad_output must be {(N, C, P, Q)}, got {dy.shape}")
    dx = np.zeros((N, C, H, W))
    for p in range(P):
        h0 = p * sh - ph
        h1 = min(h0 + kh, H + ph)             # the window clipped to the padded input
        for q in range(Q):
            w0 = q * sw - pw
            w1 = min(w0 + kw, W + pw)
            a0, a1, b0, b1 = max(h0, 0), min(h1, H), max(w0, 0), min(w1, W)
            if a0 >= a1 or b0 >= b1:
                continue
            if divisor_override:
                div = divisor_override
            elif count_include_pad:
                div = (h1 - h0) * (w1 - w0)
            else:
                div = (a1 - a0) * (b1 - b0)
            dx[:, :, a0:a1, b0:b1] += (dy[:, :, p, q] / div)[:, :, None, None]
    return dx


def global_avg_pool2d_backward_ref(grad_output, input_size) -> np.ndarray:
    N, C, H, W = (int(d) for d in input_size)
    dy = np.asarray(grad_output, dtype=np.float64).reshape(N, C, 1, 1)
    return np.broadcast_to(dy / (H * W), (N, C, H, W)).copy()

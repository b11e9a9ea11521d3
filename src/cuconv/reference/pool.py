"""float64 references for pooling, written from PyTorch's documented semantics.

The output size (torch.nn.MaxPool2d's formula) with ``ceil_mode``'s extra rule that the last
window must start inside the input or the left padding::

    out = floor((size + 2·pad − dilation·(kernel − 1) − 1 + (stride − 1 if ceil_mode)) / stride) + 1
    if ceil_mode and (out − 1)·stride >= size + pad: out −= 1

Max pooling scans each window row by row over its in-bounds positions and replaces the running
maximum when a value is strictly greater or is NaN (PyTorch's CPU and CUDA kernels): ties keep
the first position in scan order, NaN propagates (the last NaN's index is returned), and the
index starts at the window's first in-bounds position (so an all −inf window reports that one).
Indices are flat positions ih·W + iw within each (n, c) plane.
"""
from __future__ import annotations

import numpy as np


def _pair(v):
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def pool_out_size_ref(size: int, kernel: int, stride: int, pad: int, dilation: int,
                      ceil_mode: bool) -> int:
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1          # ceil division (Python's // floors)
        if (out - 1) * stride >= size + pad:
            out -= 1
    else:
        out = span // stride + 1
    return out


def max_pool2d_ref(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                   return_indices=False):
    """Max pooling in float64 (NaN-propagating, first-max ties); optionally the int64 indices."""
    x = np.asarray(x, dtype=np.float64)
    N, C, H, W = x.shape
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    P = pool_out_size_ref(H, kh, sh, ph, dh, ceil_mode)
    Q = pool_out_size_ref(W, kw, sw, pw, dw, ceil_mode)
    y = np.empty((N, C, P, Q), dtype=np.float64)
    idx = np.empty((N, C, P, Q), dtype=np.int64)
    for p in range(P):
        rows = [p * sh - ph + r * dh for r in range(kh)]
        rows = [h for h in rows if 0 <= h < H]
        first_h = rows[0] if rows else _first_in_bounds(p * sh - ph, dh)
        for q in range(Q):
            cols = [q * sw - pw + s * dw for s in range(kw)]
            cols = [c for c in cols if 0 <= c < W]
            first_w = cols[0] if cols else _first_in_bounds(q * sw - pw, dw)
            best = np.full((N, C), -np.inf)
            best_i = np.full((N, C), first_h * W + first_w, dtype=np.int64)
            for h in rows:
                for c in cols:
                    v = x[:, :, h, c]
                    take = (v > best) | np.isnan(v)
                    best = np.where(take, v, best)
                    best_i = np.where(take, h * W + c, best_i)
            y[:, :, p, q] = best
            idx[:, :, p, q] = best_i
    return (y, idx) if return_indices else y


def _first_in_bounds(start: int, dilation: int) -> int:
    """The first tap position >= 0 (a window with no in-bounds element still reports one)."""
    while start < 0:
        start += dilation
    return start


def avg_pool2d_ref(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                   count_include_pad=True, divisor_override=None):
    """Average pooling in float64 with PyTorch's divisor rules."""
    x = np.asarray(x, dtype=np.float64)
    N, C, H, W = x.shape
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    ph, pw = _pair(padding)
    P = pool_out_size_ref(H, kh, sh, ph, 1, ceil_mode)
    Q = pool_out_size_ref(W, kw, sw, pw, 1, ceil_mode)
    y = np.empty((N, C, P, Q), dtype=np.float64)
    for p in range(P):
        h0 = p * sh - ph
        h1 = min(h0 + kh, H + ph)             # the window clipped to the padded input
        for q in range(Q):
            w0 = q * sw - pw
            w1 = min(w0 + kw, W + pw)
            padded_count = (h1 - h0) * (w1 - w0)
            a0, a1, b0, b1 = max(h0, 0), min(h1, H), max(w0, 0), min(w1, W)
            if a0 >= a1 or b0 >= b1:
                y[:, :, p, q] = 0.0
                continue
            total = x[:, :, a0:a1, b0:b1].sum(axis=(2, 3))
            if divisor_override:
                div = divisor_override
            elif count_include_pad:
                div = padded_count
            else:
                div = (a1 - a0) * (b1 - b0)
            y[:, :, p, q] = total / div
    return y


def global_avg_pool2d_ref(x):
    """Mean over H and W: shape (N, C, 1, 1)."""
    return np.asarray(x, dtype=np.float64).mean(axis=(2, 3), keepdims=True)

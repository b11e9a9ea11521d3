"""float64 reference for transposed convolution, in the scatter form of its definition.

Each input pixel (ih, iw) adds x[n, ci, ih, iw] · w[ci, co, :, :] into the output at rows
ih·stride_h + r·dilation_h − pad_h (and the same for columns): §9.7's "insert stride − 1 zeros
and convolve", written without the zeros. The kernels gather instead; the two forms agreeing is
the test. Output size: (H − 1)·stride − 2·pad + dilation·(R − 1) + output_padding + 1.
"""
from __future__ import annotations

import numpy as np

from .conv import apply_epilogue


def _pair(v):
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def conv_transpose2d_ref(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                         dilation=1, *, activation=None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    N, Cin, H, W = x.shape
    Cin_w, cout_g, R, S = w.shape
    assert Cin_w == Cin and Cin % groups == 0, (x.shape, w.shape, groups)
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    oph, opw = _pair(output_padding)
    dh, dw = _pair(dilation)
    Cout = cout_g * groups
    cin_g = Cin // groups
    # Uncropped extent: every tap of every input pixel, plus the output_padding rows/columns.
    full_h = (H - 1) * sh + dh * (R - 1) + 1 + oph
    full_w = (W - 1) * sw + dw * (S - 1) + 1 + opw
    full = np.zeros((N, Cout, full_h, full_w), dtype=np.float64)
    for g in range(groups):
        xg = x[:, g * cin_g:(g + 1) * cin_g]
        wg = w[g * cin_g:(g + 1) * cin_g]
        for r in range(R):
            for s in range(S):
                contrib = np.einsum("nchw,ck->nkhw", xg, wg[:, :, r, s])
                h0, w0 = r * dh, s * dw
                full[:, g * cout_g:(g + 1) * cout_g,
                     h0:h0 + (H - 1) * sh + 1:sh, w0:w0 + (W - 1) * sw + 1:sw] += contrib
    Hout = full_h - 2 * ph
    Wout = full_w - 2 * pw
    y = full[:, :, ph:ph + Hout, pw:pw + Wout]
    return apply_epilogue(y, bias, None, activation)

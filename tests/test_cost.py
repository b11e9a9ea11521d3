"""cuconv.cost: every layer type against hand-computed values and brute-force counts.

Expected numbers are written as the arithmetic of the textbook's formulas on the test's
own shapes, or counted by a direct NumPy implementation of the definition (§8.1),
never copied from the code under test. Awkward shapes throughout: C=1,3, H=7,9,
stride 2, dilation 2, groups, non-square inputs, padding that does not divide evenly.
"""
from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from cuconv import cost as C
from cuconv.problem import Conv2dProblem


# ---------------------------------------------------------------- brute force
def direct_conv(x, w, stride, pad, dilation, groups, pad_end=None):
    """§8.1 cross-correlation in float64, counting every multiplication (padded taps included,
    as the direct count N·K·P·Q·(C/g)·R·S does). Returns (output, multiplications)."""
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    peh, pew = pad_end or pad
    xp = np.zeros((n, c, h + ph + peh, wd + pw + pew))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    p = (h + ph + peh - dh * (r - 1) - 1) // sh + 1
    q = (wd + pw + pew - dw * (s - 1) - 1) // sw + 1
    out = np.full((n, k, p, q), np.nan)
    kg = k // groups
    mults = 0
    for ko in range(k):
        g = ko // kg
        for i in range(p):
            for j in range(q):
                patch = xp[:, g * cg:(g + 1) * cg,
                           i * sh: i * sh + dh * (r - 1) + 1: dh,
                           j * sw: j * sw + dw * (s - 1) + 1: dw]
                out[:, ko, i, j] = np.einsum("ncrs,crs->n", patch, w[ko])
                mults += n * patch[0].size
    return out, mults


def transposed_conv(y, w, stride, pad, output_padding, dilation, groups):
    """Scatter form of torch's conv_transpose2d in float64; returns (output, multiplications)."""
    n, cin, h, wd = y.shape
    _, coutg, r, s = w.shape
    (sh, sw), (ph, pw), (oh, ow), (dh, dw) = stride, pad, output_padding, dilation
    ho = (h - 1) * sh - 2 * ph + dh * (r - 1) + oh + 1
    wo = (wd - 1) * sw - 2 * pw + dw * (s - 1) + ow + 1
    full = np.zeros((n, coutg * groups, ho + 2 * ph + dh * (r - 1) + 1, wo + 2 * pw + dw * (s - 1) + 1))
    cing = cin // groups
    mults = 0
    for ci in range(cin):
        g = ci // cing
        for i, j, a, b in itertools.product(range(h), range(wd), range(r), range(s)):
            full[:, g * coutg:(g + 1) * coutg, i * sh + a * dh, j * sw + b * dw] += \
                y[:, ci, i, j][:, None] * w[ci, :, a, b][None, :]
            mults += n * coutg
    return full[:, :, ph:ph + ho, pw:pw + wo], mults


# ---------------------------------------------------------------- §9.1 worked example
def test_worked_example_9_1():
    c = C.Conv2d(64, 128, 3, padding=1).cost((32, 64, 56, 56))
    assert c.output_shape == (32, 128, 56, 56)
    assert c.params == 128 * 64 * 3 * 3 + 128 == 73_856
    assert round(c.param_bytes / 1e3) == 295                     # "295 KB"
    assert c.flops == 2 * 32 * 128 * 56 * 56 * 64 * 9 == 14_797_504_512
    assert round(c.flops / 1e9, 1) == 14.8                        # "14.8 GFLOPs"
    assert c.output_bytes == 32 * 128 * 56 * 56 * 4 and round(c.output_bytes / 1e6, 1) == 51.4
    assert c.input_cache_bytes == 32 * 64 * 56 * 56 * 4 and round(c.input_cache_bytes / 1e6, 1) == 25.7
    assert round(c.flops / c.params, -3) == 200_000               # "200,000 FLOPs per parameter"
    # §9.8: weight and data gradients each equal the forward; the bias gradient adds B·Co·Ho·Wo.
    assert c.backward_data_flops == c.flops
    assert c.backward_weight_flops == c.flops + 32 * 128 * 56 * 56
    assert c.kind == "conv2d" and c.problem.gemm_mnk() == (32 * 56 * 56, 128, 64 * 9)
    assert c.im2col_bytes == 4 * 32 * 64 * 9 * 56 * 56          # § Memory formulas


def test_fc_vs_conv_parameter_example_8_2():
    fc = C.Linear(224 * 224 * 3, 64).cost((1, 224 * 224 * 3))
    c3 = C.Conv2d(3, 64, 3).cost((1, 3, 224, 224))
    c7 = C.Conv2d(3, 64, 7).cost((1, 3, 224, 224))
    assert fc.params - 64 == 9_633_792 and c3.params == 1_792 and c7.params == 9_472
    # The book prints 5,375x; the exact ratio is 5,376 (docs/cost_model.md).
    assert (fc.params - 64) / c3.params == 5_376
    assert round((fc.params - 64) / c7.params) == 1_017


# ---------------------------------------------------------------- conv variants vs brute force
CONV_CASES = [  # input shape, Conv2d
    ((2, 3, 9, 7), C.Conv2d(3, 5, 3, stride=2, padding=1)),
    ((1, 1, 9, 9), C.Conv2d(1, 4, 3, dilation=2, padding=1)),
    ((2, 6, 7, 9), C.Conv2d(6, 4, (3, 2), stride=(2, 1), padding=(1, 0), groups=2)),
    ((1, 3, 7, 10), C.Conv2d(3, 6, 5, stride=3, padding=2, dilation=1, groups=3, bias=False)),  # depthwise x2
    ((2, 4, 9, 7), C.Conv2d(4, 3, 1, stride=2)),
    ((1, 3, 8, 8), C.Conv2d(3, 2, 4, padding="same")),          # even kernel: extra pad at the end
]


@pytest.mark.parametrize("shape,layer", CONV_CASES, ids=lambda v: str(v))
def test_conv_shape_and_macs_match_direct_definition(shape, layer, rng):
    c = layer.cost(shape)
    p = c.problem
    x = rng.standard_normal(shape)
    w = rng.standard_normal(layer.weight_shape())
    out, mults = direct_conv(x, w, (p.stride_h, p.stride_w), (p.pad_h, p.pad_w),
                             (p.dilation_h, p.dilation_w), p.groups, (p.pad_bottom, p.pad_right))
    assert not np.isnan(out).any()
    assert out.shape == c.output_shape
    assert mults == c.macs and c.flops == 2 * mults
    assert c.params == w.size + (layer.out_channels if layer.bias else 0)
    assert c.output_bytes == out.size * 4


def test_conv_hand_values_stride_dilation_groups_uneven_padding():
    # stride 2, padding 1 on 9x7: P = (9+2-3)//2+1 = 5, Q = (7+2-3)//2+1 = 4
    c = C.Conv2d(3, 5, 3, stride=2, padding=1).cost((2, 3, 9, 7))
    assert c.output_shape == (2, 5, 5, 4)
    assert c.macs == 2 * 5 * 5 * 4 * 3 * 9 and c.params == 5 * 3 * 9 + 5
    # dilation 2: effective kernel 5, 9+2-5+1 = 7 rows; params unchanged (§9.2)
    c = C.Conv2d(1, 4, 3, dilation=2, padding=1).cost((1, 1, 9, 9))
    assert c.output_shape == (1, 4, 7, 7) and c.params == 4 * 9 + 4 and c.macs == 4 * 49 * 9
    # groups=2 (§9.6): params and MACs divided by G
    c = C.Conv2d(6, 4, 3, groups=2, bias=False).cost((1, 6, 7, 9))
    assert c.kind == "grouped" and c.params == 4 * 6 * 9 // 2 and c.macs == 4 * 5 * 7 * 6 * 9 // 2
    # padding that does not divide evenly: (7+2-3)//2+1 = 4 (the last row of padding is never read)
    c = C.Conv2d(1, 1, 3, stride=2, padding=1).cost((1, 1, 7, 7))
    assert c.output_shape == (1, 1, 4, 4)
    c = C.Conv2d(1, 1, 3, stride=2, padding=1).cost((1, 1, 8, 7))
    assert c.output_shape == (1, 1, 4, 4)


def test_depthwise_pointwise_and_separable_9_5():
    x = (1, 128, 56, 56)
    std = C.Conv2d(128, 128, 3, padding=1, bias=False).cost(x)
    sep = C.DepthwiseSeparable(128, 128, 3, padding=1).cost(x)
    assert std.params == 128 * 128 * 9 == 147_456
    assert sep.params == 128 * 9 + 128 * 128 == 17_536
    assert std.flops == 2 * 128 * 3136 * 128 * 9 and round(std.flops / 1e6) == 925  # the book's "924M" truncates
    assert sep.flops == 2 * 3136 * 128 * (9 + 128) and round(sep.flops / 1e6) == 110
    assert round(std.params / sep.params, 1) == 8.4 and round(std.flops / sep.flops, 1) == 8.4
    # reduction ratio 1/Co + 1/k² exactly, for params and FLOPs
    assert Fraction(sep.params, std.params) == Fraction(1, 128) + Fraction(1, 9)
    assert Fraction(sep.flops, std.flops) == Fraction(1, 128) + Fraction(1, 9)
    assert round(1 / (1 / 256 + 1 / 9), 1) == 8.7
    dw, pw = (p.problem for p in sep.parts)
    assert C.conv_kind(dw) == "depthwise" and C.conv_kind(pw) == "pointwise"
    assert sep.kind == "depthwise_separable" and sep.output_shape == (1, 128, 56, 56)
    assert sep.activation_bytes == 2 * 128 * 56 * 56 * 4            # both outputs are kept
    # summary table: depthwise with bias C_i·k² + C_i; pointwise C_o·C_i + C_o
    assert C.depthwise(32, 3, padding=1).cost((1, 32, 9, 7)).params == 32 * 9 + 32
    assert C.pointwise(32, 16).cost((1, 32, 9, 7)).params == 16 * 32 + 16
    # a stride-1 1x1 conv needs no im2col copy; a strided one does
    assert C.pointwise(32, 16).cost((1, 32, 9, 7)).im2col_bytes == 0
    assert C.Conv2d(32, 16, 1, stride=2).cost((1, 32, 9, 7)).im2col_bytes == 32 * 5 * 4 * 4


def test_pointwise_bottleneck_9_4_and_11_5():
    x = (1, 256, 56, 56)
    full = C.Conv2d(256, 256, 3, padding=1, bias=False).cost(x)
    r1 = C.Conv2d(256, 64, 1, bias=False).cost(x)
    r2 = C.Conv2d(64, 64, 3, padding=1, bias=False).cost(r1.output_shape)
    r3 = C.Conv2d(64, 256, 1, bias=False).cost(r2.output_shape)
    assert round(r1.flops / 1e6, 1) == 102.8 and round(r2.flops / 1e6, 1) == 231.2
    assert round(r3.flops / 1e6, 1) == 102.8
    # The book prints 2.93G and a 6.7x reduction; exactly it is 3.70G and 8.47x.
    assert full.flops == 2 * 256 * 56 * 56 * 256 * 9 == 3_699_376_128
    assert round(full.flops / (r1.flops + r2.flops + r3.flops), 2) == 8.47
    # §11.5 with bias: params 16,448 / 36,928 / 16,640 = 70,016; plain pair 1,180,160
    b = [C.Conv2d(256, 64, 1), C.Conv2d(64, 64, 3, padding=1), C.Conv2d(64, 256, 1)]
    costs, s = [], x
    for layer in b:
        costs.append(layer.cost(s))
        s = costs[-1].output_shape
    assert [c.params for c in costs] == [16_448, 36_928, 16_640] and sum(c.params for c in costs) == 70_016
    add = C.Add().cost(x)
    assert add.flops == 256 * 56 * 56 and round(add.flops / 1e6, 1) == 0.8 and add.params == 0
    plain = 2 * C.Conv2d(256, 256, 3, padding=1).cost(x).params
    assert plain == 1_180_160 and round(2 * full.flops / 1e9, 1) == 7.4


def test_transposed_conv_matches_scatter_and_is_the_conv_adjoint(rng):
    layer = C.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    shape = (2, 4, 5, 3)
    c = layer.cost(shape)
    # §9.7: (H-1)·s - 2p + k + p_out
    assert c.output_shape == (2, 6, (5 - 1) * 2 - 2 + 3 + 1, (3 - 1) * 2 - 2 + 3 + 1) == (2, 6, 10, 6)
    assert c.params == 4 * (6 // 2) * 9 + 6
    y = rng.standard_normal(shape)
    w = rng.standard_normal((4, 3, 3, 3))
    out, mults = transposed_conv(y, w, (2, 2), (1, 1), (1, 1), (1, 1), 2)
    assert out.shape == c.output_shape and mults == c.macs == 2 * 4 * 5 * 3 * 3 * 9
    # Its problem is the convolution whose data gradient it is: <conv(x), y> == <x, convT(y)>.
    p = c.problem
    assert (p.N, p.C, p.H, p.W, p.K, p.P, p.Q) == (2, 6, 10, 6, 4, 5, 3)
    x = rng.standard_normal(p.input_shape)
    fwd, _ = direct_conv(x, w, (2, 2), (1, 1), (1, 1), 2)
    assert fwd.shape == y.shape
    assert np.isclose(np.vdot(fwd, y), np.vdot(x, out), rtol=1e-12)
    # The book's zero-insertion reading multiplies ~s² more (mostly by zeros).
    z = layer.zero_insertion_problem(shape)
    assert z.output_shape == c.output_shape and z.macs() == 2 * 6 * 10 * 6 * (4 // 2) * 9
    # dilation 2, no padding
    c2 = C.ConvTranspose2d(3, 2, 3, stride=2, dilation=2, bias=False).cost((1, 3, 4, 4))
    assert c2.output_shape == (1, 2, 3 * 2 + 2 * 2 + 1, 11)
    out2, mults2 = transposed_conv(rng.standard_normal((1, 3, 4, 4)), rng.standard_normal((3, 2, 3, 3)),
                                   (2, 2), (0, 0), (0, 0), (2, 2), 1)
    assert out2.shape == c2.output_shape and mults2 == c2.macs


# ---------------------------------------------------------------- linear, pools, element-wise
def test_linear():
    c = C.Linear(400, 120).cost((3, 400))
    assert c.params == 400 * 120 + 120 and c.macs == 3 * 400 * 120 and c.flops == 2 * c.macs
    assert c.backward_weight_flops == 2 * c.macs + 3 * 120 and c.output_shape == (3, 120)
    assert C.Linear(7, 2, bias=False).cost((1, 7)).params == 14


def test_max_pool_sizes_flops_and_indices():
    c = C.MaxPool2d(2).cost((2, 3, 9, 7))           # floor mode drops the odd row/column
    assert c.output_shape == (2, 3, 4, 3)
    assert c.flops == 3 * 2 * 3 * 4 * 3 and c.index_bytes == 4 * 2 * 3 * 4 * 3 and c.params == 0
    assert c.backward_data_flops == 2 * 3 * 4 * 3
    # ceil mode keeps a partial window (GoogLeNet's 112 -> 56), but never one starting in the padding
    assert C.MaxPool2d(3, 2, ceil_mode=True).cost((1, 1, 112, 112)).output_shape[2:] == (56, 56)
    assert C.MaxPool2d(3, 2, ceil_mode=True).cost((1, 1, 8, 9)).output_shape[2:] == (4, 4)
    assert C.MaxPool2d(3, 2).cost((1, 1, 8, 9)).output_shape[2:] == (3, 4)
    assert C.MaxPool2d(2, 2, padding=1, ceil_mode=True).cost((1, 1, 5, 5)).output_shape[2:] == (3, 3)
    # ResNet's 3x3/2 pad 1: 112 -> 56; dilation 2 widens the window to 5
    assert C.MaxPool2d(3, 2, 1).cost((1, 64, 112, 112)).output_shape == (1, 64, 56, 56)
    assert C.MaxPool2d(3, 1, dilation=2).cost((1, 1, 9, 7)).output_shape[2:] == (5, 3)
    # 2x2/2: 3 comparisons per output (§9.3)
    assert C.MaxPool2d(2, 2).cost((1, 1, 8, 8)).flops == 3 * 16


def test_avg_and_global_pools():
    c = C.AvgPool2d(3, 2).cost((1, 2, 9, 7))
    assert c.output_shape == (1, 2, 4, 3) and c.flops == 9 * 2 * 4 * 3 and c.index_bytes == 0
    g = C.GlobalAvgPool2d().cost((2, 5, 7, 9))
    assert g.kind == "global_avgpool" and g.output_shape == (2, 5, 1, 1) and g.flops == 2 * 5 * 7 * 9
    # adaptive 7 -> 3 windows [0,3) [2,5) [4,7): 3 elements each; 9 -> 6 windows of 2
    assert C.adaptive_windows(7, 3) == [(0, 3), (2, 5), (4, 7)]
    a = C.AdaptiveAvgPool2d((3, 6)).cost((1, 1, 7, 9))
    assert a.output_shape == (1, 1, 3, 6) and a.flops == (3 + 3 + 3) * sum(e - s for s, e in C.adaptive_windows(9, 6))
    assert C.AdaptiveAvgPool2d(6).cost((1, 4, 6, 6)).flops == 4 * 36        # identity windows


def test_batchnorm_add_activation_scale_concat():
    x = (2, 3, 7, 9)
    el = 2 * 3 * 7 * 9
    bn = C.BatchNorm2d(3).cost(x)
    assert bn.params == 6 and bn.flops == 5 * el and bn.backward_weight_flops == 3 * el
    assert C.Add().cost([x, x]).flops == el and C.Add().cost(x).backward_flops == 0
    assert C.Activation("relu").cost(x).flops == el and C.Activation("silu").cost(x).flops == 2 * el
    s = C.ChannelScale().cost([x, (2, 3, 1, 1)])
    assert s.flops == el and s.output_shape == x
    cat = C.Concat().cost([(2, 3, 7, 9), (2, 5, 7, 9)])
    assert cat.output_shape == (2, 8, 7, 9) and cat.flops == 0 and cat.output_bytes == 2 * 8 * 63 * 4
    f = C.Flatten().cost(x)
    assert f.output_shape == (2, 3 * 7 * 9) and f.activation_bytes == 0
    assert C.Dropout().cost((2, 10)).flops == 0


def test_dtype_changes_bytes_not_counts():
    x = (1, 3, 9, 7)
    f32 = C.Conv2d(3, 4, 3).cost(x, "float32")
    f16 = C.Conv2d(3, 4, 3).cost(x, "fp16")
    assert f16.dtype == "float16" and f16.macs == f32.macs and 2 * f16.output_bytes == f32.output_bytes
    assert C.MaxPool2d(2).cost(x, "bf16").index_bytes == C.MaxPool2d(2).cost(x).index_bytes


def test_training_memory_is_16p_at_fp32_plus_activations():
    c = C.Conv2d(64, 128, 3, padding=1).cost((32, 64, 56, 56))
    m = c.training_memory()
    assert m.param_bytes == 4 * 73_856 and m.grad_bytes == 4 * 73_856 and m.optimizer_bytes == 8 * 73_856
    assert m.total == 16 * 73_856 + c.output_bytes
    h = C.training_memory(1000, 0, 0, "float16")
    assert (h.param_bytes, h.grad_bytes, h.optimizer_bytes) == (2000, 2000, 4000)
    t = C.total_cost([c, C.MaxPool2d(2).cost(c.output_shape)])
    assert t.params == 73_856 and t.index_bytes == 4 * 32 * 128 * 28 * 28
    assert t.memory.total == 16 * 73_856 + c.output_bytes + 4 * 32 * 128 * 28 * 28 * 2


# ---------------------------------------------------------------- Winograd
def _winograd_2d(d, g, m):
    mats = {k: np.array(v, dtype=np.float64) for k, v in C.WINOGRAD_MATRICES[m].items()}
    bt, gm, at = mats["BT"], mats["G"], mats["AT"]
    return at @ ((gm @ g @ gm.T) * (bt @ d @ bt.T)) @ at.T


@pytest.mark.parametrize("m", [2, 4])
def test_winograd_matrices_compute_the_correlation(m, rng):
    alpha = m + 2
    d = rng.standard_normal((alpha, alpha))
    g = rng.standard_normal((3, 3))
    direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(m)] for i in range(m)])
    got = _winograd_2d(d, g, m)
    assert np.max(np.abs(got - direct)) / np.max(np.abs(direct)) < 1e-12


def test_winograd_counts():
    p = Conv2dProblem(2, 3, 7, 9, 5, 3, 3, pad_h=1, pad_w=1)       # P, Q = 7, 9
    assert C.winograd_tiles(p, 2) == 2 * 4 * 5 and C.winograd_tiles(p, "winograd_f4x4_3x3") == 2 * 2 * 3
    assert C.winograd_multiplications(p, 2) == 16 * 5 * 3 * 40
    assert C.winograd_multiplications(p, 4) == 36 * 5 * 3 * 12
    w2, w4 = C.winograd_cost(p, 2), C.winograd_cost(p, 4)
    assert (w2.multiplications_per_tile, w2.direct_multiplications_per_tile) == (16, 36)
    assert (w4.multiplications_per_tile, w4.direct_multiplications_per_tile) == (36, 144)
    assert w2.direct_multiplications == p.macs() == 2 * 5 * 7 * 9 * 3 * 9
    # V (α²·C·T) + M (α²·K·T) floats; U (α²·K·C) separately
    assert C.winograd_workspace_bytes(p, "winograd_f2x2_3x3") == 4 * 16 * (3 + 5) * 40
    assert C.winograd_workspace_bytes(p, "winograd_f4x4_3x3") == 4 * 36 * (3 + 5) * 12
    assert C.winograd_filter_bytes(p, 2) == 4 * 16 * 5 * 3
    # naive transform counts: F(2x2,3x3) input 32 adds, output 24 adds per tile and channel
    assert C.winograd_transform_flops(2) == (32, 70, 24)
    assert w2.input_transform_flops == 40 * 3 * 32 and w2.output_transform_flops == 40 * 5 * 24
    assert w2.filter_transform_flops == 5 * 3 * 70
    # whole-layer reduction reaches 2.25x only when m divides P and Q
    q = Conv2dProblem(1, 8, 8, 8, 8, 3, 3, pad_h=1, pad_w=1)
    assert C.winograd_cost(q, 2).reduction == 2.25 and C.winograd_cost(q, 4).reduction == 4.0
    assert w2.reduction < 2.25
    c = C.Conv2d(3, 5, 3, padding=1).cost((2, 3, 7, 9))
    assert [w.name for w in c.winograd] == ["winograd_f2x2_3x3", "winograd_f4x4_3x3"]
    assert C.Conv2d(3, 5, 3, stride=2).cost((2, 3, 7, 9)).winograd == ()


@pytest.mark.parametrize("problem,rule", [
    (Conv2dProblem(1, 3, 9, 9, 4, 3, 3, stride_h=2, stride_w=2), "stride 1"),
    (Conv2dProblem(1, 3, 9, 9, 4, 5, 5), "3x3 kernel"),
    (Conv2dProblem(1, 4, 9, 9, 4, 3, 3, groups=2), "groups 1"),
    (Conv2dProblem(1, 3, 9, 9, 4, 3, 3, dilation_h=2, dilation_w=2), "dilation 1"),
])
def test_winograd_rejects_what_it_cannot_run(problem, rule):
    with pytest.raises(ValueError, match=rule):
        C.winograd_workspace_bytes(problem, "winograd_f2x2_3x3")
    with pytest.raises(ValueError, match="unknown Winograd"):
        C.winograd_workspace_bytes(Conv2dProblem(1, 3, 9, 9, 4, 3, 3), "winograd_f6x6_3x3")


def test_im2col_overhead_is_about_k_squared():
    assert C.im2col_overhead(Conv2dProblem(1, 3, 9, 7, 4, 3, 3, pad_h=1, pad_w=1)) == 9.0
    assert C.im2col_overhead(Conv2dProblem(1, 3, 56, 56, 4, 7, 7, pad_h=3, pad_w=3)) == 49.0
    # stride 2: 9·(5·4)/(9·7)
    assert C.im2col_overhead(Conv2dProblem(1, 3, 9, 7, 4, 3, 3, 2, 2, 1, 1)) == 9 * 5 * 4 / (9 * 7)


# ---------------------------------------------------------------- receptive field (§10)
def test_receptive_field_growth_10_1():
    assert [r.rf for r in C.receptive_field([(3, 1)] * 5)] == [3, 5, 7, 9, 11]      # 2L + 1
    assert [r.rf for r in C.receptive_field([(5, 1)] * 3)] == [1 + L * 4 for L in (1, 2, 3)]
    # jumps multiply: conv 3/1, pool 2/2, conv 3/1 -> RF 3, 4, 8
    rfs = C.receptive_field([(3, 1), (2, 2), (3, 1)])
    assert [(r.rf, r.jump) for r in rfs] == [(3, 1), (4, 2), (8, 2)]
    assert C.receptive_field([(3, 1, 2)])[0].rf == 5                                # k_eff = 5
    layers = [C.Conv2d(3, 8, 7, 2, 3), C.MaxPool2d(3, 2, 1), C.Conv2d(8, 8, 3, padding=1)]
    assert [(r.rf, r.jump) for r in C.receptive_field(layers)] == [(7, 2), (11, 4), (19, 4)]
    t = C.receptive_field([(3, 2), C.ConvTranspose2d(1, 1, 4, stride=2)])
    assert t[-1].jump == 1 and t[-1].rf == 3 + (2 - 1) * 2


def test_small_vs_large_kernels_10_3():
    c = 64
    rows = C.kernel_stack_comparison(channels=c)
    got = [(r.config, r.rf, r.params, r.flops_per_position, r.nonlinearities) for r in rows]
    assert got == [("1 x (5x5)", 5, 25 * c * c, 50 * c * c, 1), ("2 x (3x3)", 5, 18 * c * c, 36 * c * c, 2),
                   ("1 x (7x7)", 7, 49 * c * c, 98 * c * c, 1), ("3 x (3x3)", 7, 27 * c * c, 54 * c * c, 3),
                   ("1 x (11x11)", 11, 121 * c * c, 242 * c * c, 1), ("5 x (3x3)", 11, 45 * c * c, 90 * c * c, 5)]
    assert rows[1].macs == 2 * 9 * c * c * 56 * 56 and rows[0].macs == 25 * c * c * 56 * 56
    assert round(1 - 27 / 49, 2) == 0.45                    # "45% fewer parameters"
    assert C.stack_cost(1, 3, 3, 9, 7, bias=True).params == 3 * 3 * 9 + 3


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("call,exc,match", [
    (lambda: C.Conv2d(3, 4, 3).cost((1, 4, 9, 9)), ValueError, "4 channels; expected 3"),
    (lambda: C.Conv2d(6, 4, 3, groups=4).cost((1, 6, 9, 9)), ValueError, "groups=4"),
    (lambda: C.Conv2d(3, 4, 11).cost((1, 3, 9, 9)), ValueError, "larger than"),
    (lambda: C.Conv2d(3, 4, 3).cost((1, 3, 9)), ValueError, "4-D"),
    (lambda: C.Conv2d(3, 4, 3).cost((1, 3, 0, 9)), ValueError, "positive"),
    (lambda: C.Conv2d(3, 4, 3).cost((1, 3, 9.0, 9)), TypeError, "tuple of ints"),
    (lambda: C.Linear(10, 2).cost((1, 11)), ValueError, "11 features"),
    (lambda: C.Linear(10, 2).cost((1, 10, 1, 1)), ValueError, "Flatten"),
    (lambda: C.Add().cost([(1, 2, 3, 3), (1, 2, 3, 4)]), ValueError, "same shape"),
    (lambda: C.Concat().cost([(1, 2, 3, 3), (1, 2, 3, 4)]), ValueError, "match except"),
    (lambda: C.MaxPool2d(2, padding=2).cost((1, 1, 9, 9)), ValueError, "at most half"),
    (lambda: C.MaxPool2d(5).cost((1, 1, 3, 9)), ValueError, "<= 0"),
    (lambda: C.ConvTranspose2d(2, 2, 3, stride=2, output_padding=2).cost((1, 2, 4, 4)), ValueError, "smaller than either stride or dilation"),
    (lambda: C.BatchNorm2d(4).cost((1, 3, 2, 2)), ValueError, "3 channels"),
    (lambda: C.Activation("swish"), ValueError, "unknown activation"),
    (lambda: C.ChannelScale().cost([(1, 3, 4, 4), (1, 4, 1, 1)]), ValueError, "scale"),
    (lambda: C.Conv2d(3, 4, 3).cost((1, 3, 9, 9), "float8"), ValueError, "dtype"),
])
def test_bad_input_raises_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------- §9.8 (c): dX counted four ways
def _dgrad_pairs_by_enumeration(p):
    """(textbook, phases, exact) (position, tap) pairs of dx, per image and channel pair,
    enumerated in 2-D: every (h, w, r, s); those whose offsets are multiples of the stride;
    and those that also land on an element of dy."""
    book = phases = exact = 0
    for h, w, r, s in itertools.product(range(p.H), range(p.W), range(p.R), range(p.S)):
        book += 1
        th, tw = h + p.pad_h - r * p.dilation_h, w + p.pad_w - s * p.dilation_w
        if th % p.stride_h or tw % p.stride_w:
            continue
        phases += 1
        exact += 0 <= th // p.stride_h < p.P and 0 <= tw // p.stride_w < p.Q
    return book, phases, exact


@pytest.mark.parametrize("p", [
    Conv2dProblem(1, 64, 9, 9, 64, 3, 3, 2, 2, 1, 1),                 # 3x3/2 on an odd size
    Conv2dProblem(2, 6, 10, 7, 4, 3, 5, 2, 3, 1, 2, 2, 1, groups=2),  # unequal strides, dilation, groups
    Conv2dProblem(1, 3, 13, 11, 8, 7, 7, 2, 2, 3, 3),                 # the 7x7/2 stem shape
    Conv2dProblem(1, 4, 8, 8, 4, 1, 1, 3, 3),                         # a phase no tap reaches
    Conv2dProblem(1, 4, 7, 7, 5, 3, 3, 1, 1, 1, 1),                   # stride 1: textbook == phases
])
def test_backward_data_flops_counts(p):
    per_pair = 2 * p.N * p.C * p.K_per_group
    book, phases, exact = _dgrad_pairs_by_enumeration(p)
    assert C.backward_data_flops(p, "textbook") == per_pair * book == 2 * p.N * p.C * p.H * p.W * p.K_per_group * p.R * p.S
    assert C.backward_data_flops(p, "phases") == per_pair * phases
    assert C.backward_data_flops(p, "exact") == per_pair * exact
    assert C.backward_data_flops(p) == C.backward_data_flops(p, "model") == 2 * p.macs() == \
        C.conv2d_cost(p).backward_data_flops
    if p.stride_h == p.stride_w == 1:
        assert C.backward_data_flops(p, "textbook") == C.backward_data_flops(p, "phases")
    else:
        assert C.backward_data_flops(p, "textbook") > 3 * C.backward_data_flops(p, "phases")
    with pytest.raises(ValueError, match="textbook"):
        C.backward_data_flops(p, "inserted")


def test_backward_data_flops_stride2_3x3_by_hand():
    # 3x3/2, padding 1, 9 rows: even rows get tap 1 (5 rows), odd rows taps 0 and 2 (4 rows x 2)
    # = 13 pairs per axis against the textbook's 9 x 3 = 27; 2·MACs counts P·R = 5 x 3 = 15.
    p = Conv2dProblem(1, 64, 9, 9, 64, 3, 3, 2, 2, 1, 1)
    assert C.backward_data_flops(p, "phases") == 2 * 64 * 64 * 13 * 13 == 1_384_448
    assert C.backward_data_flops(p, "textbook") == 2 * 64 * 64 * 27 * 27 == 5_971_968
    assert C.backward_data_flops(p) == 2 * 64 * 64 * 15 * 15 == 1_843_200
    # ResNet-50's layer2.0.conv2 (56 -> 28): exactly s² = 4 (docs/cost_model.md)
    q = Conv2dProblem(1, 128, 56, 56, 128, 3, 3, 2, 2, 1, 1)
    assert (C.backward_data_flops(q, "textbook"), C.backward_data_flops(q, "phases")) == (924_844_032, 231_211_008)

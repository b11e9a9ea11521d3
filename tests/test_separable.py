"""The depthwise-separable block (cuconv.ops.separable): the fused kernel and the unfused
depthwise + pointwise path against the float64 composition of two conv2d references."""
from __future__ import annotations

import numpy as np
import pytest

import cuconv
from conftest import put
from cuconv.ops import separable as sep
from cuconv.problem import Conv2dProblem
from cuconv.reference import conv2d_ref
from cuconv.testing import assert_close, poison, random_array

# (x shape, M, (R, S), K, stride, padding, dilation)
CASES = {
    "mobilenet_like_C3_K5": ((2, 3, 7, 9), 1, (3, 3), 5, 1, 1, 1),
    "stride2_M2_K70_two_k_tiles": ((1, 3, 9, 7), 2, (3, 3), 70, 2, 1, 1),
    "C40_two_channel_chunks": ((1, 40, 5, 6), 1, (3, 3), 3, 1, 1, 1),
    "k5_dil2_pix_tiles": ((1, 2, 11, 13), 1, (5, 5), 4, 1, 4, 2),
    "C1_M3_k3x5": ((2, 1, 6, 5), 3, (3, 5), 2, (1, 2), (1, 2), 1),
}


def _draw(rng, xs, M, RS, K, out_shape, epilogue):
    C = xs[1]
    x = random_array(rng, xs)
    wd = random_array(rng, (M * C, 1, *RS))
    wp = random_array(rng, (K, M * C, 1, 1))
    bd = random_array(rng, (M * C,)) if epilogue else None
    bp = random_array(rng, (K,)) if epilogue else None
    res = random_array(rng, out_shape) if epilogue else None
    return x, wd, wp, bd, bp, res


def _reference(x, wd, wp, bd, bp, res, stride, padding, dilation, act_d, act):
    mid = conv2d_ref(x, wd, bd, stride, padding, dilation, x.shape[1], activation=act_d)
    return conv2d_ref(mid, wp, bp, activation=act, residual=res)


def _out_shape(xs, M, RS, K, stride, padding, dilation):
    p = Conv2dProblem.from_shapes(xs, (M * xs[1], 1, *RS), stride, padding, dilation, xs[1])
    return (xs[0], K, p.P, p.Q)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_separable_matches_reference(be, rng, case, fused):
    xs, M, RS, K, stride, padding, dilation = CASES[case]
    out_shape = _out_shape(xs, M, RS, K, stride, padding, dilation)
    epilogue = case != "C40_two_channel_chunks"
    x, wd, wp, bd, bp, res = _draw(rng, xs, M, RS, K, out_shape, epilogue)
    act_d, act = ("relu6", "silu") if epilogue else (None, None)
    ref = _reference(x, wd, wp, bd, bp, res, stride, padding, dilation, act_d, act)
    out = put(be, np.empty(out_shape, np.float32))
    poison(out)
    y = cuconv.separable_conv2d(put(be, x), put(be, wd), put(be, wp), put(be, bd), put(be, bp),
                                stride, padding, dilation, activation_depthwise=act_d,
                                activation=act, residual=put(be, res), fused=fused, out=out)
    assert y is out
    assert_close(y, ref, "float32", "separable", what=f"{case} fused={fused}")


def test_allocating_default_path_is_fused(be, rng):
    xs, M, RS, K = (1, 3, 7, 7), 1, (3, 3), 4
    out_shape = _out_shape(xs, M, RS, K, 1, 1, 1)
    x, wd, wp, *_ = _draw(rng, xs, M, RS, K, out_shape, False)
    dw = Conv2dProblem.from_shapes(xs, wd.shape, 1, 1, 1, 3)
    assert sep.fused_reason(dw, K) is None
    y = cuconv.separable_conv2d(put(be, x), put(be, wd), put(be, wp), padding=1)
    assert y.shape == out_shape
    assert_close(y, _reference(x, wd, wp, None, None, None, 1, 1, 1, None, None), "float32", "separable")


@pytest.mark.parametrize("mode", [dict(sanitize="address,undefined", order="reverse"),
                                  dict(order="random", seed=5)], ids=["asan_ubsan_reverse", "random_order"])
def test_fused_kernel_under_emulator_sanitizers_and_orders(rng, mode):
    xs, M, RS, K, stride, padding, dilation = CASES["stride2_M2_K70_two_k_tiles"]
    out_shape = _out_shape(xs, M, RS, K, stride, padding, dilation)
    x, wd, wp, bd, bp, res = _draw(rng, xs, M, RS, K, out_shape, True)
    ref = _reference(x, wd, wp, bd, bp, res, stride, padding, dilation, "relu", None)
    with cuconv.backend("emulator", **mode):
        out = np.empty(out_shape, np.float32)
        poison(out)
        cuconv.separable_conv2d(x, wd, wp, bd, bp, stride, padding, activation_depthwise="relu",
                                residual=res, fused=True, out=out)
    assert_close(out, ref, "float32", "separable", what=str(mode))


def test_bad_arguments_raise_before_any_launch(rng):
    x = random_array(rng, (1, 3, 7, 7))
    wd = random_array(rng, (3, 1, 3, 3))
    wp = random_array(rng, (4, 3, 1, 1))
    with cuconv.backend("emulator"):
        with pytest.raises(ValueError, match=r"w_depthwise must have shape \(M·C, 1, R, S\).*\(4, 1, 3, 3\)"):
            cuconv.separable_conv2d(x, random_array(rng, (4, 1, 3, 3)), wp)
        with pytest.raises(ValueError, match=r"w_pointwise must have shape \(K, 3, 1, 1\).*\(4, 6, 1, 1\)"):
            cuconv.separable_conv2d(x, wd, random_array(rng, (4, 6, 1, 1)))
        with pytest.raises(ValueError, match=r"w_pointwise must have shape"):
            cuconv.separable_conv2d(x, wd, random_array(rng, (4, 3, 3, 3)))
        with pytest.raises(ValueError, match="bias_pointwise must have shape"):
            cuconv.separable_conv2d(x, wd, wp, bias_pointwise=random_array(rng, (3,)))
        with pytest.raises(ValueError, match="bias_depthwise must have shape"):
            cuconv.separable_conv2d(x, wd, wp, bias_depthwise=random_array(rng, (4,)))
        with pytest.raises(ValueError, match="residual must have shape"):
            cuconv.separable_conv2d(x, wd, wp, padding=1, residual=random_array(rng, (1, 4, 5, 5)))
        with pytest.raises(ValueError, match="output size"):
            cuconv.separable_conv2d(x, random_array(rng, (3, 1, 9, 9)), wp)
        with pytest.raises(TypeError, match="fused"):
            cuconv.separable_conv2d(x, wd, wp, fused="yes")
        with pytest.raises(ValueError, match="activation"):
            cuconv.separable_conv2d(x, wd, wp, activation="gelu")
        with pytest.raises(TypeError, match="float32"):
            cuconv.separable_conv2d(x.astype(np.float64), wd, wp)


@pytest.mark.parametrize("fused", [None, False])
def test_unbatched_input_as_pytorch_takes_it(be, rng, fused):
    """Issue 22's reproducer: x (2, 5, 5), w_depthwise (2, 1, 3, 3), w_pointwise (4, 2, 1, 1) — the
    (C, H, W) call is the batched one without its batch axis, and what PyTorch's two convolutions
    give."""
    torch = pytest.importorskip("torch")
    x, wd, wp = random_array(rng, (2, 5, 5)), random_array(rng, (2, 1, 3, 3)), random_array(rng, (4, 2, 1, 1))
    got = be.to_numpy(cuconv.separable_conv2d(put(be, x), put(be, wd), put(be, wp), padding=1, fused=fused))
    assert got.shape == (4, 5, 5)
    batched = be.to_numpy(cuconv.separable_conv2d(put(be, x[None]), put(be, wd), put(be, wp), padding=1, fused=fused))
    np.testing.assert_array_equal(got, batched[0])
    mid = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(wd, dtype=torch.float64),
                                     padding=1, groups=2)
    want = torch.nn.functional.conv2d(mid, torch.tensor(wp, dtype=torch.float64)).numpy()
    assert_close(got, want, "float32", "separable")

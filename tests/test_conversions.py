"""Plans show every conversion (issue 25 item 5): a layout or dtype conversion a plan performs is a
step of its own in ``plan.launches`` whose label contains pack, transpose or copy, and
``Plan.conversions`` lists them; an NHWC call that needs none has none. Planned on the record
backend (no data), the copy step also run on the emulator."""
from __future__ import annotations

import numpy as np
import pytest

import cuconv
from cuconv import grad
from cuconv.backend import backend
from cuconv.dtypes import numpy_dtype
from cuconv.ops.conv2d import Shape, plan_conv2d
from cuconv.plan import CONVERSION_WORDS, CopyStep, Ref, conversion_kernel, is_conversion
from cuconv.registry import KernelEntry, registered_kernels

F16, F32, BF16 = np.dtype(np.float16), np.dtype(np.float32), numpy_dtype("bfloat16")

# Kernels whose labels hold a conversion word but that convert no layout or dtype: the FFT's
# zero-padded operand planes (the algorithm's own transform input, like im2col's columns) and the
# transposed convolution itself.
NOT_CONVERSIONS = ("fft_conv_pack_input", "fft_conv_pack_filter", "conv_transpose2d_")


def _words(label: str) -> bool:
    return any(w in label for w in CONVERSION_WORDS)


def test_every_conversion_kernel_is_marked_and_named():
    """Each registered kernel whose label holds a conversion word is a marked conversion kernel or
    one of the named exceptions; each marked one's label holds a word."""
    labels = [e.label for e in registered_kernels()]
    marked = [lab for lab in labels if is_conversion(_Step(lab))]
    assert marked, "no kernel is marked as a conversion (tc_conv_pack_nhwc_* are)"
    assert {lab for lab in labels if lab.startswith("tc_conv_pack_nhwc_")} <= set(marked)
    for lab in labels:
        if _words(lab) and lab not in marked:
            assert lab.startswith(NOT_CONVERSIONS), f"{lab}: a conversion word but not marked as a conversion"
    for lab in marked:
        assert _words(lab), lab


class _Step:
    """A stand-in launch of the registered kernel ``label``."""

    def __init__(self, label):
        self.entry = next(e for e in registered_kernels() if e.label == label)


def test_conversion_kernel_needs_a_word():
    entry = KernelEntry("tc_conv.cu", "f<float>", "tc_conv_no_word_here", 32)
    with pytest.raises(ValueError, match="must contain one of"):
        conversion_kernel(entry)


def test_copy_step_labels_and_checks():
    assert CopyStep(Ref("a"), Ref("b"), (2, 3, 4, 5), (0, 3, 1, 2), "float32").kernel == "transpose_nhwc_to_nchw_f32"
    assert CopyStep(Ref("a"), Ref("b"), (2, 3, 4, 5), (0, 2, 3, 1), "float16").kernel == "transpose_nchw_to_nhwc_f16"
    assert CopyStep(Ref("a"), Ref("b"), (2, 3), (1, 0), "float64").kernel == "transpose_10_f64"
    assert CopyStep(Ref("a"), Ref("b"), (6,), (0,), "float32").kernel == "copy_f32"
    with pytest.raises(ValueError, match="not a permutation"):
        CopyStep(Ref("a"), Ref("b"), (2, 3), (0, 0), "float32")


def _conv(x_shape, w_shape, dtype, layout, cc=90, **kw):
    with backend("record", cc=cc, sms=132):
        return plan_conv2d(Shape(x_shape, dtype), Shape(w_shape, dtype), layout=layout, **kw)


# (a) NHWC calls that need no conversion: the plan has none.
@pytest.mark.parametrize("x_shape, w_shape, dtype, kw, cc", [
    ((2, 9, 7, 16), (32, 3, 3, 16), F16, dict(padding=1), 90),          # tensor cores, wgmma on sm_90
    ((2, 9, 7, 16), (32, 3, 3, 16), F16, dict(padding=1), 80),          # tensor cores, mma.sync
    ((2, 9, 7, 16), (32, 3, 3, 16), BF16, dict(padding=1), 80),
    ((2, 9, 7, 3), (8, 3, 3, 3), F32, dict(padding=1, stride=2), 90),   # CUDA cores (direct/implicit GEMM)
    ((2, 9, 7, 64), (64, 1, 1, 64), F32, {}, 90),                        # pointwise
    ((2, 9, 7, 3), (32, 3, 3, 3), F16, dict(padding=1), 90),   # odd C/g: tc_conv's one-element copies
    ((2, 9, 7, 3), (32, 3, 3, 3), F16, dict(padding=1), 80),
    ((2, 9, 7, 8), (8, 3, 3, 1), F32, dict(padding=1, groups=8), 90),   # depthwise
    ((2, 9, 7, 8), (8, 3, 3, 1), np.dtype(np.float64), dict(padding=1, groups=8), 90),
])
def test_native_nhwc_plans_have_no_conversion(x_shape, w_shape, dtype, kw, cc):
    plan = _conv(x_shape, w_shape, dtype, "NHWC", cc, **kw)
    assert plan.conversions == (), f"{plan.algo}: {[s.kernel for s in plan.conversions]}"
    assert not any(_words(k) for k in plan.kernels if not k.startswith(NOT_CONVERSIONS)), plan.describe()


# (b) each known converting path shows its step.
@pytest.mark.parametrize("x_shape, w_shape, layout, kw, algo", [
    ((2, 16, 9, 7), (32, 16, 3, 3), "NCHW", dict(padding=1), "auto"),                # NCHW fp16 -> NHWC pack
    ((2, 16, 9, 7), (32, 16, 3, 3), "NCHW", dict(padding=1), "implicit_gemm_wgmma"),
])
def test_tensor_core_packs_are_conversions(x_shape, w_shape, layout, kw, algo):
    plan = _conv(x_shape, w_shape, F16, layout, 90, algo=algo, **kw)
    kinds = [s.kernel for s in plan.conversions]
    assert kinds == ["tc_conv_pack_nhwc_f16"] * 2, plan.describe()
    assert plan.workspace_bytes > 0


def test_tf32_pack_is_a_conversion():
    plan = _conv((2, 16, 9, 7), (32, 16, 3, 3), F32, "NCHW", 90, algo="implicit_gemm_tf32", padding=1)
    assert [s.kernel for s in plan.conversions] == ["tc_conv_pack_nhwc_tf32"] * 2


def test_fp16_depthwise_has_no_pack():
    """A float16 NHWC depthwise layer plans with no conversion step (a depthwise kernel, or the
    tensor-core implicit GEMM's one-element copies: no channel padding to 8)."""
    for cc in (80, 90):
        plan = _conv((2, 9, 7, 8), (8, 3, 3, 1), F16, "NHWC", cc, padding=1, groups=8)
        assert plan.conversions == (), f"{plan.algo}: {[s.kernel for s in plan.conversions]}"


@pytest.mark.parametrize("dtype", [F32, F16, BF16])
def test_nhwc_gradients_are_native(dtype):
    """The NHWC data and weight gradients run NHWC kernels (CUDA cores in float32, tensor cores in
    float16/bfloat16): no transpose, pack or copy step; the record backend records exactly the
    plan's steps."""
    x, w, dy = Shape((2, 9, 7, 8), dtype), Shape((16, 3, 3, 8), dtype), Shape((2, 9, 7, 16), dtype)
    with backend("record", cc=90, sms=132) as be:
        for plan in (grad.plan_conv2d_input(x.shape, w, dy, padding=1, layout="NHWC"),
                     grad.plan_conv2d_weight(x, w.shape, dy, padding=1, layout="NHWC")):
            assert plan.conversions == (), plan.describe()
            assert not any(_words(k) for k in plan.kernels if not k.startswith(NOT_CONVERSIONS)), plan.describe()
            be.clear()
            plan.run(*[np.zeros(s.shape, dtype) for s in ((w, dy) if plan.op == "conv2d_input" else (x, dy))])
            assert be.kernels() == plan.kernels


def test_copy_step_runs_on_the_emulator():
    """An NHWC data gradient through its copies equals the NCHW one on the same numbers (fresh
    random inputs, a poisoned output)."""
    rng = np.random.default_rng(25)
    x_shape, w, dy = (2, 5, 7, 3), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 3, 4, 4))
    with backend("emulator"):
        out = np.full(x_shape, np.nan)
        dx = grad.conv2d_input(x_shape, w, dy, stride=2, padding=1, layout="NHWC", out=out)
        ref = grad.conv2d_input((2, 3, 5, 7), w.transpose(0, 3, 1, 2).copy(), dy.transpose(0, 3, 1, 2).copy(),
                                stride=2, padding=1)
    assert dx is out
    np.testing.assert_array_equal(dx, ref.transpose(0, 2, 3, 1))


def test_bfloat16_copies_are_bit_copies():
    """bfloat16 buffers are held as uint16 (the storage dtype): the copy steps move the bits."""
    rng = np.random.default_rng(7)
    src = rng.standard_normal((2, 3, 4, 5)).astype(BF16)
    dst = np.zeros(src.size, np.uint16)
    env = {"a": src, "b": dst}
    with backend("emulator") as be:
        CopyStep(Ref("a"), Ref("b"), src.shape, (0, 2, 3, 1), "bfloat16").run(be, env)
        back = np.zeros_like(src)
        CopyStep(Ref("b"), Ref("c"), (2, 4, 5, 3), (0, 3, 1, 2), "bfloat16").run(be, {"b": dst, "c": back})
    np.testing.assert_array_equal(dst.view(BF16).reshape(2, 4, 5, 3), src.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(back, src)


def test_conversions_are_computed_at_plan_time():
    plan = _conv((2, 16, 9, 7), (32, 16, 3, 3), F16, "NCHW", 90, padding=1)
    assert "conversions" in vars(plan)          # an attribute, not recomputed per call
    assert plan.described("x").conversions == plan.conversions


def test_public_names():
    assert cuconv.plan.CopyStep is CopyStep


def test_strided_inputs_are_copy_steps():
    """A strided input (an NCHW view of NHWC memory, a slice with steps) is copied densely by a step
    of the plan, named for what it is; the result is the contiguous call's, bit for bit, and the
    record backend records the step; a contiguous call's plan has no such step."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 7, 9, 3)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    view = x.transpose(0, 3, 1, 2)
    with backend("emulator"):
        plan = cuconv.plan_conv2d(view, w, padding=1)
        assert [s.kernel for s in plan.conversions] == ["transpose_nhwc_to_nchw_f32"]
        assert plan.strided == frozenset({"x"})
        np.testing.assert_array_equal(cuconv.conv2d(view, w, padding=1),
                                      cuconv.conv2d(np.ascontiguousarray(view), w, padding=1))
        assert cuconv.plan_conv2d(np.ascontiguousarray(view), w, padding=1).conversions == ()
        steps = view[:, :, ::2]
        assert [s.kernel for s in cuconv.plan_conv2d(steps, w, padding=1).conversions] == ["copy_strided_f32"]
        np.testing.assert_array_equal(cuconv.conv2d(steps, w, padding=1),
                                      cuconv.conv2d(np.ascontiguousarray(steps), w, padding=1))
    with backend("record") as rec:
        plan = cuconv.plan_conv2d(view, w, padding=1)
        cuconv.conv2d(view, w, padding=1)
        assert rec.kernels() == plan.kernels and rec.kernels()[0] == "transpose_nhwc_to_nchw_f32"

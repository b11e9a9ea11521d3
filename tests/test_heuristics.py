"""What ``algo="auto"`` picks for named layers (ops/heuristics.py's rule table): a golden table,
so that a change of policy shows up as a diff here. Every layer at batch 1 and 8 on the default
emulated device (sm_90, 132 SMs: fp16/bf16 layers take Hopper's wgmma there), and the
tensor-core layers on an sm_75, an sm_80 and an sm_120 as well."""
from __future__ import annotations

import pytest

import cuconv
from cuconv.dtypes import tag
from cuconv.ops import conv2d as conv2d_mod
from cuconv.ops import conv_dgrad, conv_wgrad, heuristics
from cuconv.ops._algorithm import DGRAD, WGRAD
from cuconv.ops.conv2d import select, spec_of
from cuconv.problem import Conv2dProblem

# name: (x NCHW, w KCRS, stride, padding, groups, dtype, conv2d options) -> algorithm, or
# {batch: algorithm} where the batch changes the choice (the FFT's filter spectra amortise over it).
GOLDEN = [
    ("ResNet-50 layer1 3x3", (64, 56), (64, 3), 1, 1, 1, "float32", {}, "winograd_f4x4_3x3"),
    ("ResNet-50 layer4 3x3 (7x7 output)", (512, 7), (512, 3), 1, 1, 1, "float32", {}, "winograd_fused_f2x2_3x3"),
    ("ResNet-50 1x1 64->256", (64, 56), (256, 1), 1, 0, 1, "float32", {}, "pointwise"),
    ("ResNet-50 1x1/2 downsample", (256, 56), (512, 1), 2, 0, 1, "float32", {}, "implicit_gemm"),
    ("ResNet-50 stem 7x7/2", (3, 224), (64, 7), 2, 3, 1, "float32", {}, "implicit_gemm"),
    ("ResNet-50 3x3/2", (128, 56), (128, 3), 2, 1, 1, "float32", {}, "implicit_gemm"),
    ("AlexNet 11x11/4", (3, 227), (96, 11), 4, 0, 1, "float32", {}, "implicit_gemm"),
    ("ResNeXt-50 3x3 g32 (4 channels a group)", (128, 56), (128, 3), 1, 1, 32, "float32", {}, "im2col_gemm"),
    ("MobileNetV2 depthwise 3x3", (144, 56), (144, 3), 1, 1, 144, "float32", {}, "depthwise"),
    ("EfficientNet-B0 depthwise 5x5/2", (144, 56), (144, 5), 2, 2, 144, "float32", {}, "depthwise"),
    ("LeNet-5 C1 5x5 (1 channel in, 6 out)", (1, 32), (6, 5), 1, 0, 1, "float32", {}, "im2col_gemm"),
    ("ResNet-50 3x3, allow_tf32", (64, 56), (64, 3), 1, 1, 1, "float32", {"allow_tf32": True},
     "implicit_gemm_tf32"),
    ("MobileNetV2 depthwise, allow_tf32", (144, 56), (144, 3), 1, 1, 144, "float32", {"allow_tf32": True},
     "depthwise"),
    ("ResNet-50 3x3 fp16", (64, 56), (64, 3), 1, 1, 1, "float16", {}, "implicit_gemm_wgmma"),
    ("ResNet-50 3x3 bf16 NHWC", (64, 56), (64, 3), 1, 1, 1, "bfloat16", {"layout": "NHWC"}, "implicit_gemm_wgmma"),
    ("EfficientNet-B0 SE 1x1 4->96 fp16 NHWC (C even, not a multiple of 8: no pack)", (4, 1), (96, 1), 1, 0, 1,
     "float16", {"layout": "NHWC"}, "implicit_gemm_tc"),
    ("ResNeXt-50 3x3 g32 fp16 (4 output channels a group)", (128, 56), (128, 3), 1, 1, 32, "float16", {},
     "implicit_gemm_tc"),
    ("ResNet-50 3x3 fp16 NCHW, no workspace", (64, 56), (64, 3), 1, 1, 1, "float16",
     {"max_workspace_bytes": 0}, "implicit_gemm_tc_simple"),
    # Issue 25 item 1: 16-bit depthwise takes the depthwise kernels (fp32 accumulation, no
    # workspace), where it took the tensor-core implicit GEMM (one useful row a group, an NHWC pack).
    ("MobileNetV2 depthwise fp16", (144, 56), (144, 3), 1, 1, 144, "float16", {}, "depthwise"),
    ("EfficientNet-B7 depthwise 5x5 bf16 NHWC", (192, 56), (192, 5), 1, 2, 192, "bfloat16", {"layout": "NHWC"},
     "depthwise"),
    ("ResNet-50 3x3, no workspace", (64, 56), (64, 3), 1, 1, 1, "float32", {"max_workspace_bytes": 0},
     "implicit_gemm"),
    # §8.4's large kernels at stride 1 (modelled FFT rules; no GPU has measured them yet).
    ("§8.4 5x5 64->64 at 112x112", (64, 112), (64, 5), 1, 2, 1, "float32", {}, "fft_tiling"),
    ("§8.4 7x7 64->64 at 112x112", (64, 112), (64, 7), 1, 3, 1, "float32", {}, "fft_tiling"),
    ("§8.4 5x5 64->64 at 56x56", (64, 56), (64, 5), 1, 2, 1, "float32", {},
     {1: "implicit_gemm", 8: "fft_tiling"}),
    ("§8.4 7x7 64->64 at 56x56", (64, 56), (64, 7), 1, 3, 1, "float32", {}, {1: "fft_tiling", 8: "fft"}),
    ("§8.4 11x11 64->64 at 56x56", (64, 56), (64, 11), 1, 5, 1, "float32", {}, {1: "fft_tiling", 8: "fft"}),
    ("§8.4 11x11 64->64 at 28x28", (64, 28), (64, 11), 1, 5, 1, "float32", {}, {1: "implicit_gemm", 8: "fft"}),
    ("§8.4 7x7 64->64 at 56x56, no workspace", (64, 56), (64, 7), 1, 3, 1, "float32", {"max_workspace_bytes": 0},
     "implicit_gemm"),
    ("§8.4 7x7 64->64 at 56x56 fp16", (64, 56), (64, 7), 1, 3, 1, "float16", {}, "implicit_gemm_wgmma"),
    ("AlexNet conv2 5x5 (stride 1, 27x27: FFT counts 22% of direct, above the 20% bar)", (64, 27), (192, 5),
     1, 2, 1, "float32", {}, "implicit_gemm"),
    ("ConvNeXt depthwise 7x7", (96, 56), (96, 7), 1, 3, 96, "float32", {}, "depthwise"),
    # float64 needs no rule of its own: Winograd and the tensor cores refuse it by dtype, so the
    # table falls through to the CUDA-core algorithms.
    ("ResNet-50 3x3 float64", (64, 56), (64, 3), 1, 1, 1, "float64", {}, "implicit_gemm"),
    ("ResNet-50 1x1 float64", (64, 56), (256, 1), 1, 0, 1, "float64", {}, "pointwise"),
    ("ResNeXt-50 3x3 g32 float64", (128, 56), (128, 3), 1, 1, 32, "float64", {}, "im2col_gemm"),
    ("MobileNetV2 depthwise 3x3 float64", (144, 56), (144, 3), 1, 1, 144, "float64", {}, "depthwise"),
    ("ResNet-50 3x3 float64, allow_tf32", (64, 56), (64, 3), 1, 1, 1, "float64", {"allow_tf32": True},
     "implicit_gemm"),
    # fp32 NHWC: exact paths; tf32 stays opt-in.
    ("ResNet-50 3x3 fp32 NHWC", (64, 56), (64, 3), 1, 1, 1, "float32", {"layout": "NHWC"}, "implicit_gemm"),
    ("ResNet-50 1x1 fp32 NHWC", (64, 56), (256, 1), 1, 0, 1, "float32", {"layout": "NHWC"}, "pointwise"),
    ("ResNet-50 1x1/2 downsample fp32 NHWC", (256, 56), (512, 1), 2, 0, 1, "float32", {"layout": "NHWC"},
     "pointwise"),
    ("ResNet-50 1x1 float64 NHWC", (64, 56), (256, 1), 1, 0, 1, "float64", {"layout": "NHWC"}, "pointwise"),
    ("LeNet-5 C1 fp32 NHWC (6 output channels: no NHWC im2col GEMM)", (1, 32), (6, 5), 1, 0, 1, "float32",
     {"layout": "NHWC"}, "direct"),
    ("MobileNetV2 depthwise 3x3 fp32 NHWC", (144, 56), (144, 3), 1, 1, 144, "float32", {"layout": "NHWC"},
     "depthwise"),
    ("EfficientNet-B0 depthwise 5x5/2 fp32 NHWC", (144, 56), (144, 5), 2, 2, 144, "float32", {"layout": "NHWC"},
     "depthwise"),
    ("ResNeXt-50 3x3 g32 fp32 NHWC (4 channels a group)", (128, 56), (128, 3), 1, 1, 32, "float32",
     {"layout": "NHWC"}, "direct"),
    ("ResNet-50 3x3 fp32 NHWC, allow_tf32", (64, 56), (64, 3), 1, 1, 1, "float32",
     {"layout": "NHWC", "allow_tf32": True}, "implicit_gemm_tf32"),
    ("ResNet-50 3x3 float64 NHWC", (64, 56), (64, 3), 1, 1, 1, "float64", {"layout": "NHWC"}, "implicit_gemm"),
]


def _problem(x, w, stride, padding, groups, dtype, batch):
    (C, H), (K, R) = x, w
    return Conv2dProblem.from_shapes((batch, C, H, H), (K, C // groups, R, R), stride, padding, 1, groups, dtype)


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("name,x,w,stride,padding,groups,dtype,options,want", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_auto_golden_table(name, x, w, stride, padding, groups, dtype, options, want, batch):
    want = want[batch] if isinstance(want, dict) else want
    p = _problem(x, w, stride, padding, groups, dtype, batch)
    with cuconv.backend("record"):
        assert conv2d_mod.choose_algorithm(p, **options) == want
        plan = cuconv.plan_conv2d(*_arrays(p, options.get("layout", "NCHW")), stride=stride, padding=padding,
                                  groups=groups, **options)
    assert plan.algo == want and plan.description.startswith("auto: ")
    # The description names the rule and the workspace cap auto planned within (the record
    # backend's default device: a quarter of its 80 GiB, issue 23).
    cap = ("within the default workspace cap 21474836480 bytes (20 GiB: 1/4 of the device's 80 GiB)"
           if "max_workspace_bytes" not in options else f"within the max_workspace_bytes={options['max_workspace_bytes']}")
    rule = next(r for r in heuristics.RULES if r.algo == want and plan.description == f"auto: {r.reason} [{cap}]")
    assert rule.reason


def _arrays(p, layout):
    from cuconv.ops.conv2d import Shape  # the shape-and-dtype stand-ins plan_conv2d takes
    return Shape.of(p, layout)


@pytest.mark.parametrize("cc,want", [(75, "tc_conv_f16_64x64x32_32x32_s2_v8"), (80, "tc_conv_f16_64x64x32_32x32_s3_v8")])
def test_auto_tensor_core_config_per_device(cc, want):
    """sm_75 has no cp.async: the same fp16 layer runs the 2-stage config there."""
    p = _problem((64, 56), (64, 3), 1, 1, 1, "float16", 1)
    with cuconv.backend("record", cc=cc):
        plan = cuconv.plan_conv2d(*_arrays(p, "NHWC"), padding=1, layout="NHWC")
    assert plan.algo == "implicit_gemm_tc" and plan.kernels == [want]


@pytest.mark.parametrize("cc", [75, 80, 120])
@pytest.mark.parametrize("name", [g[0] for g in GOLDEN if g[-1] == "implicit_gemm_wgmma"])
def test_wgmma_layers_take_mma_sync_on_other_devices(name, cc):
    """The layers that take wgmma on sm_90 take the mma.sync kernels everywhere else (wgmma
    exists only on sm_90a): what auto picked there before wgmma existed."""
    _, x, w, stride, padding, groups, dtype, options, _ = next(g for g in GOLDEN if g[0] == name)
    p = _problem(x, w, stride, padding, groups, dtype, 1)
    with cuconv.backend("record", cc=cc):
        if dtype == "bfloat16" and cc < 80:     # no bf16 mma before Ampere: nothing runs it
            with pytest.raises(ValueError, match="bfloat16 mma needs sm_80"):
                conv2d_mod.choose_algorithm(p, **options)
            return
        assert conv2d_mod.choose_algorithm(p, **options) == "implicit_gemm_tc"


def test_auto_wgmma_config_on_sm90():
    """The ResNet-50 3x3 fp16 layer in NHWC on sm_90: the wgmma kernel in place (no pack), the
    64x64 config (K = 64 fills one 64-wide N tile); with K = 256 at batch 8 the main config, the
    warp-specialized TMA kernel."""
    p = _problem((64, 56), (64, 3), 1, 1, 1, "float16", 1)
    with cuconv.backend("record"):
        plan = cuconv.plan_conv2d(*_arrays(p, "NHWC"), padding=1, layout="NHWC")
        assert plan.algo == "implicit_gemm_wgmma" and plan.kernels == ["wgmma_conv_f16_64x64x64_s3"]
        assert plan.workspace_bytes == 0
        big = _problem((64, 56), (256, 3), 1, 1, 1, "bfloat16", 8)
        plan = cuconv.plan_conv2d(*_arrays(big, "NCHW"), padding=1)
    assert plan.algo == "implicit_gemm_wgmma"
    assert plan.kernels == ["tc_conv_pack_nhwc_bf16", "tc_conv_pack_nhwc_bf16", "wgmma_conv_bf16_128x128x64_tma_s7"]


# The backward passes on the default emulated device (sm_90, 132 SMs): (name, x (C, H), w (K, R),
# stride, padding, dtype, batch) -> (dgrad kernels, deterministic wgrad kernels). The f32 GEMMs
# take the 4-stage cp.async configs (8x8 thread tiles) where the 128-row tile is chosen, the
# GEMM's N dimension exceeds 64 and the 128x128 tiles still give every SM a block.
BACKWARD_GOLDEN = [
    ("ResNet-50 3x3 128->128 28x28", (128, 28), (128, 3), 1, 1, "float32", 32,
     ["conv_dgrad_implicit_gemm_f32_128x128x8_8x8_s4"],
     ["conv_wgrad_implicit_gemm_f32_64x64x8_4x4", "conv_wgrad_splitk_reduce_f32"]),
    ("ResNet-50 3x3 128->128 28x28 batch 8 (too few 128-row tiles)", (128, 28), (128, 3), 1, 1, "float32", 8,
     ["conv_dgrad_implicit_gemm_f32_64x64x8_4x4"],
     ["conv_wgrad_implicit_gemm_f32_64x64x8_4x4", "conv_wgrad_splitk_reduce_f32"]),
    ("ResNet-50 layer1 3x3 (C = 64: the 128x64 tile)", (64, 56), (64, 3), 1, 1, "float32", 8,
     ["conv_dgrad_implicit_gemm_f32_128x64x8_8x4"],
     ["conv_wgrad_implicit_gemm_f32_64x64x8_4x4", "conv_wgrad_splitk_reduce_f32"]),
    ("ResNet-50 layer4 3x3 (7x7 output)", (512, 7), (512, 3), 1, 1, "float32", 32,
     ["conv_dgrad_implicit_gemm_f32_64x64x8_4x4"],
     ["conv_wgrad_implicit_gemm_f32_128x128x8_8x8_s4", "conv_wgrad_splitk_reduce_f32"]),
    ("ResNet-50 3x3/2", (128, 56), (128, 3), 2, 1, "float32", 8,
     ["conv_dgrad_implicit_gemm_f32_128x128x8_8x8_s4"],
     ["conv_wgrad_implicit_gemm_f32_64x64x8_4x4", "conv_wgrad_splitk_reduce_f32"]),
    ("ResNet-50 1x1 256->64", (256, 56), (64, 1), 1, 0, "float32", 8,
     ["conv_dgrad_implicit_gemm_f32_128x128x8_8x8_s4"],
     ["conv_wgrad_implicit_gemm_f32_64x64x8_4x4", "conv_wgrad_splitk_reduce_f32"]),
    ("ResNet-50 1x1 64->256 (C = 64)", (64, 56), (256, 1), 1, 0, "float32", 8,
     ["conv_dgrad_implicit_gemm_f32_128x64x8_8x4"],
     ["conv_wgrad_implicit_gemm_f32_64x64x8_4x4", "conv_wgrad_splitk_reduce_f32"]),
    ("17x17 filter (over the dgrad s4 tap mask)", (128, 28), (128, 17), 1, 8, "float32", 32,
     ["conv_dgrad_implicit_gemm_f32_128x64x8_8x4"], ["conv_wgrad_implicit_gemm_f32_128x128x8_8x8_s4"]),
    ("ResNet-50 stem 7x7/2 (C = 3: direct dgrad)", (3, 224), (64, 7), 2, 3, "float32", 32,
     ["conv_dgrad_direct_f32_256"], ["conv_wgrad_implicit_gemm_f32_64x64x8_4x4", "conv_wgrad_splitk_reduce_f32"]),
    ("ResNet-50 3x3 128->128 float64 (no s4 in auto)", (128, 28), (128, 3), 1, 1, "float64", 32,
     ["conv_dgrad_implicit_gemm_f64_64x64x8_4x4"],
     ["conv_wgrad_implicit_gemm_f64_64x64x8_4x4", "conv_wgrad_splitk_reduce_f64"]),
]


@pytest.mark.parametrize("name,x,w,stride,padding,dtype,batch,dgrad,wgrad", BACKWARD_GOLDEN,
                         ids=[g[0] for g in BACKWARD_GOLDEN])
def test_backward_auto_golden_table(name, x, w, stride, padding, dtype, batch, dgrad, wgrad):
    p = _problem(x, w, stride, padding, 1, dtype, batch)
    with cuconv.backend("record"):
        d, wg = select(spec_of(p, DGRAD)), select(spec_of(p, WGRAD))
        atomic = select(spec_of(p, WGRAD, deterministic=False))
    assert d.kernels == dgrad and wg.kernels == wgrad
    # deterministic=False runs the same tile as its atomic twin, after the zero fill
    assert atomic.kernels == [f"conv_wgrad_zero_{tag(dtype)}",
                              wgrad[0].replace("conv_wgrad_implicit_gemm_", "conv_wgrad_implicit_gemm_atomic_")]


def test_backward_s4_rule_boundaries():
    """The s4 configs take over the 128-row tile exactly where N = C/groups (dgrad) or
    C/groups·R·S (wgrad) exceeds 64, the 128x128 grid still fills the SMs, and (dgrad) the
    filter fits the 16-row, 16-column tap mask."""
    fast_d, fast_w = "conv_dgrad_implicit_gemm_f32_128x128x8_8x8_s4", "conv_wgrad_implicit_gemm_f32_128x128x8_8x8_s4"
    p = Conv2dProblem(32, 65, 28, 28, 128, 3, 3, pad_h=1, pad_w=1)
    assert conv_dgrad.choose_config(p).name == fast_d
    assert conv_dgrad.choose_config(p.with_(C=64)).name == "conv_dgrad_implicit_gemm_f32_128x64x8_8x4"
    assert conv_dgrad.choose_config(p.with_(R=17, pad_h=8)).name == "conv_dgrad_implicit_gemm_f32_128x64x8_8x4"
    assert conv_dgrad.choose_config(p.with_(R=16, S=16, pad_h=8, pad_w=8)).name == fast_d
    # 196 M tiles of 128 rows: enough for 132 SMs at one N tile, not for 200
    assert conv_dgrad.choose_config(p, sms=196).name == fast_d
    assert conv_dgrad.choose_config(p, sms=197).name == "conv_dgrad_implicit_gemm_f32_128x64x8_8x4"
    q = Conv2dProblem(8, 512, 7, 7, 512, 3, 3, pad_h=1, pad_w=1)       # 4 x 36 tiles of 128x128
    assert conv_wgrad.choose_config(q).name == fast_w
    assert conv_wgrad.choose_config(q, atomic=True).name == fast_w.replace("gemm_", "gemm_atomic_")
    assert conv_wgrad.choose_config(q, sms=145).name == "conv_wgrad_implicit_gemm_f32_128x64x8_8x4"
    assert conv_wgrad.choose_config(q.with_(K=64), sms=1).name == "conv_wgrad_implicit_gemm_f32_64x64x8_4x4"
    one = q.with_(C=64, R=1, S=1, pad_h=0, pad_w=0)                    # C·R·S = 64: 128x64
    assert conv_wgrad.choose_config(one, sms=1).name == "conv_wgrad_implicit_gemm_f32_128x64x8_8x4"
    assert conv_wgrad.choose_config(one.with_(C=65), sms=1).name == fast_w
    assert conv_wgrad.choose_config(q.with_(dtype="float64"), sms=1).name == "conv_wgrad_implicit_gemm_f64_64x64x8_4x4"


def test_every_rule_names_a_listed_algorithm_and_says_why():
    for r in heuristics.RULES:
        assert r.algo in conv2d_mod.ALGORITHMS, r
        assert len(r.reason) > 30, r
    assert heuristics.RULES[-2].algo == "direct"     # the fallback before the K/groups < 8 GEMM


def test_no_rule_applies_then_every_reason_is_given():
    p = Conv2dProblem(1, 4, 9, 9, 8, 3, 3, dtype="int8")
    with pytest.raises(ValueError, match=r"no algorithm can run .*direct: dtype int8 not supported"):
        conv2d_mod.choose_algorithm(p)


def test_winograd_and_tensor_cores_refuse_float64_by_name():
    """The float32/fp16/bf16-only algorithms say float64 is not theirs (and what they take)."""
    p = Conv2dProblem(1, 64, 14, 14, 64, 3, 3, pad_h=1, pad_w=1, dtype="float64")
    with cuconv.backend("record"):
        infos = {i.name: i for i in cuconv.algorithms(p, allow_tf32=True)}
        for name, info in infos.items():
            if name.startswith(("winograd", "implicit_gemm_t")):
                assert not info.ok and "dtype float64 not supported" in info.reason, (name, info.reason)
                with pytest.raises(TypeError, match=f"algo='{name}' takes dtype .*, got float64"):
                    cuconv.plan_conv2d(*_arrays(p, "NCHW"), padding=1, algo=name)

"""The Hopper implicit-GEMM convolution on wgmma.mma_async (kernels/wgmma_conv.cu,
ops/wgmma_conv.py), through conv2d(algo="implicit_gemm_wgmma") on the emulator (an sm_90 device
by default) and, on an sm_90 GPU, on the device: bit-exact on small integers (every product and
partial sum exact, so a descriptor, swizzle or fragment slip is a wrong integer) on shapes no
tile divides, NHWC in place and NCHW through the pack, every config with the fused epilogue,
random inputs within the tensor-core bound, sanitizers and thread orders; its plans (the
launches, the workspace, the alignment they assume), its reasons on other devices, the sm_90a
compile target of its GPU module, and the static analysis of its main loop. The instruction
probes are tests/test_wgmma_probe.py.
"""
from __future__ import annotations

import contextlib

import ml_dtypes
import numpy as np
import pytest
from conftest import put
from tc_helpers import check_tc

import cuconv
from cuconv import analysis
from cuconv import compile as compile_mod
from cuconv.backend import EmulatorBackend, using
from cuconv.ops import conv2d as conv2d_mod
from cuconv.ops import heuristics
from cuconv.ops import wgmma_conv as wg
from cuconv.problem import Conv2dProblem, ConvTransposeProblem
from cuconv.reference import conv2d_ref
from cuconv.registry import find_kernel, registered_kernels
from cuconv.testing import assert_close, poison

BF16 = ml_dtypes.bfloat16
DT = {"float16": np.float16, "bfloat16": BF16}


def needs_sm90(be):
    """On the GPU these run only on an sm_90 device (H100/H200); the emulator always runs them."""
    if be.name == "cupy" and be.caps().cc != 90:
        pytest.skip(f"wgmma needs an sm_90 device (H100, H200); this one is sm_{be.caps().cc}")


def small_ints(rng, shape, lo=-4, hi=4):
    return rng.integers(lo, hi + 1, size=shape).astype(np.float64)


# ----------------------------------------------------------------- the convolution
# (N, C, H, W, K, R, S, stride, padding, dilation, groups): C, K and P·Q no tile divides
CASES = {
    "3x3": (1, 24, 7, 9, 40, 3, 3, 1, 1, 1, 1),
    "1x1_K72": (2, 16, 5, 6, 72, 1, 1, 1, 0, 1, 1),
    "5x5_s2": (1, 8, 9, 7, 24, 5, 5, 2, 2, 1, 1),
    "C3_s2": (1, 3, 9, 9, 16, 3, 3, 2, 1, 1, 1),
    "C72_two_chunks": (1, 72, 5, 5, 20, 3, 3, 1, 1, 1, 1),
    "groups2_dil2": (1, 32, 9, 9, 48, 3, 3, 1, 2, 2, 2),
    "bands_M612": (2, 8, 18, 17, 24, 3, 3, 1, 1, 1, 1),      # 10 M tiles: two bands of the raster
}


def int_inputs(rng, case, dtype, layout):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    x = small_ints(rng, (N, C, H, W), -2, 2)
    w = small_ints(rng, (K, C // groups, R, S), -2, 2)
    ref = conv2d_ref(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    if layout == "NHWC":
        x, w, ref = x.transpose(0, 2, 3, 1), w.transpose(0, 2, 3, 1), ref.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x).astype(DT[dtype]), np.ascontiguousarray(w).astype(DT[dtype]), ref, kw


def run_conv(be, x, w, out_shape, layout, config=None, bias=None, residual=None, **kw):
    """conv2d into a NaN-poisoned output (an unwritten element fails every comparison)."""
    out = put(be, np.empty(out_shape, x.dtype))
    poison(out)
    extra = {} if config is None else {"config": config}
    got = cuconv.conv2d(put(be, x), put(be, w), put(be, bias), algo="implicit_gemm_wgmma", layout=layout,
                        residual=put(be, residual), out=out, **kw, **extra)
    assert got is out
    return be.to_numpy(out)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype,layout", [("float16", "NHWC"), ("bfloat16", "NCHW"), ("float16", "NCHW"),
                                          ("bfloat16", "NHWC")])
def test_conv_integers_bit_exact(be, rng, case, dtype, layout):
    """Exact: every product and partial sum is an integer below 2^24; the output is the exact
    sum rounded once to the output dtype, as the reference cast is."""
    needs_sm90(be)
    if dtype == "bfloat16" and case not in ("3x3", "1x1_K72", "C3_s2"):
        pytest.skip("bf16 on three shapes keeps the emulator run short")
    x, w, ref, kw = int_inputs(rng, CASES[case], dtype, layout)
    y = run_conv(be, x, w, ref.shape, layout, **kw)
    np.testing.assert_array_equal(y.astype(np.float64), ref.astype(DT[dtype]).astype(np.float64))


@pytest.mark.parametrize("config", [c.name for c in wg.CONFIGS])
def test_every_config_bit_exact_with_epilogue(be, rng, config):
    """Each config (both dtypes), NHWC and NCHW, with bias + residual + relu fused."""
    needs_sm90(be)
    cfg = wg.CONFIGS_BY_NAME[config]
    case = (1, 72, 6, 7, 136 if cfg.bn == 128 else 72, 3, 3, 1, 1, 1, 1) if cfg.bm == 128 else CASES["3x3"]
    for layout in ("NHWC", "NCHW"):
        x, w, ref, kw = int_inputs(rng, case, cfg.dtype, layout)
        K = case[4]
        bias = small_ints(rng, (K,), -3, 3)
        residual = small_ints(rng, ref.shape, -3, 3)
        bshape = (1, K, 1, 1) if layout == "NCHW" else (1, 1, 1, K)
        want = np.maximum(ref + bias.reshape(bshape) + residual, 0).astype(DT[cfg.dtype]).astype(np.float64)
        out = run_conv(be, x, w, ref.shape, layout, config, bias.astype(DT[cfg.dtype]),
                       residual.astype(DT[cfg.dtype]), activation="relu", **kw)
        np.testing.assert_array_equal(out.astype(np.float64), want, err_msg=f"{config} {layout}")


@pytest.mark.parametrize("dtype,layout", [("float16", "NCHW"), ("bfloat16", "NHWC")])
def test_conv_random_inputs_silu(be, rng, dtype, layout):
    """Random (non-integer) inputs with bias and SiLU, C = 40 and K = 70 (partial channel chunk and
    N tile): within one output ulp plus fp32 accumulation error normalised by Σ|x|·|w| of the
    reference from the stored operands (research note §8.9), and within the tolerance table's
    normwise bound."""
    needs_sm90(be)
    N, C, H, W, K, R, S = 2, 40, 7, 6, 70, 3, 3
    x = rng.uniform(-1, 1, (N, C, H, W)).astype(DT[dtype])
    w = rng.uniform(-0.3, 0.3, (K, C, R, S)).astype(DT[dtype])
    bias = rng.uniform(-1, 1, (K,)).astype(DT[dtype])
    f = lambda a: np.asarray(a).astype(np.float64)  # noqa: E731
    ref = conv2d_ref(f(x), f(w), f(bias), padding=1, activation="silu")
    norm = conv2d_ref(np.abs(f(x)), np.abs(f(w)), padding=1) + np.abs(f(bias)).reshape(1, -1, 1, 1)
    if layout == "NHWC":
        x, w = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.ascontiguousarray(w.transpose(0, 2, 3, 1))
    out_shape = ref.shape if layout == "NCHW" else (N, H, W, K)
    y = run_conv(be, x, w, out_shape, layout, bias=bias, padding=1, activation="silu")
    if layout == "NHWC":
        y = y.transpose(0, 3, 1, 2)
    check_tc(y, ref, norm, dtype, C * R * S, f"wgmma {dtype} {layout}")
    assert_close(y, ref, dtype, "implicit_gemm_wgmma")


def test_conv_under_sanitizers_and_random_order(rng):
    """ASan + UBSan, ThreadSanitizer (the mbarrier ring must order every cross-thread access),
    then reversed and random thread order: the mbarrier ring and the async bookkeeping must not
    depend on the schedule."""
    x, w, ref, kw = int_inputs(rng, CASES["3x3"], "float16", "NHWC")
    want = ref.astype(np.float16).astype(np.float64)
    for settings in (dict(sanitize="address,undefined"), dict(sanitize="thread"), dict(order="reverse"),
                     dict(order="random", seed=5)):
        with cuconv.backend("emulator", **settings) as be:
            for config in ("wgmma_conv_f16_64x64x64_s3", "wgmma_conv_f16_128x128x64_s4"):
                if settings.get("sanitize") == "address,undefined" and config.startswith("wgmma_conv_f16_128"):
                    continue
                y = run_conv(be, x, w, ref.shape, "NHWC", config=config, **kw)
                np.testing.assert_array_equal(y.astype(np.float64), want, err_msg=f"{settings} {config}")


# ----------------------------------------------------------------- plans
def _planned(plan):
    return [(ln.kernel, ln.grid, ln.block, ln.shared_mem) for ln in plan.launches]


def _misaligned_view(a):
    """A C-contiguous copy of ``a`` whose data pointer is 2 bytes past a 16-byte boundary."""
    buf = np.empty(a.size + 8, a.dtype)
    start = next(i for i in range(8) if (buf[i:].__array_interface__["data"][0] % 16) == 2)
    v = buf[start:start + a.size].reshape(a.shape)
    v[...] = a
    return v


# (x shape, w shape, layout, conv2d keywords, kernels planned, workspace bytes)
PLAN_CASES = {
    "NHWC in place": ((2, 9, 7, 16), (24, 3, 3, 16), "NHWC", dict(padding=1),
                      ["wgmma_conv_f16_64x64x64_s3"], 0),
    "NHWC C=12: packed": ((1, 8, 8, 12), (16, 3, 3, 12), "NHWC", dict(padding=1),
                          ["tc_conv_pack_nhwc_f16", "tc_conv_pack_nhwc_f16", "wgmma_conv_f16_64x64x64_s3"],
                          2 * (1 * 64 * 16 + 16 * 9 * 16)),
    "NCHW C=3 stride 2": ((2, 3, 11, 9), (20, 3, 3, 3), "NCHW", dict(stride=2, padding=1),
                          ["tc_conv_pack_nhwc_f16", "tc_conv_pack_nhwc_f16", "wgmma_conv_f16_64x64x64_s3"],
                          2 * (2 * 99 * 8) + 2 * (20 * 9 * 8)),
    "NCHW groups 2, K/g 72": ((1, 32, 9, 9), (144, 16, 3, 3), "NCHW", dict(padding=1, groups=2),
                              ["tc_conv_pack_nhwc_f16", "tc_conv_pack_nhwc_f16", "wgmma_conv_f16_64x128x64_s4"],
                              2 * (81 * 32) + 2 * (144 * 9 * 16)),
}


@pytest.mark.parametrize("case", list(PLAN_CASES))
def test_plan_lists_exactly_the_launches(rng, case):
    """The plan's launches are what the record backend sees and what the emulator executes; the
    workspace is exactly the packs' buffers (16-byte aligned), none on the in-place NHWC path."""
    xs, ws, layout, kw, kernels, workspace = PLAN_CASES[case]
    x = rng.integers(-2, 3, xs).astype(np.float16)
    w = rng.integers(-2, 3, ws).astype(np.float16)
    K = ws[0]
    bias = rng.integers(-2, 3, (K,)).astype(np.float16)
    with cuconv.backend("record") as rec:
        plan = cuconv.plan_conv2d(x, w, bias, algo="implicit_gemm_wgmma", layout=layout, activation="relu", **kw)
        cuconv.conv2d(x, w, bias, algo="implicit_gemm_wgmma", layout=layout, activation="relu", **kw)
    assert [(r.kernel, r.grid, r.block, r.shared_mem) for r in rec.launches] == _planned(plan)
    assert plan.kernels == kernels and plan.workspace_bytes == workspace
    assert plan.aligned == (("x", "w") if workspace == 0 else ())
    wg_launch = plan.launches[-1]
    cfg = wg.CONFIGS_BY_NAME[kernels[-1]]
    assert wg_launch.block == (cfg.threads, 1, 1) and wg_launch.shared_mem == cfg.smem_bytes
    # the emulator runs exactly those launches, and computes the right integers
    seen = []

    class Recording(EmulatorBackend):
        def launch(self, entry, grid, block, args, shared_mem=0):
            seen.append((entry.label, tuple(grid), tuple(block), int(shared_mem)))
            return super().launch(entry, grid, block, args, shared_mem)
    with using(Recording()):
        y = cuconv.conv2d(x, w, bias, algo="implicit_gemm_wgmma", layout=layout, activation="relu", **kw)
    assert seen == _planned(plan)
    nchw = (lambda a: a.transpose(0, 3, 1, 2)) if layout == "NHWC" else (lambda a: a)
    ref = conv2d_ref(nchw(x).astype(np.float64), nchw(w).astype(np.float64), bias.astype(np.float64),
                     activation="relu", **kw)
    np.testing.assert_array_equal(nchw(y).astype(np.float64), ref.astype(np.float16).astype(np.float64))


def test_misaligned_nhwc_arrays_get_the_pack_plan(rng):
    """The in-place plan assumes 16-byte aligned x and w (cp.async): an NHWC call whose arrays
    start 2 bytes off gets a plan that packs them first, and the right answer."""
    x = rng.integers(-2, 3, (1, 7, 9, 16)).astype(np.float16)
    w = rng.integers(-2, 3, (8, 3, 3, 16)).astype(np.float16)
    xm, wm = _misaligned_view(x), _misaligned_view(w)
    with cuconv.backend("record") as rec:
        cuconv.conv2d(x, w, padding=1, algo="implicit_gemm_wgmma", layout="NHWC")
        aligned = rec.kernels()
        rec.clear()
        cuconv.conv2d(xm, wm, padding=1, algo="implicit_gemm_wgmma", layout="NHWC")
        assert aligned == ["wgmma_conv_f16_64x64x64_s3"]
        assert rec.kernels() == ["tc_conv_pack_nhwc_f16", "tc_conv_pack_nhwc_f16", "wgmma_conv_f16_64x64x64_s3"]
    with cuconv.backend("emulator"):
        y = cuconv.conv2d(xm, wm, padding=1, algo="implicit_gemm_wgmma", layout="NHWC")
    ref = conv2d_ref(x.transpose(0, 3, 1, 2).astype(np.float64), w.transpose(0, 3, 1, 2).astype(np.float64),
                     padding=1).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(y.astype(np.float64), ref.astype(np.float16).astype(np.float64))


def test_default_config_choice():
    """The heuristic: 64x64 for K/groups <= 64; the warp-specialized TMA kernel for more when its
    tensor maps can describe the problem; else (here: groups with C/groups not a multiple of 64)
    64x128 when the 128x128 tiles would not give each of the 132 SMs a block, 128x128 when they do."""
    small = Conv2dProblem.from_shapes((1, 16, 8, 8), (64, 16, 3, 3), padding=1, dtype="float16")
    mid = Conv2dProblem.from_shapes((1, 16, 8, 8), (72, 16, 3, 3), padding=1, dtype="bfloat16")
    big = Conv2dProblem.from_shapes((8, 64, 56, 56), (256, 64, 3, 3), padding=1, dtype="float16")
    assert wg.choose_config(small).name == "wgmma_conv_f16_64x64x64_s3"
    assert wg.choose_config(mid).name == "wgmma_conv_bf16_128x128x64_tma_s7"
    assert wg.choose_config(big).name == "wgmma_conv_f16_128x128x64_tma_s7"
    mid_g = Conv2dProblem.from_shapes((1, 32, 8, 8), (144, 16, 3, 3), padding=1, groups=2, dtype="bfloat16")
    big_g = Conv2dProblem.from_shapes((8, 64, 56, 56), (512, 32, 3, 3), padding=1, groups=2, dtype="float16")
    assert "multiple of 64" in wg.tma_reason(mid_g) and "multiple of 64" in wg.tma_reason(big_g)
    assert wg.choose_config(mid_g).name == "wgmma_conv_bf16_64x128x64_s4"
    assert wg.choose_config(big_g).name == "wgmma_conv_f16_128x128x64_s4"
    assert wg.choose_config(big_g, sms=100000).name == "wgmma_conv_f16_64x128x64_s4"
    resnet = Conv2dProblem.from_shapes((1, 128, 28, 28), (128, 128, 3, 3), padding=1, dtype="float16")
    assert wg.choose_config(resnet).name == "wgmma_conv_f16_128x128x64_tma_s7"
    assert wg.choose_config(resnet.with_(N=32)).name == "wgmma_conv_f16_128x128x64_tma_s7"


# ----------------------------------------------------------------- registration, reasons, arguments
def test_configs_and_registration():
    names = [c.name for c in wg.CONFIGS]
    assert "wgmma_conv_f16_128x128x64_s4" in names and "wgmma_conv_bf16_128x128x64_s4" in names
    reg = {e.label: e for e in registered_kernels()}
    for c in wg.CONFIGS:
        e = reg[c.name]
        assert e is wg.ENTRIES[c] and e.archs == ("sm_90a",) and e.file == "wgmma_conv.cu"
        assert e.dynamic_smem == c.smem_bytes and e.cuda_headers and e.block_threads == c.threads
    assert [c.name for c in wg.CONFIGS if c.main] == ["wgmma_conv_f16_128x128x64_tma_s7", "wgmma_conv_f16_128x128x64_s4",
                                                       "wgmma_conv_bf16_128x128x64_tma_s7",
                                                       "wgmma_conv_bf16_128x128x64_s4"]
    p = Conv2dProblem.from_shapes((1, 8, 8, 8), (16, 8, 3, 3), dtype="float16")
    with cuconv.backend("record"):
        info = {a.name: a for a in cuconv.algorithms(p)}["implicit_gemm_wgmma"]
    rule = next(r for r in heuristics.RULES if r.algo == "implicit_gemm_wgmma")
    assert info.ok and info.auto_rule == rule.reason and info.kernels[-1] == "wgmma_conv_f16_64x64x64_s3"


def test_can_implement_reasons():
    p = Conv2dProblem.from_shapes((1, 12, 8, 8), (16, 12, 3, 3), dtype="float16")
    cfg = wg.CONFIGS_BY_NAME["wgmma_conv_f16_64x64x64_s3"]
    assert "multiple of 8" in cfg.can_implement(p)
    assert "takes float16" in cfg.can_implement(p.with_(dtype="bfloat16"))
    assert "sm_90a" in cfg.can_implement(p.with_(C=16), cc=80)
    assert cfg.can_implement(p.with_(C=16)) is None
    assert "grid limit" in cfg.can_implement(p.with_(C=16, N=70000))


def test_bad_arguments(rng):
    x = rng.standard_normal((1, 8, 6, 6)).astype(np.float16)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float16)
    with cuconv.backend("record"):
        with pytest.raises(ValueError, match="unknown wgmma config 'nope'"):
            cuconv.conv2d(x, w, algo="implicit_gemm_wgmma", config="nope")
        with pytest.raises(ValueError, match="takes bfloat16, got float16"):
            cuconv.conv2d(x, w, algo="implicit_gemm_wgmma", config="wgmma_conv_bf16_64x64x64_s3")
        with pytest.raises(TypeError, match="config must be None, a config name or a WgmmaConvConfig"):
            cuconv.conv2d(x, w, algo="implicit_gemm_wgmma", config=3)
        with pytest.raises(TypeError, match="float16 or bfloat16"):
            cuconv.conv2d(x.astype(np.float32), w.astype(np.float32), algo="implicit_gemm_wgmma")
        with pytest.raises(TypeError, match="takes only config="):
            cuconv.conv2d(x, w, algo="implicit_gemm_wgmma", bogus=1)
        with pytest.raises(ValueError, match="max_workspace_bytes=0"):
            cuconv.conv2d(x, w, algo="implicit_gemm_wgmma", max_workspace_bytes=0)   # NCHW needs the pack


@pytest.mark.parametrize("cc", [80, 89, 100])
def test_other_devices_get_a_reason(cc):
    """On a device other than sm_90 the algorithm says why it cannot run, before any launch, and
    auto takes the mma.sync kernel."""
    p = Conv2dProblem.from_shapes((1, 16, 8, 8), (16, 16, 3, 3), padding=1, dtype="float16")
    x = np.ones((1, 16, 8, 8), np.float16)
    w = np.ones((16, 16, 3, 3), np.float16)
    with cuconv.backend("record", cc=cc) as rec:
        info = {a.name: a for a in cuconv.algorithms(p)}["implicit_gemm_wgmma"]
        assert not info.ok and "sm_90a" in info.reason and f"sm_{cc}" in info.reason and info.auto_rule is None
        with pytest.raises(ValueError, match=f"sm_90a .*this device is sm_{cc}"):
            cuconv.conv2d(x, w, padding=1, algo="implicit_gemm_wgmma")
        assert rec.launches == []
        assert cuconv.plan_conv2d(x, w, padding=1).algo == "implicit_gemm_tc"


# ----------------------------------------------------------------- the GPU module's compile target
def test_gpu_module_is_compiled_for_sm90a(monkeypatch):
    """wgmma does not exist on plain sm_90 (CuPy's RawModule would build for the device's
    sm_90): the module of wgmma_conv.cu on an sm_90 device is the sm_90a build -- the one the
    figures come from; tc_conv.cu's is the plain sm_90 build, and no other device is given
    sm_90a (an sm_80 device's wgmma_conv.cu module holds no kernel)."""
    cupy = pytest.importorskip("cupy")
    loaded = []

    class FakeModule:
        def load(self, cubin):
            loaded.append(cubin)
    monkeypatch.setattr(cupy.cuda.function, "Module", FakeModule)
    monkeypatch.setattr(cupy.cuda, "Device", lambda i: contextlib.nullcontext())
    device = 987654            # a device id no real module uses
    try:
        (_, wg_build), (_, tc_build), (_, old_build) = (
            compile_mod.cupy_module("wgmma_conv.cu", (), True, device, 90),
            compile_mod.cupy_module("tc_conv.cu", (), True, device, 90),
            compile_mod.cupy_module("wgmma_conv.cu", (), True, device + 1, 80))
    finally:
        for key in [k for k in compile_mod._MODULES if k[0] in (device, device + 1)]:
            del compile_mod._MODULES[key]
    assert loaded == [wg_build.cubin, tc_build.cubin, old_build.cubin]
    assert wg_build.arch == "sm_90a" and "--gpu-architecture=sm_90a" in wg_build.nvrtc_options
    assert sorted(wg_build.expressions) == sorted(c.expression for c in wg.CONFIGS)
    assert tc_build.arch == "sm_90" and not any("sm_90a" in o for o in tc_build.nvrtc_options)
    assert old_build.arch == "sm_80" and old_build.expressions == ()
    entry = find_kernel("wgmma_conv_f16_64x64x64_s3")
    assert compile_mod.compile_entry(entry, "sm_90a").cubin == wg_build.cubin
    assert compile_mod.gpu_target("wgmma_conv.cu", (), 90) == "sm_90a"
    assert compile_mod.gpu_target("wgmma_conv.cu", (), 100) == "sm_100"


def test_only_the_sm90a_build_has_wgmma():
    """Built for plain sm_90 (what CuPy alone would ask for) the kernel has no wgmma at all: the
    primitives of common.cuh compile to __trap() without __CUDA_ARCH_FEAT_SM90_ALL, so the
    -arch=sm_90a above is what makes the GPU module work, not decoration."""
    entry = find_kernel("wgmma_conv_f16_64x64x64_s3")
    res = compile_mod.compile_entry(entry, "sm_90a")
    assert res.registers > 0 and res.spill_bytes == 0
    source, opts = compile_mod.load_source(entry.file), compile_mod.cuda_include_options()
    ptx = {arch: compile_mod.nvrtc_compile(source, [entry.expression], arch, opts, entry.file, output="ptx")[0]
           for arch in ("sm_90a", "sm_90")}
    ptx = {a: p.decode() if isinstance(p, bytes) else p for a, p in ptx.items()}
    assert "wgmma.mma_async" in ptx["sm_90a"] and ".target sm_90a" in ptx["sm_90a"]
    assert "wgmma.mma_async" not in ptx["sm_90"] and "trap" in ptx["sm_90"]


# ----------------------------------------------------------------- static analysis (no GPU needed)
def test_analysis_sees_hgmma_in_the_main_loop():
    """The main configs' main loop issues HGMMA.64x128x16 and, by the issue model, can keep
    Hopper's tensor pipe >= 90 % busy; no spills; the stated occupancy holds."""
    try:
        analysis.find_tool("nvdisasm")
    except analysis.ToolNotFoundError as exc:
        pytest.skip(str(exc))
    for name in ("wgmma_conv_f16_128x128x64_s4", "wgmma_conv_bf16_128x128x64_s4"):
        a = analysis.analyze_entry(find_kernel(name), "sm_90a")
        lp = a.main_loop
        assert lp.path_mix.by_opcode["HGMMA"] == 4, lp.path_mix.by_opcode
        assert lp.ceiling_pipe == "tensor_fp16" and lp.ceiling >= 0.90, (name, lp.ceiling)
        assert a.spill_bytes == 0 and not a.design_problems()
        assert a.occupancy["blocks_per_sm"] >= 1 and a.arch == "sm_90a"
        assert a.features == dict(tma=0, warp_specialized=False, setmaxnreg=False)   # cp.async, no producer


# ----------------------------------------------------------------- the warp-specialized TMA variant
TMA = {"float16": "wgmma_conv_f16_128x128x64_tma_s7", "bfloat16": "wgmma_conv_bf16_128x128x64_tma_s7"}
# (case, K override, SMs): fewer SMs than tiles makes the blocks persistent, each consumer
# warpgroup taking several tiles in turn (ping-pong) through the shared ring
TMA_CASES = {
    "3x3_1tile": ("3x3", None, 132),
    "5x5_s2_K136_two_N_tiles_one_block": ("5x5_s2", 136, 1),
    "C3_s2": ("C3_s2", None, 132),
    "C72_two_channel_boxes": ("C72_two_chunks", 200, 1),
    "bands_M612_5_tiles_2_blocks": ("bands_M612", None, 2),
    "1x1_K72_3_blocks": ("1x1_K72", None, 3),
}


@pytest.mark.parametrize("case", list(TMA_CASES))
@pytest.mark.parametrize("dtype,layout", [("float16", "NHWC"), ("bfloat16", "NCHW")])
def test_tma_conv_integers_bit_exact(rng, case, dtype, layout):
    """The TMA kernel on the emulator, bit-exact on small integers: padding and rows past M from
    the im2col map's zero fill, channels past C (C = 3, 24, 72 against 64-channel boxes), stride
    2, filters past K, several tiles per block in turn on both consumer warpgroups."""
    name, K, sms = TMA_CASES[case]
    N, C, H, W, K0, R, S, stride, padding, dilation, groups = CASES[name]
    x, w, ref, kw = int_inputs(rng, (N, C, H, W, K or K0, R, S, stride, padding, dilation, groups), dtype, layout)
    with cuconv.backend("emulator", sms=sms) as be:
        plan = cuconv.plan_conv2d(x, w, algo="implicit_gemm_wgmma", layout=layout, config=TMA[dtype], **kw)
        y = run_conv(be, x, w, ref.shape, layout, config=TMA[dtype], **kw)
    assert plan.launches[-1].grid[0] <= sms
    np.testing.assert_array_equal(y.astype(np.float64), ref.astype(DT[dtype]).astype(np.float64))


# A transposed convolution whose output_padding spans a stride is the data gradient of a
# convolution that stops short of its input's end (negative end padding,
# ConvTransposeProblem.as_conv2d); cuconv.grad.conv_transpose2d_input runs that convolution's
# forward, which both wgmma kernels take (ConvAlgorithm.crops). The TMA kernel's im2col box must
# then end at the end padding, or its rows would not be Q pixels wide.
@pytest.mark.parametrize("config", [TMA["float16"], "wgmma_conv_f16_64x64x64_s3"])
def test_cropped_problem_bit_exact(rng, config):
    q = ConvTransposeProblem.from_shapes((1, 72, 6, 7), (72, 16, 3, 3), 1, 0, 2, 1, 3, "float16").as_conv2d()
    assert min(q.pad_bottom, q.pad_right) < 0 and q.K_per_group > 64, q
    x, w = small_ints(rng, q.input_shape, -2, 2), small_ints(rng, q.weight_shape, -2, 2)
    with cuconv.backend("emulator") as be:
        needs_sm90(be)
        ref = conv2d_mod.select(conv2d_mod.spec_of(q.with_(dtype="float64")), "direct").run(put(be, x), put(be, w))
        plan = conv2d_mod.select(conv2d_mod.spec_of(q, config=config), "implicit_gemm_wgmma")
        assert plan.kernels[-1] == config
        out = put(be, np.empty(q.output_shape, np.float16))
        poison(out)
        plan.run(put(be, x.astype(np.float16)), put(be, w.astype(np.float16)), out=out)
        y, ref = be.to_numpy(out), be.to_numpy(ref)
    np.testing.assert_array_equal(y.astype(np.float64), ref)


def test_tma_conv_under_sanitizers_and_thread_orders(rng):
    """ASan + UBSan, ThreadSanitizer (the warp-specialized ring: producer, two consumers, the order
    barriers), reversed and random thread orders, on two tiles taken by the two consumers of one
    block."""
    x, w, ref, kw = int_inputs(rng, (1, 16, 5, 6, 136, 3, 3, 1, 1, 1, 1), "float16", "NHWC")
    want = ref.astype(np.float16).astype(np.float64)
    for settings in (dict(sanitize="address,undefined"), dict(sanitize="thread"), dict(order="reverse"),
                     dict(order="random", seed=11)):
        with cuconv.backend("emulator", sms=1, **settings) as be:
            y = run_conv(be, x, w, ref.shape, "NHWC", config=TMA["float16"], **kw)
        np.testing.assert_array_equal(y.astype(np.float64), want, err_msg=str(settings))


def test_tma_conv_nan_rules(rng):
    """IEEE through the TMA path: a padded tap contributes 0·w, so an Inf weight on a tap that
    reaches into the padding gives NaN in exactly the border outputs (the reference's zero-padded
    sum); a NaN input pixel reaches every output whose window holds it; with relu the TMA kernel
    and the cp.async variant agree element for element (one epilogue, common.cuh's cc_activate)."""
    N, C, H, W, K = 1, 16, 6, 7, 72
    x = small_ints(rng, (N, C, H, W), -2, 2)
    w = small_ints(rng, (K, C, 3, 3), -2, 2)
    x[0, 3, 2, 4] = np.nan
    w[5, 2, 0, 0] = np.inf
    ref = conv2d_ref(x, w, padding=1)
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).astype(np.float16)
    wh = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).astype(np.float16)
    with cuconv.backend("emulator") as be:
        y = run_conv(be, xh, wh, (N, H, W, K), "NHWC", config=TMA["float16"], padding=1).transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
        assert np.isnan(y[0, 5, 0, :]).all() and np.isnan(y[0, 5, :, 0]).all()   # 0·Inf in the padding
        finite = ~np.isnan(ref)
        np.testing.assert_array_equal(y[finite].astype(np.float64), ref[finite].astype(np.float16).astype(np.float64))
        outs = [run_conv(be, xh, wh, (N, H, W, K), "NHWC", config=c, padding=1, activation="relu")
                for c in (TMA["float16"], "wgmma_conv_f16_128x128x64_s4")]
    np.testing.assert_array_equal(outs[0], outs[1])


def test_tma_plan_passes_tensor_maps():
    """The plan's TMA launch carries two tensor maps (im2col over x, tiled over w) that the record
    backend records as their specs, a persistent grid of at most one block per SM and the whole
    ring's shared memory; NCHW goes through the packs and the maps describe the packed buffers."""
    x = np.ones((2, 28, 28, 128), np.float16)
    w = np.ones((128, 3, 3, 128), np.float16)
    with cuconv.backend("record", sms=132) as rec:
        cuconv.conv2d(x, w, padding=1, layout="NHWC", algo="implicit_gemm_wgmma")
    (ln,) = rec.launches
    assert ln.kernel == TMA["float16"] and ln.block == (384, 1, 1) and ln.grid == (13, 1, 1)   # ceil(2·28·28 / 128) tiles < 132 SMs
    assert ln.shared_mem == wg.CONFIGS_BY_NAME[TMA["float16"]].smem_bytes <= 232448
    mx, mw = ln.args[0], ln.args[1]
    assert mx.mode == "im2col" and mx.dims == (128, 28, 28, 2) and mx.lower == (-1, -1) and mx.upper == (-1, -1)
    assert mx.channels_per_pixel == 64 and mx.pixels_per_column == 128 and mx.box_bytes == 16384
    assert mw.mode == "tiled" and mw.dims == (128, 3, 3, 128) and mw.box == (64, 1, 1, 128) and mw.box_bytes == 16384
    with cuconv.backend("record") as rec:
        cuconv.conv2d(np.ones((1, 24, 9, 9), np.float16), np.ones((72, 24, 3, 3), np.float16), stride=2,
                      dilation=2, padding=2, algo="implicit_gemm_wgmma")
    assert rec.kernels() == ["tc_conv_pack_nhwc_f16", "tc_conv_pack_nhwc_f16", TMA["float16"]]
    mx = rec.launches[-1].args[0]
    assert mx.element_strides == (1, 2, 2, 1) and mx.lower == (-2, -2) and mx.upper == (-2, -2)


def test_tma_reasons():
    """What the tensor maps cannot describe is refused with the rule, and auto falls back to the
    cp.async kernels."""
    p = Conv2dProblem.from_shapes((1, 64, 300, 300), (128, 64, 3, 3), padding=130, dtype="float16")
    assert "[-128, 127]" in wg.tma_reason(p)
    assert "stride 9x9" in wg.tma_reason(p.with_(pad_h=1, pad_w=1, stride_h=9, stride_w=9))
    cfg = wg.CONFIGS_BY_NAME[TMA["float16"]]
    assert "[-128, 127]" in cfg.can_implement(p)
    assert wg.choose_config(p).name == "wgmma_conv_f16_128x128x64_s4"
    x = np.ones((1, 64, 8, 8), np.float16)
    w = np.ones((128, 32, 3, 3), np.float16)
    with cuconv.backend("record"):
        with pytest.raises(ValueError, match="multiple of 64"):
            cuconv.conv2d(x, w, padding=1, groups=2, algo="implicit_gemm_wgmma", config=TMA["float16"])


def test_tma_kernel_static_figures():
    """The TMA kernel's main loop (the consumers' K loop): 8 HGMMA.64x128x16 per wait, an uncapped
    issue ratio >= 6 (tensor-pipe clocks per warp / issue slots per iteration), no spills, and the
    SASS has the TMA loads (UTMALDG), setmaxnreg (USETMAXREG) and the transaction-count barriers."""
    try:
        analysis.find_tool("nvdisasm")
    except analysis.ToolNotFoundError as exc:
        pytest.skip(str(exc))
    for name in TMA.values():
        a = analysis.analyze_entry(find_kernel(name), "sm_90a")
        lp = a.main_loop
        assert lp.path_mix.by_opcode["HGMMA"] == 8, lp.path_mix.by_opcode
        ratio = lp.path_mix.flops["tensor_fp16"] / (2 * analysis.issue_model("sm_90a")["tensor_fp16"]) / lp.instructions
        assert ratio >= 6, (name, ratio, lp.instructions)
        assert a.spill_bytes == 0 and not a.design_problems()
        ops = a.kernel_mix.by_opcode
        assert ops["UTMALDG"] >= 2 and ops["USETMAXREG"] >= 2 and ops["SYNCS"] > 0, ops
        assert a.features_text == "TMA+WS+setmaxnreg" and a.to_dict()["warp_specialized"] is True

"""The plan layer: a plan lists exactly what the call launches, cached calls re-plan nothing and
touch no file, the record backend compiles nothing, devices keep their own plans and functions,
and the NHWC tensor-core workspace is what the plan's launches use."""
from __future__ import annotations

import hashlib
import os
import pathlib

import numpy as np
import pytest

import cuconv
from conftest import put
from cuconv import compile as compile_mod
from cuconv import emulator
from cuconv.backend import EmulatorBackend, fft_label, using
from cuconv.ops import conv2d as conv2d_mod
from cuconv.problem import Conv2dProblem, numpy_dtype
from cuconv.testing import random_array

# Awkward conv problems (x NCHW, w KCRS, stride, padding, dilation, groups), each with an
# epilogue, run with every algorithm that can run them.
CONV_CASES = [
    ((2, 3, 9, 7), (5, 3, 3, 3), 1, 1, 1, 1),
    ((1, 16, 9, 9), (16, 16, 3, 3), 1, 1, 1, 1),        # Winograd applies (C, K >= 16)
    ((2, 4, 11, 9), (6, 2, 5, 5), 2, 2, 1, 2),          # grouped, strided
    ((3, 6, 7, 7), (12, 1, 3, 3), 1, 1, 2, 6),          # depthwise, multiplier 2, dilated
    ((2, 8, 7, 9), (10, 8, 1, 1), 1, 0, 1, 1),          # 1x1
    ((2, 3, 11, 9), (4, 3, 7, 7), 1, 3, 1, 1),          # 7x7 stride 1: the FFT algorithms' steps
]


class Recording(EmulatorBackend):
    """The emulator, recording (label, grid, block, shared_mem) of each launch it executes, and
    each FFT it performs as the record backend does (fft2d_<kind>_<Lh>x<Lw>, (batch, 1, 1), ())."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen = []

    def launch(self, entry, grid, block, args, shared_mem=0):
        self.seen.append((entry.label, tuple(grid), tuple(block), int(shared_mem)))
        return super().launch(entry, grid, block, args, shared_mem)

    def fft(self, kind, src, dst):
        real = src if kind == "r2c" else dst
        self.seen.append((fft_label(kind, real.shape[1:]), (real.shape[0], 1, 1), (), 0))
        return super().fft(kind, src, dst)


def _planned(plan):
    return [(ln.kernel, ln.grid, ln.block, ln.shared_mem) for ln in plan.launches]


def _conv_inputs(rng, case, dtype="float32", layout="NCHW"):
    xs, ws, stride, padding, dilation, groups = case
    dt = numpy_dtype(dtype)
    x, w = random_array(rng, xs).astype(dt), random_array(rng, ws).astype(dt)
    p = Conv2dProblem.from_shapes(xs, ws, stride, padding, dilation, groups, dtype)
    bias = random_array(rng, (p.K,)).astype(dt)
    residual = random_array(rng, p.output_shape).astype(dt)
    if layout == "NHWC":
        x, w = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.ascontiguousarray(w.transpose(0, 2, 3, 1))
        residual = np.ascontiguousarray(residual.transpose(0, 2, 3, 1))
    return p, x, w, bias, residual, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def _algos(p, layout="NCHW", allow_tf32=None):
    return [i.name for i in cuconv.algorithms(p, layout=layout, allow_tf32=allow_tf32) if i.ok]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"x{c[0]}w{c[1]}g{c[5]}")
def test_plan_lists_exactly_the_launches_on_record_and_emulator(rng, case):
    _check_plans_equal_launches(rng, case)


# float64 and NHWC (issue 14): a dense, a grouped strided and a depthwise case each.
@pytest.mark.parametrize("dtype,layout", [("float64", "NCHW"), ("float32", "NHWC"), ("float64", "NHWC")])
@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[2], CONV_CASES[3]], ids=["dense", "grouped", "depthwise"])
def test_float64_and_nhwc_plans_list_exactly_the_launches(rng, case, dtype, layout):
    kernels = _check_plans_equal_launches(rng, case, dtype, layout)
    tag = ("f32" if dtype == "float32" else "f64") + ("_nhwc" if layout == "NHWC" else "")
    exact = [k for algo, ks in kernels.items() if "tf32" not in algo and "_tc" not in algo for k in ks]
    assert exact and all(f"_{tag}_" in k for k in exact), kernels


def _check_plans_equal_launches(rng, case, dtype="float32", layout="NCHW") -> dict:
    """Every algorithm that can run ``case`` (and auto): the plan's launches are exactly what the
    record backend sees and what the emulator executes, and a shape-only plan is the same.
    Returns {algo: kernels launched}."""
    p, x, w, bias, residual, args = _conv_inputs(rng, case, dtype, layout)
    algos = ["auto", *_algos(p, layout, allow_tf32=True)]
    assert {"direct", "implicit_gemm"} <= set(algos)
    kernels = {}
    for algo in algos:
        kw = dict(args, algo=algo, activation="relu", layout=layout,
                  allow_tf32=True if "tf32" in algo or "_tc" in algo else None)
        with cuconv.backend("record") as rec:
            plan = cuconv.plan_conv2d(x, w, bias, residual=residual, **kw)
            y = cuconv.conv2d(x, w, bias, residual=residual, **kw)
            assert [(r.kernel, r.grid, r.block, r.shared_mem) for r in rec.launches] == _planned(plan), algo
            assert y.shape == plan.outputs[0].shape
        with using(Recording()) as be:
            out = cuconv.conv2d(x, w, bias, residual=residual, **kw)
        assert be.seen == _planned(plan), algo
        assert np.all(np.isfinite(out)) and out.dtype == x.dtype
        # A shape-only description plans the same launches.
        with cuconv.backend("record"):
            shapes = [type("A", (), dict(shape=a.shape, dtype=a.dtype))() for a in (x, w, bias, residual)]
            from_shapes = cuconv.plan_conv2d(shapes[0], shapes[1], shapes[2], residual=shapes[3], **kw)
        assert _planned(from_shapes) == _planned(plan) and from_shapes.algo == plan.algo
        kernels[algo] = plan.kernels
    return kernels


def test_other_ops_plans_equal_their_launches(rng):
    x = random_array(rng, (2, 3, 9, 8))
    wd, wp = random_array(rng, (6, 1, 3, 3)), random_array(rng, (5, 6, 1, 1))
    wt = random_array(rng, (3, 4, 3, 3))
    a, b = random_array(rng, (37, 23)), random_array(rng, (23, 41))
    calls = [
        (lambda: cuconv.plan_max_pool2d(x, 3, 2, 1, return_indices=True),
         lambda: cuconv.max_pool2d(x, 3, 2, 1, return_indices=True)),
        (lambda: cuconv.plan_avg_pool2d(x, 2, ceil_mode=True), lambda: cuconv.avg_pool2d(x, 2, ceil_mode=True)),
        (lambda: cuconv.plan_global_avg_pool2d(x), lambda: cuconv.global_avg_pool2d(x)),
        (lambda: cuconv.plan_gemm(a, b), lambda: cuconv.gemm(a, b)),
        (lambda: cuconv.plan_im2col(x, 3, 2, 1), lambda: cuconv.im2col(x, 3, 2, 1)),
        (lambda: cuconv.plan_conv_transpose2d(x, wt, stride=2, output_padding=1),
         lambda: cuconv.conv_transpose2d(x, wt, stride=2, output_padding=1)),
        (lambda: cuconv.plan_depthwise_conv2d(x, wd, padding=1), lambda: cuconv.depthwise_conv2d(x, wd, padding=1)),
        (lambda: cuconv.plan_separable_conv2d(x, wd, wp, padding=1, fused=False),
         lambda: cuconv.separable_conv2d(x, wd, wp, padding=1, fused=False)),
    ]
    for plan_of, call in calls:
        with cuconv.backend("record") as rec:
            plan = plan_of()
            call()
            assert [(r.kernel, r.grid, r.block, r.shared_mem) for r in rec.launches] == _planned(plan), plan.op
        with using(Recording()) as be:
            call()
        assert be.seen == _planned(plan), plan.op


def test_plan_run_binds_arrays_and_checks_them(rng):
    p, x, w, bias, residual, args = _conv_inputs(rng, CONV_CASES[0])
    with cuconv.backend("emulator"):
        plan = cuconv.plan_conv2d(x, w, bias, algo="implicit_gemm", **args)
        y = plan.run(x, w, bias)
        np.testing.assert_array_equal(y, cuconv.conv2d(x, w, bias, algo="implicit_gemm", **args))
        out = np.full(plan.outputs[0].shape, np.nan, np.float32)
        assert plan.run(x, w, bias, out=out) is out and np.isfinite(out).all()
        with pytest.raises(ValueError, match="made with 'bias'"):
            plan.run(x, w)
        with pytest.raises(ValueError, match=r"x must be \(2, 3, 9, 7\) float32"):
            plan.run(x[:1].copy(), w, bias)
        with pytest.raises(TypeError, match="no array role 'y'"):
            plan.run(x, w, bias, y=out)
    with cuconv.backend("record", cc=80):
        with pytest.raises(ValueError, match="made for device"):
            plan.run(x, w, bias)


def test_nhwc_tensor_core_plan_needs_no_workspace_under_a_zero_cap():
    """The fp16 NHWC fast path reads x and w in place: no workspace, so a zero cap keeps it
    (it used to be refused with 'needs 139264 bytes', the NCHW pack's figure)."""
    p = Conv2dProblem(2, 16, 14, 14, 32, 3, 3, pad_h=1, pad_w=1, dtype="float16")
    infos = {i.name: i for i in cuconv.algorithms(p, max_workspace_bytes=0, layout="NHWC")}
    tc = infos["implicit_gemm_tc"]
    assert tc.ok and tc.workspace_bytes == 0, tc.reason
    assert [k for k in tc.kernels if "pack" in k] == []
    nchw = {i.name: i for i in cuconv.algorithms(p, max_workspace_bytes=0)}["implicit_gemm_tc"]
    assert not nchw.ok and nchw.workspace_bytes > 0 and "pack" in " ".join(nchw.kernels)
    # auto under the zero cap: on sm_90 the wgmma kernel, whose NHWC path is in place too; elsewhere this one
    assert conv2d_mod.choose_algorithm(p, max_workspace_bytes=0, layout="NHWC") == "implicit_gemm_wgmma"
    with cuconv.backend("record", cc=80):
        assert conv2d_mod.choose_algorithm(p, max_workspace_bytes=0, layout="NHWC") == "implicit_gemm_tc"


def test_cached_calls_replan_nothing_and_read_no_file(rng, monkeypatch):
    p, x, w, bias, residual, args = _conv_inputs(rng, CONV_CASES[1])
    cuconv.clear_plan_caches()
    selected = []
    real_select = conv2d_mod._FRONT.select
    monkeypatch.setattr(conv2d_mod._FRONT, "select", lambda spec, algo: (selected.append(algo),
                                                                          real_select(spec, algo))[1])
    with cuconv.backend("emulator") as be:
        first = cuconv.conv2d(x, w, bias, **args)
        assert len(selected) == 1

        def refuse(*a, **k):
            raise AssertionError("file I/O or hashing on a cached call")
        with monkeypatch.context() as m:
            for target, name in ((pathlib.Path, "read_text"), (pathlib.Path, "stat"), (os, "stat"),
                                 (hashlib, "sha256"), (compile_mod, "load_source")):
                m.setattr(target, name, refuse)
            for _ in range(3):
                np.testing.assert_array_equal(cuconv.conv2d(x, w, bias, **args), first)
        assert len(selected) == 1
        cuconv.conv2d(np.concatenate([x, x]), w, bias, **args)      # another shape: planned once
        assert len(selected) == 2
        assert be.device_key() == (90, 132)


def test_record_backend_compiles_nothing(rng, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the record backend compiled a kernel")
    monkeypatch.setattr(emulator, "RawModule", refuse)
    monkeypatch.setattr(compile_mod, "cupy_module", refuse)
    monkeypatch.setattr(compile_mod, "nvrtc_compile", refuse)
    p, x, w, bias, residual, args = _conv_inputs(rng, CONV_CASES[2])
    with cuconv.backend("record") as rec:
        for algo in _algos(p):
            y = cuconv.conv2d(x, w, bias, algo=algo, **args)
            assert y.shape == p.output_shape
        assert rec.launches


def test_devices_keep_their_own_plans_and_functions(rng):
    """sm_75 has no cp.async: the same fp16 call plans the 2-stage tensor-core configs there and
    the cp.async pipeline on sm_90; the two record backends' function tables never mix."""
    p, x, w, bias, residual, args = _conv_inputs(rng, CONV_CASES[1], "float16", "NHWC")
    kernels = {}
    for cc in (75, 90):
        with cuconv.backend("record", cc=cc) as rec:
            y = cuconv.conv2d(x, w, **args, layout="NHWC")
            assert y.dtype == np.float16
            kernels[cc] = rec.kernels()
            assert set(rec._tables) == {(cc, 132)}
    assert kernels[75] != kernels[90]
    assert all("_s2_" in k for k in kernels[75]) and not any("_s2_" in k for k in kernels[90])
    # The emulator's shared function tables are keyed by device as well.
    for cc in (80, 90):
        with cuconv.backend("emulator", cc=cc) as be:
            cuconv.conv2d(put(be, x), put(be, w), **args, layout="NHWC")
    tables = EmulatorBackend._shared_tables[(None, None, None, None)]
    assert {(80, 132), (90, 132)} <= set(tables)
    # The plan caches are keyed by device too (cc and SM count): every cached plan was made for the
    # device of its key, and a plan made for one device refuses to run on another.
    plans = {}
    for dev in ((75, 132), (90, 132), (90, 66)):
        with cuconv.backend("record", cc=dev[0], sms=dev[1]) as rec:
            plans[dev] = cuconv.plan_conv2d(x, w, **args, layout="NHWC")
            cuconv.conv2d(x, w, **args, layout="NHWC")
            assert plans[dev].device == dev and set(rec._tables) == {dev}
    assert plans[(75, 132)].kernels != plans[(90, 132)].kernels
    cached = conv2d_mod._FRONT.plans.dict_view()

    def device_of(key):       # a plan for misaligned arrays sits under (key, roles)
        return key[0][0] if isinstance(key[-1], frozenset) else key[0]
    devices = {device_of(k) for k in cached}
    assert {(75, 132), (90, 132), (90, 66)} <= devices
    assert all(p.device == device_of(k) for k, p in cached.items())
    with cuconv.backend("record", cc=90):
        with pytest.raises(ValueError, match=r"made for device \(75, 132\)"):
            plans[(75, 132)].run(x, w)


# --------------------------------------------------------------------------- host cost
HOST_LAYERS = {   # (x, w, stride, padding, groups)
    "resnet50_3x3": ((1, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1),
    "stride2_C3": ((2, 3, 9, 7), (10, 3, 3, 3), 2, 1, 1),
    "mobilenet_depthwise": ((1, 144, 56, 56), (144, 1, 3, 3), 1, 1, 144),
}


def _python_calls(fn) -> int:
    """The Python function calls (sys.setprofile's 'call' events) one call of ``fn`` makes."""
    import sys
    calls = [0]

    def count(frame, event, arg):
        if event == "call":
            calls[0] += 1
    sys.setprofile(count)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls[0] - 1          # fn's own frame


@pytest.mark.parametrize("layer", list(HOST_LAYERS))
def test_a_backward_call_costs_no_more_python_than_a_forward_one(rng, layer):
    """Issue 27's measure on the record backend: a first cuconv.grad.conv2d_backward call (plans
    made: dgrad, wgrad and db) costs no more Python calls than conv2d's first call did before the
    backward took the forward's path (472 for ResNet-50's 3x3 layer), nor than a first conv2d on
    that layer; a cached call at most 40 (the plan lookup and the launches)."""
    xs, ws, stride, padding, groups = HOST_LAYERS[layer]
    x, w = random_array(rng, xs), random_array(rng, ws)
    p = Conv2dProblem.from_shapes(xs, ws, stride, padding, 1, groups)
    dy = random_array(rng, p.output_shape)
    forward = lambda: cuconv.conv2d(x, w, None, stride, padding, 1, groups)               # noqa: E731
    backward = lambda: cuconv.grad.conv2d_backward(x, w, dy, stride, padding, 1, groups)  # noqa: E731
    with cuconv.backend("record") as rec:
        rec.keep_args = False
        calls = {}
        for name, fn in (("forward", forward), ("backward", backward)):
            cuconv.clear_plan_caches()
            calls[name] = (_python_calls(fn), _python_calls(fn))
    assert calls["backward"][0] <= 472, calls
    if layer == "resnet50_3x3":
        assert calls["backward"][0] <= calls["forward"][0], calls
    assert calls["forward"][1] <= 40 and calls["backward"][1] <= 40, calls

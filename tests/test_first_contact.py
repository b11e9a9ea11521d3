"""Issue 23, "right on the first GPU": what a first run on a device would have hit, tested without one.

Rows of the issue's table and what tests them here (rows 3, 14 and the launchability sweep have
their own files: tests/test_profile.py, tests/test_gpu_session.py, tests/test_launchability.py;
the bench's shard merge is in tests/test_bench.py):

* 1  arch-aware plans: no plan names a kernel not built for the device; every backend refuses
     such a launch as the GPU does; ``auto`` passes over an algorithm that would.
* 2  int32 overflow in a planner is a ValueError naming the limit, never OverflowError.
* 5  cuconv.torch wraps torch's stream with ``cupy.cuda.Stream.from_external`` (no deprecated
     ExternalStream).
* 6  ``auto`` plans within a quarter of the device's memory, forward and backward, and says so.
* 7  cuconv.torch's outputs and workspaces come from torch's caching allocator.
* 8  one cuFFT plan per (device, stream, shape), in a bounded cache that releases them.
* 9  ml_dtypes in every extra that can meet bfloat16.
* 10 a device below sm_75 is refused once, at the first op call, naming it and the range.
* 11 DLPack first (with the stream handshake); a tensor that requires grad is a TypeError
     pointing to cuconv.torch.
* 13 arch.py's table against the CUDA Programming Guide's.

The GPU-only paths (CuPy's allocator hook and streams, torch's allocator, cuFFT) are tested with
fakes of the CuPy calls here, and for real by the ``gpu`` tests at the end (skipped with a reason
without a device; bench/gpu_session.sh runs them first on a lent machine).
"""
from __future__ import annotations

import gc
import importlib
import pathlib
import sys
import tomllib
import types
import warnings
import weakref

import numpy as np
import pytest
from conftest import GPU, requires_gpu

import cuconv
from cuconv import grad
from cuconv.arch import ARCH_LIMITS, launch_violations
from cuconv.backend import DeviceCaps, FftPlanCache, UnsupportedDeviceError, foreign_cuda_array
from cuconv.ops import conv2d as conv2d_mod
from cuconv.ops import heuristics
from cuconv.ops._algorithm import FPROP, ConvAlgorithm, conv_plan
from cuconv.ops.conv2d import Shape
from cuconv.plan import Launch, PlanError, Ref, launch_all
from cuconv.problem import Conv2dProblem
from cuconv.reference import conv2d_ref
from cuconv.registry import kernel as registered
from cuconv.registry import registered_kernels
from cuconv.testing import random_array

backend_mod = importlib.import_module("cuconv.backend")     # the module (cuconv.backend is also the function)
ROOT = pathlib.Path(__file__).resolve().parents[1]
GiB = 1 << 30


def _shapes(p: Conv2dProblem, dtype=None):
    dt = np.dtype(dtype or p.dtype) if (dtype or p.dtype) != "bfloat16" else _bf16()
    return Shape(p.input_shape, dt), Shape(p.weight_shape, dt), Shape(p.output_shape, dt)


def _bf16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    return np.dtype(ml_dtypes.bfloat16)


# =========================================================================== row 1: arch-aware plans
def test_bf16_bias_gradient_on_sm75_is_refused_at_planning_not_at_launch():
    """The issue's row 1: bf16 bias-only backward on sm_75 planned tc_grad_bias_bf16 (sm_80+) and
    failed at launch, after allocation. Now the plan is refused with the reason, nothing launches."""
    dy = np.empty((2, 4, 5, 3), _bf16())
    x, w = np.empty((2, 3, 5, 3), dy.dtype), np.empty((4, 3, 1, 1), dy.dtype)
    with cuconv.backend("record", cc=75) as rec:
        with pytest.raises(ValueError, match=r"tc_grad_bias_bf16 is not built for sm_75: it targets sm_80"):
            grad.conv2d_bias(dy)
        with pytest.raises(ValueError, match=r"tc_grad_bias_bf16 is not built for sm_75"):
            grad.conv2d_backward(x, w, dy, output_mask=(False, False, True))
        assert rec.launches == []
    with cuconv.backend("record", cc=80) as rec:
        grad.conv2d_bias(dy)
        assert rec.kernels() == ["tc_grad_bias_bf16"]


@pytest.mark.parametrize("name", ["record", "emulator"])
def test_cpu_backends_refuse_a_kernel_not_built_for_their_arch_as_the_gpu_does(name):
    """A launch of an entry its device cannot load is a RuntimeError on every backend (the GPU's
    cupy_function raised it; the record and emulator backends launched it)."""
    entry = registered("tc_grad_bias_bf16")
    ln = Launch(entry, (4, 1, 1), (256, 1, 1), (Ref("dy"), Ref("db"), np.int32(1), np.int32(4), np.int32(9)))
    dy, db = np.zeros((1, 4, 3, 3), _bf16()), np.zeros(4, _bf16())
    with cuconv.backend(name, cc=75) as be:
        with pytest.raises(RuntimeError, match=r"tc_grad_bias_bf16 is not built for sm_75"):
            launch_all(be, [ln], {"dy": dy, "db": db})
    with cuconv.backend("record", cc=80) as be:
        launch_all(be, [ln], {"dy": dy, "db": db})
        assert be.kernels() == ["tc_grad_bias_bf16"]


@pytest.mark.parametrize("name", ["record", "emulator"])
def test_cpu_backends_check_launch_limits_on_every_launch(name):
    """The driver's launch checks on the CPU backends: a block of 2048 threads, a grid.y past 65535 or
    dynamic shared memory past the function's opt-in is a RuntimeError naming the limit."""
    entry = registered("tc_grad_bias_f16")
    args = (Ref("dy"), Ref("db"), np.int32(1), np.int32(4), np.int32(9))
    env = {"dy": np.zeros((1, 4, 3, 3), np.float16), "db": np.zeros(4, np.float16)}
    with cuconv.backend(name) as be:
        for grid, block, smem, msg in (((4, 1, 1), (2048, 1, 1), 0, "2048 threads per block exceed 1024"),
                                       ((4, 70000, 1), (256, 1, 1), 0, r"grid.y = 70000 exceeds 65535"),
                                       ((4, 1, 1), (256, 1, 1), 64 << 10, "dynamic shared memory"),
                                       ((0, 1, 1), (256, 1, 1), 0, "zero dimension")):
            with pytest.raises(RuntimeError, match=msg):
                launch_all(be, [Launch(entry, grid, block, args, smem)], env)


def _fake_algorithm(label: str) -> ConvAlgorithm:
    """An algorithm whose plan is one launch of the registered kernel ``label``."""
    def plan(spec):
        return conv_plan(spec, "fake", [Launch(registered(label), (1, 1, 1), (128, 1, 1), ())])
    return ConvAlgorithm("fake", plan, dtypes=("float16",))


def test_make_plan_refuses_a_kernel_not_built_for_the_device_and_auto_takes_the_next_rule(monkeypatch):
    """The generic check every algorithm's plan passes (ConvAlgorithm.make_plan): a plan naming the
    sm_90a-only wgmma kernel is a PlanError on sm_80 and fine on sm_90; ``auto`` with that algorithm
    as its first rule takes the next rule on sm_80."""
    wgmma = next(e.label for e in registered_kernels() if e.archs == ("sm_90a",))
    fake = _fake_algorithm(wgmma)
    p = Conv2dProblem.from_shapes((2, 16, 9, 9), (16, 16, 3, 3), 1, 1, dtype="float16")
    for cc, ok in ((80, False), (90, True)):
        with cuconv.backend("record", cc=cc):
            spec = conv2d_mod.spec_of(p)
            if ok:
                assert fake.make_plan(spec).kernels == [wgmma]
            else:
                with pytest.raises(PlanError, match=f"{wgmma} is not built for sm_80"):
                    fake.make_plan(spec)
    monkeypatch.setitem(conv2d_mod.ALGORITHMS, "fake", fake)
    rules = (heuristics.Rule("fake", lambda s: True, "test"), *heuristics.RULES)
    monkeypatch.setattr(heuristics, "RULES", rules)
    monkeypatch.setitem(heuristics.RULES_BY_PASS, FPROP, rules)
    conv2d_mod._SELECTED.clear()
    try:
        with cuconv.backend("record", cc=80):
            plan = cuconv.plan_conv2d(*_shapes(p)[:2], padding=1)
        assert plan.algo == "implicit_gemm_tc" and wgmma not in plan.kernels
        with cuconv.backend("record", cc=90):
            assert cuconv.plan_conv2d(*_shapes(p)[:2], padding=1).algo == "fake"
    finally:
        conv2d_mod._SELECTED.clear()


def test_launch_violations_match_the_drivers_rules():
    assert launch_violations("sm_90", (1, 1, 1), (1024, 1, 1)) == []
    assert launch_violations("sm_90", (2 ** 31 - 1, 65535, 65535), (32, 32, 1)) == []
    assert launch_violations("sm_90", (1, 1, 1), (32, 1, 65))           # block.z <= 64
    # 48 KiB without opt-in; with opt-in up to the arch's per-block maximum (static included).
    assert launch_violations("sm_80", (1, 1, 1), (128, 1, 1), 48 << 10) == []
    assert launch_violations("sm_80", (1, 1, 1), (128, 1, 1), (48 << 10) + 1)
    assert launch_violations("sm_80", (1, 1, 1), (128, 1, 1), 100 << 10, opt_in_smem=100 << 10) == []
    assert launch_violations("sm_86", (1, 1, 1), (128, 1, 1), 100 << 10, opt_in_smem=100 << 10)
    assert launch_violations("sm_80", (1, 1, 1), (128, 1, 1), 40 << 10, static_smem=9 << 10)
    # 255 registers x 256 threads = 65280 < 64 K fits; x 512 does not.
    assert launch_violations("sm_90", (1, 1, 1), (256, 1, 1), registers=255) == []
    assert any("registers" in r for r in launch_violations("sm_90", (1, 1, 1), (512, 1, 1), registers=255))


# =========================================================================== row 10: below sm_75
def test_a_device_below_sm75_fails_once_at_the_first_op_call_naming_it_and_the_range():
    x, w = np.zeros((1, 3, 8, 8), np.float32), np.zeros((4, 3, 3, 3), np.float32)
    with cuconv.backend("record", cc=70) as rec:
        for call in (lambda: cuconv.conv2d(x, w), lambda: cuconv.plan_conv2d(x, w),
                     lambda: grad.conv2d_input(x.shape, w, np.zeros((1, 4, 6, 6), np.float32)),
                     lambda: cuconv.max_pool2d(x, 2)):
            with pytest.raises(UnsupportedDeviceError,
                               match=r"compute capability 7\.0 \(sm_70\).*built for compute capability 7\.5 "
                                     r"\(Turing\) to 12\.0 \(sm_75, .*sm_120\)"):
                call()
        assert rec.launches == []


class _FakeDevice:
    def __init__(self, cc, total, free):
        self.compute_capability = str(cc)
        self.attributes = {"MultiProcessorCount": 80}
        self.mem_info = (free, total)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _fake_cupy(cc=70, total=32 * GiB, free=30 * GiB, name=b"Tesla V100-SXM2-32GB"):
    runtime = types.SimpleNamespace(getDevice=lambda: 0, getDeviceCount=lambda: 1,
                                    getDeviceProperties=lambda i: {"name": name})
    cuda = types.SimpleNamespace(Device=lambda i=0: _FakeDevice(cc, total, free), runtime=runtime)
    return types.SimpleNamespace(cuda=cuda, ndarray=type("ndarray", (), {}))


def _gpu_backend_with(monkeypatch, fake):
    monkeypatch.setitem(sys.modules, "cupy", fake)
    be = backend_mod.CupyBackend()
    be._runtime, be._checked, be.array_type = fake.cuda.runtime, True, fake.ndarray
    return be


def test_gpu_backend_caps_read_memory_and_refuse_a_v100(monkeypatch):
    """CupyBackend.caps on a fake CuPy: cc, SMs, total and free memory from the device; below sm_75
    UnsupportedDeviceError naming the device (never cached: every call says it)."""
    be = _gpu_backend_with(monkeypatch, _fake_cupy(cc=70))
    for _ in range(2):
        with pytest.raises(UnsupportedDeviceError, match=r"CUDA device 0: Tesla V100-SXM2-32GB has compute capability 7\.0"):
            be.caps()
    be = _gpu_backend_with(monkeypatch, _fake_cupy(cc=89, total=24 * GiB, free=20 * GiB, name=b"NVIDIA L4"))
    caps = be.caps()
    assert (caps.cc, caps.sms, caps.name, caps.memory_bytes, caps.free_bytes) == (89, 80, "NVIDIA L4", 24 * GiB,
                                                                                20 * GiB)
    assert caps.workspace_cap == 6 * GiB
    assert caps == DeviceCaps(89, 80, "NVIDIA L4", 24 * GiB, 1)        # free memory is not part of a plan's key


def test_check_gpu_and_the_bench_say_once_that_the_device_is_unsupported(monkeypatch, capsys):
    from cuconv.bench.runner import BenchOptions, Runner
    from cuconv.cli import main as cli_main
    from cuconv.commands import check
    fake = _fake_cupy(cc=60, name=b"Tesla P100-PCIE-16GB")
    be = _gpu_backend_with(monkeypatch, fake)
    monkeypatch.setattr(backend_mod, "_DEFAULT_CUPY", be)
    monkeypatch.setattr(backend_mod, "gpu_available", lambda: True)
    monkeypatch.setattr(check, "gpu_available", lambda: True)
    assert "Tesla P100-PCIE-16GB has compute capability 6.0" in backend_mod.gpu_unsupported_reason(0)
    assert cli_main(["check", "--gpu"]) == check.EXIT_NO_GPU
    err = capsys.readouterr().err
    assert err.count("Tesla P100-PCIE-16GB has compute capability 6.0 (sm_60)") == 1 and "nothing was checked" in err
    monkeypatch.setattr("cuconv.bench.runner.gpu_available", lambda: True)
    monkeypatch.setattr("cuconv.bench.runner.device_report", lambda: types.SimpleNamespace(devices=[object()]))
    with pytest.raises(ValueError, match="Tesla P100-PCIE-16GB has compute capability 6.0"):
        Runner(BenchOptions(progress=False))


# =========================================================================== row 6 / item 2: memory
# An fp16 layer of 2 channels a group at batch 64 (the EfficientNet-B7 depthwise layer, 2
# channels a group, twice the batch): the tensor cores' NHWC pack pads each group to 8 channels,
# 8.2 GiB. The depthwise layer itself took that path until issue 25 item 1 gave 16-bit depthwise
# its own kernels (no workspace: checked below), so the cap is shown on this grouped layer.
CAP_LAYER = ((64, 192, 300, 300), (192, 2, 3, 3), 96)


def test_caps_carry_memory_and_auto_plans_within_a_quarter_of_it():
    """The fp16 grouped layer above: the tensor-core kernel's NHWC pack (8.2 GiB) fits an 80 GiB
    device's default cap (20 GiB), not a 24 GiB L4's (6 GiB), where auto takes the next rule, and
    each plan says which cap applied; the EfficientNet-B7 fp16 depthwise layer takes the depthwise
    kernels with no workspace on both. VGG-16's first 3x3 at batch 256: Winograd's 13.8 GiB
    becomes batch chunks within a 16 GiB T4's 4 GiB. An explicit max_workspace_bytes is the cap
    instead."""
    xs, ws, groups = CAP_LAYER
    p = Conv2dProblem.from_shapes(xs, ws, 2, 1, groups=groups, dtype="float16")
    x, w, _ = _shapes(p)
    dwp = Conv2dProblem.from_shapes((32, 192, 300, 300), (192, 1, 3, 3), 2, 1, groups=192, dtype="float16")
    dx_, dw_, _ = _shapes(dwp)
    plans = {}
    for memory in (80 * GiB, 24 * GiB):
        with cuconv.backend("record", memory_bytes=memory) as be:
            assert be.caps().memory_bytes == memory and be.caps().workspace_cap == memory // 4
            plans[memory] = cuconv.plan_conv2d(x, w, stride=2, padding=1, groups=groups)
            depthwise = cuconv.plan_conv2d(dx_, dw_, stride=2, padding=1, groups=192)
            assert depthwise.algo == "depthwise" and depthwise.workspace_bytes == 0
    big, small = plans[80 * GiB], plans[24 * GiB]
    assert big.algo == "implicit_gemm_tc" and 6 * GiB < big.workspace_bytes <= 20 * GiB
    assert small.algo == "implicit_gemm_tc_simple" and small.workspace_bytes <= 6 * GiB
    assert big.description.endswith("[within the default workspace cap 21474836480 bytes (20 GiB: 1/4 of the "
                                    "device's 80 GiB)]")
    assert small.description.endswith("[within the default workspace cap 6442450944 bytes (6 GiB: 1/4 of the "
                                      "device's 24 GiB)]")
    vgg = Conv2dProblem.from_shapes((256, 64, 224, 224), (64, 64, 3, 3), 1, 1)
    vx, vw, _ = _shapes(vgg)
    with cuconv.backend("record"):
        roomy = cuconv.plan_conv2d(vx, vw, padding=1)
        capped = cuconv.plan_conv2d(vx, vw, padding=1, max_workspace_bytes=1 << 30)
        assert backend_mod.current_backend().caps().memory_bytes == 80 * GiB == backend_mod.EMULATED_MEMORY_BYTES
    with cuconv.backend("record", memory_bytes=16 * GiB):
        t4 = cuconv.plan_conv2d(vx, vw, padding=1)
    assert roomy.workspace_bytes > 13 * GiB and t4.workspace_bytes <= 4 * GiB
    assert capped.workspace_bytes <= 1 << 30 and capped.description.endswith("[within the max_workspace_bytes=1073741824]")


def test_backward_follows_the_same_cap():
    """The fp16 grouped layer of CAP_LAYER: the tensor-core dgrad's NHWC pack would take 8+ GiB; on a
    24 GiB L4 (6 GiB cap) auto runs the analytic kernel instead, within the cap, and the plan says
    so. Where even that does not fit, a ValueError names the cap."""
    xs, ws, groups = CAP_LAYER
    p = Conv2dProblem.from_shapes(xs, ws, 2, 1, groups=groups, dtype="float16")
    x, w, dy = _shapes(p)
    with cuconv.backend("record", memory_bytes=80 * GiB):
        roomy = grad.plan_conv2d_backward(x, w, dy, stride=2, padding=1, groups=groups)
    with cuconv.backend("record", memory_bytes=24 * GiB):
        tight = grad.plan_conv2d_backward(x, w, dy, stride=2, padding=1, groups=groups)
    assert roomy.workspace_bytes > 6 * GiB and roomy.algo.startswith("implicit_gemm_tc+")
    assert tight.workspace_bytes <= 6 * GiB and tight.algo.startswith("implicit_gemm_tc_simple+")
    assert "within the default workspace cap 6442450944 bytes" in tight.description
    with cuconv.backend("record", memory_bytes=2 * GiB):
        with pytest.raises(ValueError, match=r"within the default workspace cap 536870912 bytes .*"
                                             r"implicit_gemm_tc_simple: needs \d+ bytes of workspace, more than "
                                             r"max_workspace_bytes=536870912"):
            grad.plan_conv2d_input(p.input_shape, w, dy, stride=2, padding=1, groups=groups)


def test_memory_bytes_is_a_backend_option_and_keys_the_plans():
    with pytest.raises(ValueError, match="memory_bytes"):
        with cuconv.backend("record", memory_bytes=0):
            pass
    with pytest.raises(ValueError, match="cupy backend takes none"):
        with cuconv.backend("cupy", memory_bytes=GiB):
            pass
    with cuconv.backend("record") as a, cuconv.backend("record", memory_bytes=16 * GiB) as b, \
            cuconv.backend("emulator", memory_bytes=16 * GiB) as c:
        assert a.device_key() == (90, 132) and b.device_key() == c.device_key() == (90, 132, 16 * GiB)


# =========================================================================== row 2: int32 overflow
def test_int32_overflow_is_a_value_error_naming_the_limit():
    """The issue's call: db fused into the wgrad of a 50000x50000 image (P·Q > 2**31-1)."""
    f32 = np.dtype(np.float32)
    x, w, dy = Shape((1, 1, 50000, 50000), f32), Shape((4, 1, 3, 3), f32), Shape((1, 4, 50000, 50000), f32)
    with cuconv.backend("record"):
        with pytest.raises(ValueError, match=r"P·Q = 2500000000 does not fit the kernel's 32-bit int \(at most 2\*\*31-1"):
            grad.plan_conv2d_backward(x, w, dy, padding=1)
        infos = grad.algorithms(Conv2dProblem.from_shapes(x.shape, w.shape, 1, 1), "weight", bias=True)
    assert not any(i.ok for i in infos) and "2**31-1" in infos[0].reason


@pytest.mark.parametrize("shape", [((1, 1, 70000, 70000), (2, 1, 3, 3)), ((70000, 1, 200, 200), (8, 1, 1, 1)),
                                   ((1, 70000, 9, 9), (70000, 1, 3, 3)), ((3, 2, 46341, 46341), (2, 2, 1, 1))])
def test_huge_problems_plan_or_refuse_with_value_errors_on_every_path(shape):
    """Every conv2d algorithm, the backward plans and the pools on problems past 32-bit sizes: a plan or
    a ValueError/TypeError, never OverflowError (NumPy's int32 conversion)."""
    xs, ws = shape
    groups = xs[1] if ws[1] == 1 and xs[1] == ws[0] else 1
    p = Conv2dProblem.from_shapes(xs, ws, 1, 1, groups=groups)
    x, w, dy = _shapes(p)
    calls = [lambda a=a: cuconv.plan_conv2d(x, w, padding=1, groups=groups, algo=a) for a in ["auto", *conv2d_mod.ALGORITHMS]]
    calls += [lambda: grad.plan_conv2d_backward(x, w, dy, padding=1, groups=groups),
              lambda: grad.plan_conv2d_bias(dy)]
    calls += [lambda: grad.algorithms(p, which) for which in grad.WHICH]
    with cuconv.backend("record"):
        for call in calls:
            try:
                call()
            except (ValueError, TypeError):
                pass


# =========================================================================== row 11: DLPack first
class _FakeDlpack:
    def __init__(self, device_type=2, requires_grad=False):
        self.device_type, self.requires_grad, self.used = device_type, requires_grad, []

    def __dlpack__(self, stream=None):
        return "capsule"

    def __dlpack_device__(self):
        return (self.device_type, 0)

    @property
    def __cuda_array_interface__(self):
        self.used.append("cai")
        return {}


def _recording_cupy():
    calls = []
    return types.SimpleNamespace(from_dlpack=lambda a: calls.append(("dlpack", a)) or "from_dlpack",
                                 asarray=lambda a: calls.append(("cai", a)) or "asarray"), calls


def test_foreign_arrays_go_through_dlpack_first_and_grad_tensors_point_to_cuconv_torch():
    cupy, calls = _recording_cupy()
    t = _FakeDlpack()
    assert foreign_cuda_array(cupy, t, "input") == "from_dlpack" and calls == [("dlpack", t)] and t.used == []
    with pytest.raises(TypeError, match=r"input is a tensor that requires grad.*cuconv\.torch"):
        foreign_cuda_array(cupy, _FakeDlpack(requires_grad=True), "input")
    with pytest.raises(TypeError, match=r"weight lives on DLPack device type 1 \(1 is the CPU\)"):
        foreign_cuda_array(cupy, _FakeDlpack(device_type=1), "weight")
    cai = types.SimpleNamespace(__cuda_array_interface__={})
    assert foreign_cuda_array(cupy, cai, "bias") == "asarray"
    with pytest.raises(TypeError, match="must be a cupy.ndarray or a CUDA array"):
        foreign_cuda_array(cupy, object(), "x")
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="requires grad"):
        foreign_cuda_array(cupy, torch.zeros(2, requires_grad=True), "input")


# =========================================================================== rows 5, 7: the torch bridge
def test_cuda_tensors_run_on_torchs_stream_via_the_stream_protocol_with_torchs_allocator(monkeypatch):
    """running_on(cuda:1) on fakes of the CuPy and torch CUDA calls: torch's current stream wrapped by
    Stream.from_external (never the deprecated ExternalStream), the device entered, and a CuPy
    allocator scoped to the block that allocates torch tensors."""
    torch = pytest.importorskip("torch")
    from cuconv.torch import _bridge
    log = []

    class Ctx:
        def __init__(self, what):
            self.what = what

        def __enter__(self):
            log.append(("enter", self.what))

        def __exit__(self, *exc):
            log.append(("exit", self.what))

    stream = object()
    cuda = types.SimpleNamespace(Device=lambda i: Ctx(("device", i)),
                                 Stream=types.SimpleNamespace(from_external=lambda s: Ctx(("stream", s))),
                                 ExternalStream=lambda *a: pytest.fail("the deprecated ExternalStream was used"),
                                 using_allocator=lambda alloc: Ctx(("allocator", alloc)))
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda i: stream if i == 1 else None)
    monkeypatch.setattr(_bridge, "gpu_backend", lambda: backend_mod.RecordBackend())
    with _bridge.running_on(torch.device("cuda", 1)):
        log.append("body")
    whats = [w for kind, w in log[:3]]
    assert whats[0] == ("device", 1) and whats[1] == ("stream", stream) and whats[2][0] == "allocator"
    assert log[3] == "body" and [k for k, _ in log[4:]] == ["exit"] * 3
    assert "ExternalStream" not in (ROOT / "src" / "cuconv" / "torch" / "_bridge.py").read_text()


def test_torch_allocator_hands_out_torch_memory_kept_alive_by_cupys_pointer():
    """The allocator cuconv.torch scopes to a CUDA call, on fakes of CuPy's memory classes and a CPU
    device: each allocation is a torch uint8 tensor of that size, owned by the UnownedMemory, released
    to torch when CuPy drops the pointer."""
    torch = pytest.importorskip("torch")
    from cuconv.torch._bridge import torch_allocator

    class UnownedMemory:
        def __init__(self, ptr, size, owner, device_id):
            self.ptr, self.size, self.owner, self.device_id = ptr, size, owner, device_id

    cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(UnownedMemory=UnownedMemory,
                                                            MemoryPointer=lambda mem, off: (mem, off)))
    alloc = torch_allocator(cupy, torch.device("cpu"))
    mem, offset = alloc(1000)
    assert offset == 0 and mem.size == 1000 and isinstance(mem.owner, torch.Tensor)
    assert mem.owner.dtype == torch.uint8 and mem.owner.numel() == 1000 and mem.ptr == mem.owner.data_ptr()
    alive = weakref.ref(mem.owner)
    del mem
    gc.collect()
    assert alive() is None
    assert alloc(0)[0].size == 0


# =========================================================================== row 8: cuFFT plans
def test_fft_plan_cache_is_bounded_lru_and_releases_what_it_drops():
    class Plan:
        pass
    cache = FftPlanCache(limit=2)
    plans = {k: Plan() for k in "abc"}
    refs = {k: weakref.ref(v) for k, v in plans.items()}
    cache.put("a", plans["a"])
    cache.put("b", plans["b"])
    assert cache.get("a") is plans["a"]           # a is now the most recent
    cache.put("c", plans["c"])
    assert cache.keys() == ["a", "c"] and cache.get("b") is None
    del plans
    gc.collect()
    assert refs["b"]() is None and refs["a"]() is not None
    assert cache.clear() == 2 and len(cache) == 0
    gc.collect()
    assert refs["a"]() is None and refs["c"]() is None


def test_gpu_fft_keeps_one_plan_per_device_stream_and_shape(monkeypatch):
    """CupyBackend.fft on fakes: the same shape on two streams builds two plans (a plan's work area
    and cufftSetStream are per plan), the same stream reuses its plan; nothing from cupy.fft's shared
    cache."""
    made, runs = [], []

    class FakePlan:
        def __init__(self, kind, batch, lh, lw):
            made.append((kind, batch, lh, lw))

        def fft(self, src, dst, direction):
            runs.append((id(self), direction))

    current = types.SimpleNamespace(ptr=0)
    fake = _fake_cupy(cc=90)
    fake.cuda.get_current_stream = lambda: current
    fake.cuda.cufft = types.SimpleNamespace(CUFFT_FORWARD=-1, CUFFT_INVERSE=1)
    monkeypatch.setitem(sys.modules, "cupy.cuda", fake.cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.cufft", fake.cuda.cufft)
    be = _gpu_backend_with(monkeypatch, fake)
    monkeypatch.setattr(backend_mod, "cufft_plan", FakePlan)
    src, dst = np.zeros((3, 8, 6), np.float32), np.zeros((3, 8, 4), np.complex64)
    for stream in (11, 22, 11, 22):
        current.ptr = stream
        be.fft("r2c", src, dst)
    assert made == [("r2c", 3, 8, 6)] * 2 and len({r[0] for r in runs}) == 2
    assert sorted(k[1] for k in be._fft_plans.keys()) == [11, 22]
    assert be.release_fft_plans() == 2 and len(be._fft_plans) == 0


# =========================================================================== row 9: extras
def test_every_extra_that_can_meet_bfloat16_installs_ml_dtypes():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name in ("cuda12", "cuda13", "torch", "bf16", "test"):
        assert any(d.replace("_", "-").startswith("ml-dtypes") for d in extras[name]), name


# =========================================================================== row 13: the arch table
# Transcribed from the CUDA C++ Programming Guide's "Technical Specifications per Compute
# Capability" table: max threads / warps / blocks per SM, shared memory per SM and per block
# (opt-in), 32-bit registers per SM, registers per thread.
GUIDE = {
    "sm_75": (1024, 32, 16, 64 << 10, 64 << 10, 64 << 10, 255),
    "sm_80": (2048, 64, 32, 164 << 10, 163 << 10, 64 << 10, 255),
    "sm_86": (1536, 48, 16, 100 << 10, 99 << 10, 64 << 10, 255),
    "sm_89": (1536, 48, 24, 100 << 10, 99 << 10, 64 << 10, 255),
    "sm_90": (2048, 64, 32, 228 << 10, 227 << 10, 64 << 10, 255),
    "sm_100": (2048, 64, 32, 228 << 10, 227 << 10, 64 << 10, 255),
    "sm_120": (1536, 48, 32, 100 << 10, 99 << 10, 64 << 10, 255),
}


@pytest.mark.parametrize("arch", sorted(GUIDE))
def test_arch_table_matches_the_programming_guide(arch):
    lim = ARCH_LIMITS[arch]
    got = tuple(lim[k] for k in ("max_threads_per_sm", "max_warps_per_sm", "max_blocks_per_sm", "smem_per_sm",
                                 "max_smem_per_block", "regs_per_sm", "max_regs_per_thread"))
    assert got == GUIDE[arch]


# =========================================================================== on a GPU
@pytest.mark.gpu
@requires_gpu
def test_gpu_caps_report_memory_and_the_workspace_cap():
    import cupy
    with cuconv.backend("cupy") as be:
        caps = be.caps()
        free, total = cupy.cuda.Device().mem_info
    assert caps.memory_bytes == total and 0 < caps.free_bytes <= total and caps.workspace_cap == total // 4
    x = cupy.asarray(random_array(np.random.default_rng(0), (2, 16, 9, 9)))
    w = cupy.asarray(random_array(np.random.default_rng(1), (8, 16, 3, 3)))
    plan = cuconv.plan_conv2d(x, w, padding=1)
    assert f"default workspace cap {total // 4} bytes" in plan.description


@pytest.mark.gpu
@requires_gpu
def test_gpu_fft_plans_are_per_stream_and_released():
    import cupy
    rng = np.random.default_rng(2)
    x, w = random_array(rng, (2, 8, 20, 20)), random_array(rng, (8, 8, 7, 7))
    ref = conv2d_ref(x, w, padding=3)
    cuconv.release_fft_plans()
    outs = []
    streams = [cupy.cuda.Stream(non_blocking=True) for _ in range(2)]
    for s in streams:
        with s:
            outs.append(cuconv.conv2d(cupy.asarray(x), cupy.asarray(w), padding=3, algo="fft"))
    for s in streams:
        s.synchronize()
    keys = backend_mod._DEFAULT_CUPY._fft_plans.keys()
    assert {k[1] for k in keys} == {s.ptr for s in streams}
    np.testing.assert_allclose(cupy.asnumpy(outs[0]), cupy.asnumpy(outs[1]), rtol=0, atol=0)
    assert np.abs(cupy.asnumpy(outs[0]) - ref).max() / np.abs(ref).max() < 1e-4
    assert cuconv.release_fft_plans() == len(keys) > 0


def _cuda_torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA build of PyTorch")
    return torch


@pytest.mark.gpu
@requires_gpu
def test_gpu_tensors_that_require_grad_point_to_cuconv_torch():
    torch = _cuda_torch()
    x = torch.randn(1, 3, 8, 8, device="cuda", requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device="cuda")
    with cuconv.backend("cupy"):
        with pytest.raises(TypeError, match=r"requires grad.*cuconv\.torch"):
            cuconv.conv2d(x, w)
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):        # DLPack: cupy's current stream waits for torch's
            y = cuconv.conv2d(x.detach(), w)
    ref = torch.nn.functional.conv2d(x.detach(), w)
    torch.cuda.synchronize()
    assert torch.allclose(torch.from_dlpack(y), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@requires_gpu
def test_gpu_cuconv_torch_memory_is_torchs_and_no_deprecation_warning():
    torch = _cuda_torch()
    import cupy
    import cuconv.torch as ct
    pool = cupy.get_default_memory_pool()
    x = torch.randn(4, 16, 32, 32, device="cuda")
    w = torch.randn(32, 16, 3, 3, device="cuda")
    ct.conv2d(x, w, padding=1)                    # compile and plan outside the measurement
    torch.cuda.synchronize()
    before_torch, before_pool = torch.cuda.memory_allocated(), pool.used_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        y = ct.conv2d(x, w, padding=1)
    assert torch.cuda.memory_allocated() - before_torch >= y.numel() * y.element_size()
    assert pool.used_bytes() == before_pool
    del y
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before_torch

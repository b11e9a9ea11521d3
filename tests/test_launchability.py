"""Launchability (issue 23): every conv/pool layer of every landmark model in cuconv.models —
forward (auto), backward (dx, dW, db), the bias gradient alone, the pools and their gradients; batch
sizes 1, 32 and 256 rotated over the (model, dtype) cells; float32, float16, bfloat16, float64 —
planned on the record backend for a real device of each arch of the compile matrix, and every
launch checked against that arch's limits with the compile matrix's registers and static shared
memory (cuconv.launchability). Then random problems on random devices, every algorithm.

What passes: no launch a device would refuse (dimensions, threads, shared memory with and without
opt-in, registers × threads, built-for-arch), no ``auto`` workspace above a quarter of the
device's memory, and nothing raised while planning but ValueError/TypeError (refusals).
"""
from __future__ import annotations

import numpy as np
import pytest

import cuconv
from cuconv import grad, launchability
from cuconv.cli import main as cli_main
from cuconv.commands import check
from cuconv.ops import conv2d as conv2d_mod
from cuconv.ops.conv2d import Shape
from cuconv.plan import Launch, Plan
from cuconv.problem import Conv2dProblem
from cuconv.registry import ARCHS
from cuconv.registry import kernel as registered


@pytest.mark.parametrize("arch", ARCHS)
def test_every_landmark_layer_launches_on_each_arch(arch):
    report = launchability.sweep(archs=(arch,))
    assert report.ok, "\n".join(report.lines())
    assert report.plans > 1500 and report.launches > report.plans and len(report.kernels) > 30
    assert not report.no_resources, report.no_resources       # registers and static smem were checked
    # The refusals are reasons, not crashes: dtypes a pool takes not, bf16 before sm_80, ...
    assert all(isinstance(k[1], str) and k[1] for k in report.refusals)


def test_the_checker_finds_what_a_device_would_refuse():
    """A planted plan: a kernel built for sm_80+ on sm_75, a block of 2048 threads, 100 KiB of dynamic
    shared memory for an entry registered without any, an auto workspace over the cap."""
    report = launchability.Report(("sm_75",))
    checker = launchability.Checker("sm_75", report, resources=False)
    bf16, f16 = registered("tc_grad_bias_bf16"), registered("tc_grad_bias_f16")
    plan = Plan("conv2d", "auto", None, (Launch(bf16, (1, 1, 1), (256, 1, 1), ()),
                                         Launch(f16, (1, 1, 1), (2048, 1, 1), ()),
                                         Launch(f16, (1, 1, 1), (256, 1, 1), (), 100 << 10)), (), (),
                workspace_bytes=5 << 30)
    launchability._check_call(report, checker, "sm_75", "planted", lambda: plan, True, 4 << 30)
    reasons = [f.reason for f in report.violations]
    assert any("not built for sm_75" in r for r in reasons)
    assert any("2048 threads per block" in r for r in reasons)
    assert any("more than the entry's registered 0" in r for r in reasons)
    assert len(report.over_cap) == 1 and not report.ok

    def crash():
        raise OverflowError("int32")
    launchability._check_call(report, checker, "sm_75", "crash", crash, False, 0)
    assert report.errors[-1].reason == "OverflowError: int32"


def test_sample_batch_rotates_every_batch_through_every_model():
    for im in range(5):
        seen = {launchability.sample_batch(im, ia, idt) for ia in range(len(ARCHS))
                for idt in range(len(launchability.DTYPES))}
        assert seen == set(launchability.BATCHES)


def _random_problem(rng):
    dtype = rng.choice(["float32", "float16", "bfloat16", "float64"])
    groups = int(rng.choice([1, 1, 1, 2, 4, 0]))       # 0: depthwise
    c = int(rng.choice([1, 3, 8, 16, 24, 64, 96, 256, 512]))
    if groups == 0:
        groups, k = c, c * int(rng.choice([1, 2]))
    else:
        c = max(c - c % groups, groups)
        k = groups * int(rng.choice([1, 4, 8, 32, 64, 128]))
    r = int(rng.choice([1, 3, 5, 7, 11]))
    s = int(rng.choice([r, r, 1, 3]))
    h = int(rng.integers(max(r, 1), 300))
    w = int(rng.integers(max(s, 1), 300))
    stride, dilation = int(rng.choice([1, 1, 2, 3])), int(rng.choice([1, 1, 2]))
    pad = int(rng.integers(0, r // 2 + 2))
    n = int(rng.choice([1, 2, 5, 32, 128]))
    try:
        return Conv2dProblem.from_shapes((n, c, h, w), (k, c // groups, r, s), stride, pad, dilation, groups, dtype)
    except ValueError:
        return None


def test_random_problems_on_random_devices_plan_every_algorithm_launchably():
    """Shapes and devices the model sweep never meets: every conv2d algorithm, auto, and the backward
    plans of 150 random problems (odd sizes, strides, dilation, groups, depthwise, every dtype) on
    devices of random arch, SM count and memory."""
    rng = np.random.default_rng(23)
    names = ["auto", *conv2d_mod.ALGORITHMS]
    checked = 0
    for _ in range(150):
        p = _random_problem(rng)
        if p is None:
            continue
        arch = str(rng.choice(ARCHS))
        sms, memory = int(rng.integers(8, 200)), int(rng.choice([4, 8, 16, 24, 48, 80, 141])) << 30
        dt = np.dtype(p.dtype) if p.dtype != "bfloat16" else np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
        x, w, dy = Shape(p.input_shape, dt), Shape(p.weight_shape, dt), Shape(p.output_shape, dt)
        kw = dict(stride=p.stride_h, padding=p.pad_h, dilation=p.dilation_h, groups=p.groups)
        report = launchability.Report((arch,))
        checker = launchability.Checker(arch, report, resources=False)
        with cuconv.backend("record", cc=int(arch[3:]), sms=sms, memory_bytes=memory) as be:
            cap = be.caps().workspace_cap
            for algo in names:
                launchability._check_call(report, checker, arch, f"{p.describe()} {p.dtype} {algo}",
                                          lambda a=algo: cuconv.plan_conv2d(x, w, algo=a, **kw), algo == "auto", cap)
            launchability._check_call(report, checker, arch, f"{p.describe()} {p.dtype} backward",
                                      lambda: grad.plan_conv2d_backward(x, w, dy, **kw), True, cap)
        assert report.ok, "\n".join(report.lines())
        checked += report.plans
    assert checked > 300


def test_check_launchability_command(monkeypatch, capsys):
    calls = []

    def fake_sweep(archs, all_batches=False, devices=None):
        calls.append((archs, all_batches, devices))
        r = launchability.Report(tuple(archs))
        if tuple(archs) == ("sm_75",):
            r.violations.append(launchability.Finding("sm_75", "x", "too many threads"))
        return r
    monkeypatch.setattr(launchability, "sweep", fake_sweep)
    assert cli_main(["check", "--launchability", "sm_90,sm_120", "--all-batches"]) == 0
    assert calls[-1] == (("sm_90", "sm_120"), True, None)
    assert cli_main(["check", "--launchability", "sm_75"]) == 1
    assert "REFUSED LAUNCH [sm_75] x: too many threads" in capsys.readouterr().out
    assert cli_main(["check", "--launchability"]) == 0 and calls[-1][0] == launchability.ARCHS
    assert cli_main(["check", "--launchability", "sm_70"]) == 2
    if not cuconv.gpu_available():
        assert cli_main(["check", "--launchability", "device"]) == check.EXIT_NO_GPU

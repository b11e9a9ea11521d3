"""CUDA graphs: a plan's run is capturable (no host synchronisation, no host read of device data,
no allocation once its workspace is passed in) — checked without a GPU for every op and
algorithm `cuconv check --gpu` exercises, by counting what Plan.execute asks of the backend;
and on a GPU by capturing plans with cupy.cuda stream capture and replaying them (skipped with
a reason without a device), and through the bench's --graph mode."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import requires_gpu

import cuconv
from cuconv.backend import RecordBackend, using
from cuconv.commands import check
from cuconv.plan import Plan


class Counting(RecordBackend):
    """The record backend, counting allocations and device-to-host reads."""

    def __init__(self):
        super().__init__()
        self.allocations = 0
        self.reads = 0

    def empty(self, shape, dtype):
        self.allocations += 1
        return super().empty(shape, dtype)

    def workspace(self, nbytes):
        self.allocations += 1
        return super().workspace(nbytes)

    def to_numpy(self, a):
        self.reads += 1
        return super().to_numpy(a)


@pytest.fixture(scope="module")
def plans():
    """(plan, env) of every op call of `cuconv check --gpu`, made on the record backend."""
    seen = []
    original = Plan.execute

    def spy(self, be, env, workspace=None, contiguous=False):
        seen.append((self, {k: v for k, v in env.items() if k in self.inputs or k in
                            {o.role for o in self.outputs}}))
        return original(self, be, env, workspace, contiguous)
    Plan.execute = spy
    try:
        rec = Counting()
        with using(rec):
            for i, chk in enumerate(check.device_checks()):
                try:
                    chk.run(np, np.random.default_rng(i))
                except AssertionError:       # the record backend computes nothing
                    pass
    finally:
        Plan.execute = original
    return rec, seen


def test_every_plan_runs_without_allocating_or_reading_once_its_workspace_is_passed(plans):
    rec, seen = plans
    algos = {(p.op, p.algo) for p, _ in seen}
    assert len(seen) >= 100 and len(algos) >= 30, algos
    for plan, env in seen:
        ws = np.empty(plan.workspace_bytes, np.uint8) if plan.workspace_bytes else None
        plan.execute(rec, dict(env), ws)           # the first run may create the placeholders
        rec.allocations = rec.reads = 0
        rec.clear()
        plan.execute(rec, dict(env), ws)
        assert (rec.allocations, rec.reads) == (0, 0), f"{plan.op} {plan.algo}"
        assert rec.kernels() == plan.kernels


def test_without_a_workspace_only_the_workspace_is_allocated(plans):
    """What a capture must avoid: the one allocation a run makes itself is its workspace."""
    rec, seen = plans
    for plan, env in seen:
        plan.execute(rec, dict(env))
        rec.allocations = 0
        plan.execute(rec, dict(env))
        assert rec.allocations == (1 if plan.workspace_bytes else 0), f"{plan.op} {plan.algo}"


# --------------------------------------------------------------------------- on a GPU
@pytest.fixture
def cupy():
    import cupy
    return cupy


def _capture(cupy, fn):
    from cuconv.bench.measure import capture_graph
    return capture_graph(fn)


GPU_CASES = [
    ((2, 3, 9, 7), (5, 3, 3, 3), 1, 1, 1, 1),
    ((2, 16, 9, 9), (16, 16, 3, 3), 1, 1, 1, 1),
    ((2, 4, 11, 9), (6, 2, 5, 5), 2, 2, 1, 2),
    ((1, 6, 9, 9), (12, 1, 3, 3), 1, 2, 2, 6),
    ((2, 8, 7, 9), (10, 8, 1, 1), 1, 0, 1, 1),
]


@requires_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: f"x{c[0]}w{c[1]}g{c[5]}")
def test_every_conv_algorithm_replays_from_a_graph(cupy, case):
    xs, ws, stride, padding, dilation, groups = case
    gen = cupy.random.default_rng(7)
    x = gen.random(xs, dtype=cupy.float32) - 0.5
    w = gen.random(ws, dtype=cupy.float32) - 0.5
    bias = gen.random((ws[0],), dtype=cupy.float32)
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    p = cuconv.Conv2dProblem.from_shapes(xs, ws, stride, padding, dilation, groups)
    with cuconv.backend("cupy") as be:
        for info in cuconv.algorithms(p, allow_tf32=True):
            if not info.ok:
                continue
            plan = cuconv.plan_conv2d(x, w, bias, algo=info.name, activation="relu", **args)
            env = plan.bind(be, x, w, bias)
            ws_ = cupy.empty(plan.workspace_bytes, cupy.uint8) if plan.workspace_bytes else None
            plan.execute(be, env, ws_)                      # compiles; eager result
            expected = env["out"].copy()
            replay = _capture(cupy, lambda: plan.execute(be, env, ws_))
            env["out"].fill(cupy.nan)
            cupy.cuda.get_current_stream().synchronize()
            replay()
            replay()                                         # replays are repeatable
            cupy.cuda.get_current_stream().synchronize()
            assert bool(cupy.array_equal(env["out"], expected)), info.name


@requires_gpu
@pytest.mark.gpu
def test_other_ops_replay_from_a_graph(cupy):
    gen = cupy.random.default_rng(3)
    a = gen.random((67, 53), dtype=cupy.float32)
    b = gen.random((53, 45), dtype=cupy.float32)
    x = gen.random((2, 5, 11, 9), dtype=cupy.float32)
    calls = {
        "gemm": lambda out: cuconv.gemm(a, b, out=out),
        "max_pool2d": lambda out: cuconv.max_pool2d(x, 3, 2, 1, out=out),
        "avg_pool2d": lambda out: cuconv.avg_pool2d(x, 3, 2, 1, out=out),
        "global_avg_pool2d": lambda out: cuconv.global_avg_pool2d(x, out=out),
    }
    with cuconv.backend("cupy"):
        for name, call in calls.items():
            expected = call(None)                 # eager, allocating: compiles too
            out = cupy.empty_like(expected)
            # a front-end call without workspace is capturable too (these ops take none)
            replay = _capture(cupy, lambda: call(out))
            out.fill(cupy.nan)
            replay()
            cupy.cuda.get_current_stream().synchronize()
            assert bool(cupy.array_equal(out, expected)), name


@requires_gpu
@pytest.mark.gpu
def test_bench_graph_mode_times_the_replays():
    from cuconv.bench.cases import ConvCase
    from cuconv.bench.measure import TimingOptions
    from cuconv.bench.runner import BenchOptions, Runner
    opts = BenchOptions(timing=TimingOptions(repeats=5, warmup_runs=1, warmup_s=0.0, budget_s=0.5),
                        progress=False, baseline=False, graph=True)
    runner = Runner(opts)
    p = cuconv.Conv2dProblem(2, 16, 14, 14, 32, 3, 3, 1, 1, 1, 1)
    row = runner.run_case(ConvCase("t", "graph", problem=p, algo="winograd_f2x2_3x3"))
    assert row["status"] == "timed" and row["timed"] == "graph", row["note"]
    assert row["device"] == 0 and row["time_ms"] > 0
    assert runner.header()["timing"]["graph"] is True

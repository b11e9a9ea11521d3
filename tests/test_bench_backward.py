"""The bench's backward rows (bench/grad_cases.py): dgrad, wgrad (db fused), pooling dx and a
fully connected layer's GEMMs verified on the emulator against the float64 §9.8 references at
a reduced size, a wrong gradient failing verification, the §9.8 counts next to them, the
``--backward`` suites, ``cuconv bench train`` (every layer, sums equal to the cost model's) and
its JSON; the GPU paths (CUDA events around plan.execute) run only with a device.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter

import pytest
from conftest import requires_gpu

from cuconv import cost, models
from cuconv.bench import grad_cases, report, suites
from cuconv.bench.cases import ConvCase, GemmCase, LayerCase, PoolCase
from cuconv.bench.grad_cases import (
    BiasGradCase,
    DgradCase,
    LayerGradCase,
    LinearGradCase,
    PoolGradCase,
    WgradCase,
)
from cuconv.bench.measure import TimingOptions
from cuconv.bench.runner import BenchOptions, Runner
from cuconv.cli import main as cli_main
from cuconv.problem import Conv2dProblem

EMU = dict(emulate=True, progress=False, resources=False)
MEASURED = ("time_ms", "time_p20_ms", "effective_tflops", "achieved_gbps", "pct_of_roofline", "mem_measured_bytes",
            "baseline_ratio", "timed")

# Full-size problems (the runner shrinks them for the emulator): stride 2 on odd sizes with C = 3,
# dilation 2 with groups, depthwise stride 2, a 1x1 stride 2 (a phase no tap reaches), C/groups >= 8.
PROBLEMS = {
    "stride2_C3": Conv2dProblem(4, 3, 33, 31, 10, 3, 3, 2, 2, 1, 1),
    "dilation2_groups2": Conv2dProblem(2, 16, 19, 19, 12, 3, 3, 1, 1, 2, 2, 2, 2, groups=2),
    "depthwise_stride2": Conv2dProblem(2, 24, 29, 29, 24, 3, 3, 2, 2, 1, 1, groups=24),
    "1x1_stride2": Conv2dProblem(2, 32, 28, 28, 64, 1, 1, 2, 2),
    "C16_3x3": Conv2dProblem(8, 16, 30, 30, 24, 3, 3, 1, 1, 1, 1),
}


def _run(case):
    return Runner(BenchOptions(**EMU)).run_case(case)


def _assert_unmeasured(row):
    for k in MEASURED:
        assert row[k] is None, k


# ============================================================== rows verify in emulation
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_dgrad_row_verifies_with_the_section_9_8_counts(name):
    p = PROBLEMS[name].validate()
    row = _run(DgradCase("t", f"{name} dgrad", problem=p))
    assert row["status"] == "verified-emulated" and row["verified"] is True, row["note"]
    assert row["op"] == "conv2d_input" and row["max_rel_error"] <= row["tolerance"]
    assert row["verify_scope"].startswith("emulator, reduced")
    # flops: the cost model's backward_data_flops (2·MACs); algo_flops: what the kernels multiply
    assert row["flops"] == cost.conv2d_cost(p).backward_data_flops == 2 * p.macs()
    count = "exact" if row["algo_used"] == "direct" else "phases"
    assert row["algo_flops"] == cost.backward_data_flops(p, count)
    assert row["min_bytes"] == p.weight_bytes() + p.output_bytes() + p.input_bytes()
    if p.stride_h > 1:
        book = cost.backward_data_flops(p, "textbook")
        assert f"{book:,} FLOPs" in row["note"] and book > 3 * row["algo_flops"]
    else:
        assert "§9.8's printed" not in row["note"]
    assert row["algo_used"] == ("depthwise" if p.is_depthwise else "direct" if p.C_per_group < 8 else "implicit_gemm")
    _assert_unmeasured(row)


@pytest.mark.parametrize("name", ["stride2_C3", "dilation2_groups2", "depthwise_stride2", "C16_3x3"])
@pytest.mark.parametrize("bias", [True, False], ids=["db_fused", "no_bias"])
def test_wgrad_row_verifies(name, bias):
    p = PROBLEMS[name].validate()
    row = _run(WgradCase("t", f"{name} wgrad", problem=p, bias=bias))
    assert row["status"] == "verified-emulated" and row["verified"] is True, row["note"]
    assert row["op"] == "conv2d_weight" and row["max_rel_error"] <= row["tolerance"]
    assert row["flops"] == row["algo_flops"] == cost.conv2d_cost(p, bias).backward_weight_flops
    assert row["flops"] == 2 * p.macs() + (p.N * p.K * p.P * p.Q if bias else 0)
    assert row["mem_output_bytes"] == (p.K * p.C_per_group * p.R * p.S + (p.K if bias else 0)) * 4
    assert ("db fused" in row["note"]) == bias and ("+ db (fused)" in row["args"]) == bias
    if row["algo_used"] == "implicit_gemm" and "conv_wgrad_splitk_reduce" in row["kernel"]:
        # the full-size plan splits N·P·Q; its workspace is the partials', written once and read once
        assert row["mem_workspace_theory_bytes"] == row["mem_workspace_op_bytes"] > 0
        assert row["algo_bytes"] == row["min_bytes"] + 2 * row["mem_workspace_op_bytes"]
    _assert_unmeasured(row)


@pytest.mark.parametrize("case", [
    PoolGradCase("t", "max 3x3/2 overlapping", kind="max", x_shape=(3, 7, 23, 21), kernel=(3, 3), stride=(2, 2),
                 padding=(1, 1)),
    PoolGradCase("t", "max 2x2 dilation 2 ceil", kind="max", x_shape=(2, 3, 17, 18), kernel=(2, 2), stride=(2, 2),
                 dilation=(2, 2), ceil_mode=True),
    PoolGradCase("t", "avg 3x3/2 no pad count", kind="avg", x_shape=(2, 6, 19, 20), kernel=(3, 3), stride=(2, 2),
                 padding=(1, 1), count_include_pad=False, ceil_mode=True),
    PoolGradCase("t", "global", kind="global_avg", x_shape=(4, 9, 7, 9)),
], ids=lambda c: c.name)
def test_pool_backward_row_verifies(case):
    row = _run(case)
    assert row["status"] == "verified-emulated" and row["verified"] is True, row["note"]
    assert row["op"] == f"{case.kind}_pool2d_backward" and row["max_rel_error"] <= row["tolerance"]
    c = case._layer().cost(case.x_shape)
    assert row["flops"] == c.backward_data_flops
    y = math.prod(c.output_shape)
    assert row["min_bytes"] == 4 * y + (8 * y if case.kind == "max" else 0) + 4 * math.prod(case.x_shape)
    if case.kind == "max":
        assert "gather" in row["kernel"]            # the forward's window given: the gather kernel
    _assert_unmeasured(row)


def test_linear_and_bias_rows_verify():
    for case in (LinearGradCase("t", "fc dgrad", algo="gemm", M=32, N=2048, K=1000, grad="data"),
                 LinearGradCase("t", "fc wgrad", algo="gemm", M=2048, N=1000, K=32, grad="weight"),
                 BiasGradCase("t", "fc db", algo="reduce", dy_shape=(32, 1000)),
                 BiasGradCase("t", "conv db", algo="reduce", dy_shape=(3, 7, 5, 9))):
        row = _run(case)
        assert row["status"] == "verified-emulated" and row["verified"] is True, (case.name, row["note"])
        _assert_unmeasured(row)
    assert _run(BiasGradCase("t", "db", dy_shape=(32, 1000)))["flops"] == 32 * 1000


def test_layer_without_a_kernel_gets_a_theory_row():
    bn = models.get("resnet50", batch=2).layer("stem.bn")
    data = _run(LayerGradCase("t", "bn backward", cost=bn.cost, grad="data"))
    params = _run(LayerGradCase("t", "bn backward (params)", cost=bn.cost, grad="weight"))
    assert data["status"] == params["status"] == "no-kernel"
    assert (data["flops"], params["flops"]) == (bn.cost.backward_data_flops, bn.cost.backward_weight_flops)
    assert data["flops"] != params["flops"]       # the runner does not take one for the other


# ============================================================== wrong gradients fail
P_WRONG = Conv2dProblem(2, 3, 9, 9, 4, 3, 3, 2, 2, 1, 1)


def test_a_wrong_gradient_fails_verification(monkeypatch):
    class WrongDx(DgradCase):
        def call(self, inputs, algo, out=None):
            out = super().call(inputs, algo, out)
            out[1, 2, 3, 4] += 0.5
            return out

    class PerturbedReference(WgradCase):
        def reference(self, inputs, subset=None):
            ref = super().reference(inputs, subset)
            ref[0] += 1e-3 * abs(ref).max()          # 1e-3: far above the tolerance, far below a bug's size
            return ref

    class WrongDb(WgradCase):                        # dW right, db wrong: the error is per gradient
        def call(self, inputs, algo, out=None):
            out = super().call(inputs, algo, out)
            out[-1] += 1e-3 * abs(out[-self.problem.K:]).max()
            return out

    good = _run(DgradCase("t", "good", problem=P_WRONG))
    assert good["verified"] is True
    for case in (WrongDx("t", "dx", problem=P_WRONG), PerturbedReference("t", "ref", problem=P_WRONG, bias=True),
                 WrongDb("t", "db", problem=P_WRONG, bias=True)):
        row = _run(case)
        assert row["status"] == "verify-failed" and row["verified"] is False, case.name
        assert row["max_rel_error"] > 1e-4 > row["tolerance"]
        assert row["time_ms"] is None

    # A broken plan: the backward plan without its last launch (db's reduction under algo direct)
    # leaves db unwritten; the poisoned output makes it NaN, which no tolerance passes.
    real = grad_cases.GRAD_OPS["plan_conv2d_backward"]

    def broken(*args, **kw):
        plan = real(*args, **kw)
        assert [ln.kernel for ln in plan.launches][-1].startswith("conv_wgrad_bias")
        return dataclasses.replace(plan, launches=plan.launches[:-1])

    monkeypatch.setitem(grad_cases.GRAD_OPS, "plan_conv2d_backward", broken)
    row = _run(WgradCase("t", "no db", problem=P_WRONG, bias=True, algo="direct"))
    assert row["status"] == "verify-failed" and row["max_rel_error"] == math.inf and "NaN" in row["note"]


# ============================================================== suites
def test_seed_backward_puts_each_layers_gradients_next_to_it():
    cases = suites.build_suite("seed", backward=True)
    forward = suites.seed_cases()
    assert [c for c in cases if not isinstance(c, (DgradCase, WgradCase))] == forward
    for i, c in enumerate(cases):
        if isinstance(c, DgradCase):
            assert isinstance(cases[i + 1], WgradCase) and cases[i + 1].problem == c.problem and cases[i + 1].bias
            assert isinstance(cases[i - 1], ConvCase) and cases[i - 1].problem == c.problem
            assert c.name == cases[i - 1].name + " dgrad"
    # each distinct seed convolution gets its gradients once
    problems = {c.problem for c in forward if isinstance(c, ConvCase)}
    assert Counter(c.problem for c in cases if isinstance(c, DgradCase)) == Counter(problems)
    assert Counter(c.problem for c in cases if isinstance(c, WgradCase)) == Counter(problems)
    assert suites.build_suite("gemm", backward=True) == suites.build_suite("gemm")


def test_resnet50_backward_suite_counts():
    model = models.get("resnet50", batch=suites.DEFAULT_MODEL_BATCH)
    cases = suites.build_suite("resnet50", backward=True)
    convs = model.conv_layers()
    wg = Counter({c.problem: c.count for c in cases if isinstance(c, WgradCase)})
    dg = Counter({c.problem: c.count for c in cases if isinstance(c, DgradCase)})
    assert wg == Counter(lay.problem for lay in convs)
    # every conv but the stem (it reads the network input: no dx needed)
    assert dg == Counter(lay.problem for lay in convs if lay.name != "stem.conv")
    assert not any(c.bias for c in cases if isinstance(c, WgradCase))          # ResNet convs have no bias
    pools = [lay for lay in model.layers if lay.type in ("maxpool", "global_avgpool")]
    assert sum(c.count for c in cases if isinstance(c, PoolGradCase)) == len(pools)
    assert {type(c).__name__ for c in cases if c.name.startswith("fc")} == {"GemmCase", "LinearGradCase",
                                                                             "BiasGradCase"}
    assert [c for c in cases if c.grad_pass == "forward"] == suites.build_suite("resnet50")


def _backward_rows_expected(layer, first: bool) -> list[str]:
    """The backward case types one model layer must get in a training step."""
    kind = layer.type
    if layer.problem is not None:
        return ([] if first else ["DgradCase"]) + ["WgradCase"]
    if kind == "linear":
        return ([] if first else ["LinearGradCase"]) + ["LinearGradCase"] + (["BiasGradCase"] if layer.layer.bias else [])
    if kind in ("maxpool", "avgpool", "global_avgpool"):
        return [] if first else ["PoolGradCase"]
    return ([] if first else ["LayerGradCase"]) + (["LayerGradCase"] if layer.cost.backward_weight_flops else [])


@pytest.mark.parametrize("name", ["lenet5", "resnet50"])
def test_train_suite_lists_every_layer(name):
    model = models.get(name, batch=4)
    cases = suites.train_cases(name, batch=4)
    forward = cases[:len(model.layers)]
    assert [c.name for c in forward] == [lay.name for lay in model.layers]
    assert all(c.grad_pass == "forward" for c in forward)
    backward = cases[len(model.layers):]
    expected = []
    for lay in reversed(model.layers):            # the backward pass runs in reverse order
        expected += [(lay.name, t) for t in _backward_rows_expected(lay, lay.inputs == ("input",))]
    assert [(c.layer, type(c).__name__) for c in backward] == expected
    assert all(c.grad_pass in ("data", "weight") for c in backward)
    # the cost model's totals: forward, and backward minus the dx nobody takes (the first layer's)
    work = {p: sum(c.work(c.resolve_algo()[0]).flops for c in cases if c.grad_pass == p)
            for p in ("forward", "data", "weight")}
    t = model.totals()
    first = model.layers[0]
    assert first.inputs == ("input",)
    assert (work["forward"], work["weight"]) == (t.flops, t.backward_weight_flops)
    assert work["data"] == t.backward_data_flops - first.cost.backward_data_flops


# ============================================================== the CLI
def test_cli_train_lenet5_in_emulation(tmp_path, capsys):
    path, cpath = tmp_path / "train.json", tmp_path / "train.csv"
    rc = cli_main(["bench", "train", "lenet5", "--batch", "2", "--emulate", "--quiet", "--no-resources",
                   "--json", str(path), "--csv", str(cpath)])
    out = capsys.readouterr().out
    doc = json.loads(path.read_text())
    model = models.get("lenet5", batch=2)
    t, tot = doc["totals"], model.totals()
    assert rc == 0 and "Training step of lenet5" in out and "not computed: the data gradient of conv1" in out
    assert t["cost_model"] == dict(forward=tot.flops, backward_data=tot.backward_data_flops,
                                   backward_weight=tot.backward_weight_flops, training=tot.training_flops)
    assert t["no_data_gradient"] == dict(layers=["conv1"], flops=model.layer("conv1").cost.backward_data_flops)
    s = t["step"]
    assert (s["forward"], s["backward_weight"]) == (tot.flops, tot.backward_weight_flops)
    assert s["backward_data"] == tot.backward_data_flops - t["no_data_gradient"]["flops"]
    assert s["total"] == sum(r["flops"] for r in doc["rows"]) == tot.training_flops - t["no_data_gradient"]["flops"]
    # every layer, in order, with its own sums; every kernel row verified, nothing measured
    assert [p["layer"] for p in t["per_layer"]] == [lay.name for lay in model.layers]
    for p, lay in zip(t["per_layer"], model.layers):
        assert (p["forward"], p["weight"]) == (lay.cost.flops, lay.cost.backward_weight_flops)
        assert p["data"] == (0 if lay.name == "conv1" else lay.cost.backward_data_flops)
    assert t["verified_rows"] == t["kernel_rows"] == 21 and t["failed_rows"] == 0 and t["time_ms"] is None
    assert {r["status"] for r in doc["rows"]} == {"verified-emulated", "no-kernel"}
    for r in doc["rows"]:
        for k in MEASURED:
            assert r[k] is None, k
    assert [r["case"] for r in doc["rows"]][:len(model.layers)] == [lay.name for lay in model.layers]
    assert "conv1 dgrad" not in {r["case"] for r in doc["rows"]} and "conv2 dgrad" in {r["case"] for r in doc["rows"]}
    assert len([ln for ln in cpath.read_text().splitlines() if not ln.startswith("#")]) == len(doc["rows"]) + 1
    # the per-layer table the terminal shows
    assert report.train_layer_table(t).count("\n") == len(model.layers) + 1


def test_cli_backward_suite_json(tmp_path, capsys):
    path = tmp_path / "seed.json"
    rc = cli_main(["bench", "seed", "--backward", "--filter", "3x3 64->64", "--emulate", "--quiet",
                   "--no-resources", "--json", str(path)])
    capsys.readouterr()
    doc = json.loads(path.read_text())
    ops = [r["op"] for r in doc["rows"]]
    assert rc == 0 and ops.count("conv2d_input") == ops.count("conv2d_weight") == 1
    assert all(r["status"] == "verified-emulated" for r in doc["rows"]), [r["note"] for r in doc["rows"]]
    dg = next(r for r in doc["rows"] if r["op"] == "conv2d_input")
    assert dg["case"] == "§9.4 bottleneck 3x3 64->64 dgrad" and dg["flops"] == 231_211_008


def test_cli_conv2d_backward_every_algorithm(tmp_path, capsys):
    from cuconv import grad
    path = tmp_path / "c.json"
    rc = cli_main(["bench", "conv2d", "--input", "2,8,11,9", "--weight", "6,4,3,3", "--groups", "2", "--stride", "2",
                   "--padding", "1", "--backward", "--algo", "all", "--emulate", "--quiet", "--no-resources",
                   "--json", str(path)])
    capsys.readouterr()
    doc = json.loads(path.read_text())
    p = Conv2dProblem.from_shapes((2, 8, 11, 9), (6, 4, 3, 3), 2, 1, 1, 2)
    assert rc == 0
    for op, which in (("conv2d_input", "input"), ("conv2d_weight", "weight")):
        expect = {i.name for i in grad.algorithms(p, which, bias=True) if i.ok}
        assert {r["algo"] for r in doc["rows"] if r["op"] == op} == expect and len(expect) >= 2
    assert all(r["verified"] for r in doc["rows"]), [(r["case"], r["note"]) for r in doc["rows"] if not r["verified"]]


@pytest.mark.parametrize("argv, message", [
    (["train"], "usage: cuconv bench train"),
    (["train", "resnet49"], "resnet49"),
    (["train", "lenet5", "--algo", "direct"], "algo auto"),
    (["model", "lenet5", "--backward"], "cuconv bench train"),
])
def test_cli_usage_errors(argv, message, capsys):
    assert cli_main(["bench", *argv, "--emulate"]) == 2
    assert message in capsys.readouterr().err


def test_cli_list_train(capsys):
    assert cli_main(["bench", "train", "lenet5", "--list"]) == 0
    out = capsys.readouterr().out
    assert "conv2 dgrad" in out and "conv1 wgrad" in out and "conv1 dgrad" not in out


# ============================================================== GPU (skipped without a device)
QUICK = TimingOptions(repeats=5, warmup_runs=1, warmup_s=0.0, budget_s=0.5)
GPU_CASES = [
    DgradCase("t", "dgrad", problem=Conv2dProblem(4, 16, 30, 30, 24, 3, 3, 2, 2, 1, 1)),
    WgradCase("t", "wgrad+db", problem=Conv2dProblem(4, 16, 30, 30, 24, 3, 3, 2, 2, 1, 1), bias=True),
    WgradCase("t", "wgrad depthwise", problem=Conv2dProblem(2, 32, 28, 28, 32, 3, 3, 1, 1, 1, 1, groups=32)),
    PoolGradCase("t", "max backward", kind="max", x_shape=(4, 16, 33, 33), kernel=(3, 3), stride=(2, 2),
                 padding=(1, 1)),
    BiasGradCase("t", "db", dy_shape=(64, 1000)),
]


@requires_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: c.name)
def test_backward_row_timed_on_the_gpu(case):
    """Verified at full size on the device against float64, then the plan's launches timed with
    CUDA events (they reproduce the verified output bit for bit, so ``timed`` is "plan")."""
    runner = Runner(BenchOptions(timing=QUICK, progress=False))
    assert runner.gpu
    r = runner.run_case(case)
    assert r["status"] == "timed" and r["verified"] is True, r["note"]
    assert r["verify_scope"].startswith("gpu, full size") and r["timed"] == "plan"
    assert r["repeats"] == 5 and 0 < r["time_p20_ms"] <= r["time_ms"] <= r["time_p80_ms"]
    assert r["effective_tflops"] == pytest.approx(r["flops"] / (r["time_ms"] * 1e-3) / 1e12, rel=1e-5)
    assert r["mem_measured_bytes"] >= r["mem_output_bytes"]
    assert r["kernel"] and r["registers"] > 0


@requires_gpu
@pytest.mark.gpu
def test_wgrad_subset_verification_on_the_gpu():
    """A wgrad whose float64 reference is too dear is checked on some filters (rows of dW and db)."""
    case = WgradCase("t", "wgrad", problem=Conv2dProblem(8, 64, 28, 28, 64, 3, 3, 1, 1, 1, 1), bias=True)
    runner = Runner(BenchOptions(timing=QUICK, progress=False, max_reference_flops=2 * case.problem.macs() / 8))
    r = runner.run_case(case)
    assert r["status"] == "timed" and r["verified"] is True, r["note"]
    assert "of 64 filters" in r["verify_scope"]


@requires_gpu
@pytest.mark.gpu
def test_cli_train_on_the_gpu(tmp_path, capsys):
    path = tmp_path / "train.json"
    rc = cli_main(["bench", "train", "lenet5", "--batch", "4", "--repeats", "3", "--quiet", "--no-baseline",
                   "--json", str(path)])
    capsys.readouterr()
    doc = json.loads(path.read_text())
    t = doc["totals"]
    assert rc == 0 and doc["header"]["mode"] == "gpu"
    assert t["time_ms"] > 0 and t["untimed_kernel_rows"] == 0 and t["verified_rows"] == t["kernel_rows"]
    assert all(p["time_ms"] is None or p["time_ms"] > 0 for p in t["per_layer"])


def test_gpu_cases_are_real_cases():
    """The GPU tests' cases resolve and shrink here too (so a typo fails without a device)."""
    for c in GPU_CASES:
        algo, reason = c.resolve_algo()
        assert reason is None and c.reduced(algo) is not None
    assert isinstance(GPU_CASES[0], DgradCase) and not isinstance(GPU_CASES[0], (GemmCase, LayerCase, PoolCase))

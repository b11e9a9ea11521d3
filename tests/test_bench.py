"""The bench harness without a GPU: row arithmetic on hand-computed cases, the JSON/CSV
schema, the suites against the model layer lists, the reduction rule, and runs of
`cuconv bench` in emulation (every case verified on the CPU emulator at a reduced size).

GPU paths (timing, NVML, pool memory, baselines) are in test_bench_gpu.py.
"""
from __future__ import annotations

import csv
import json
import math
from collections import Counter

import numpy as np
import pytest

from cuconv import models
from cuconv.bench import measure, peaks, report, rows, suites
from cuconv.bench.cases import (ConvCase, GemmCase, Im2colCase, PoolCase, SeparableCase, conv_padding_arg,
                                reduced_conv_problems)
from cuconv.bench.record import kernel_table, recorded_kernels
from cuconv.bench.runner import BenchOptions, Runner, scaled_tolerance
from cuconv.cli import main as cli_main
from cuconv.problem import Conv2dProblem
from cuconv.testing import tolerance

EMU = dict(emulate=True, progress=False)


# ============================================================== arithmetic
def test_roofline_bound_by_hand():
    # 1 TFLOP and 1 GB on 10 TFLOP/s and 1 TB/s: 0.1 s of compute against 1 ms of memory.
    assert rows.roofline(1e12, 1e9, 10e12, 1e12) == ("compute", pytest.approx(0.1))
    # 1 GFLOP and 10 GB on the same device: 0.1 ms of compute against 10 ms of memory.
    assert rows.roofline(1e9, 1e10, 10e12, 1e12) == ("memory", pytest.approx(0.01))
    # A copy (no FLOPs) is memory-bound; unknown peaks give nothing.
    assert rows.roofline(0, 8e6, 10e12, 1e12) == ("memory", pytest.approx(8e-6))
    assert rows.roofline(1e9, 1e9, None, 1e12) == (None, None)


def test_fill_work_and_achieved_by_hand():
    device = peaks.DevicePeaks("test GPU", "sm_90", fp32_flops=100e12, dram_bytes_per_s=1000e9)
    work = rows.Work(flops=10**12, algo_flops=5 * 10**11, min_bytes=2 * 10**9, workspace_bytes=10**9,
                     output_bytes=3 * 10**8)
    r = rows.fill_work(rows.new_row(dtype="float32"), work, device)
    assert r["algo_bytes"] == 4 * 10**9                      # compulsory + workspace written and read
    assert r["intensity"] == pytest.approx(125.0)            # 5e11 / 4e9
    assert r["mem_theory_bytes"] == 13 * 10**8               # output + workspace
    assert (r["peak_tflops"], r["peak_gbps"]) == (100.0, 1000.0)
    # compute 5e11/1e14 = 5 ms > memory 4e9/1e12 = 4 ms
    assert r["bound"] == "compute" and r["roofline_time_ms"] == pytest.approx(5.0)
    rows.fill_achieved(r, 0.020)                             # measured 20 ms
    assert r["effective_tflops"] == pytest.approx(50.0)      # 1e12 / 0.02
    assert r["achieved_gbps"] == pytest.approx(100.0)        # 2e9 / 0.02
    assert r["pct_peak_compute"] == pytest.approx(25.0)      # 5e11 / 0.02 / 1e14
    assert r["pct_peak_bandwidth"] == pytest.approx(20.0)    # 4e9 / 0.02 / 1e12
    assert r["pct_of_roofline"] == pytest.approx(25.0)       # 5 ms / 20 ms
    with pytest.raises(ValueError, match="positive"):
        rows.fill_achieved(r, 0.0)


def test_conv_work_matches_the_textbook():
    c = suites.seed_cases()[0]                               # §9.1: 64->128 3x3 at 56x56, batch 32
    w = c.work("implicit_gemm")
    assert w.flops == w.algo_flops == 2 * 32 * 128 * 56 * 56 * 64 * 9 == 14_797_504_512   # "14.8 GFLOPs"
    assert w.output_bytes == 32 * 128 * 56 * 56 * 4 == 51_380_224                         # "51.4 MB"
    assert w.min_bytes == 32 * 64 * 56 * 56 * 4 + 128 * 64 * 9 * 4 + 51_380_224
    assert w.workspace_bytes == 0


def test_im2col_work_shows_the_k_squared_overhead():
    by_name = {c.name: c for c in suites.seed_cases()}
    for k in (3, 7):
        conv = by_name[f"§8.3 conv via im2col {k}x{k} 64->64"]
        p = conv.problem
        w = conv.work("im2col_gemm")
        assert w.workspace_bytes == 64 * k * k * 56 * 56 * 4 == k * k * p.input_bytes()   # §8.3: k² x input
        assert w.algo_bytes == p.min_bytes() + 2 * w.workspace_bytes
        assert w.algo_flops == w.flops                                                   # same FLOPs as direct
        only = by_name[f"§8.3 im2col {k}x{k} 64ch 56x56"].work("im2col")
        assert (only.flops, only.output_bytes) == (0, k * k * p.input_bytes())
        assert only.min_bytes == p.input_bytes() + k * k * p.input_bytes()


def test_winograd_work_by_hand():
    # 2 -> 3 channels, 4x4 input, 3x3 kernel, no padding: P = Q = 2, one 2x2 tile.
    p = Conv2dProblem(1, 2, 4, 4, 3, 3, 3)
    case = ConvCase("t", "wino", problem=p)
    w = case.work("winograd_f2x2_3x3")
    assert w.flops == 2 * (1 * 3 * 2 * 2 * 2 * 3 * 3)          # 432
    # V (16 x C x T) + M (16 x K x T) + U (16 x K x C), float32: (32 + 48 + 96) x 4
    assert w.workspace_bytes == 704
    assert case.work("winograd_fused_f2x2_3x3").workspace_bytes == 16 * 3 * 2 * 4   # U only
    # 16 products per tile and channel pair, a multiply and an add each, plus the transforms
    assert w.algo_flops > 2 * 16 * 3 * 2
    assert case.work("winograd_f4x4_3x3").workspace_bytes == 4 * 36 * (2 * 1 + 3 * 1 + 3 * 2)


def test_gemm_pool_separable_work_by_hand():
    g = GemmCase("t", "g", M=2, N=3, K=4).work("gemm")
    assert (g.flops, g.min_bytes, g.output_bytes) == (48, (8 + 12 + 6) * 4, 24)
    # max pool 3x3 / 2, padding 1 on 5x5: 3x3 outputs, 8 comparisons each
    mp = PoolCase("t", "mp", kind="max", x_shape=(1, 1, 5, 5), kernel=(3, 3), stride=(2, 2), padding=(1, 1))
    assert mp.output_shape() == (1, 1, 3, 3)
    assert (mp.work("pool").flops, mp.work("pool").min_bytes) == (72, (25 + 9) * 4)
    gap = PoolCase("t", "gap", kind="global_avg", x_shape=(2, 3, 7, 7))
    assert gap.output_shape() == (2, 3, 1, 1) and gap.work("pool").flops == 2 * 3 * 49
    # §9.5: 2·H·W·C·(k² + K) = 2·3136·128·137 ≈ 110 M, the fused kernel recomputes the depthwise
    # part once per 64 pointwise channels
    sep = next(c for c in suites.seed_cases() if isinstance(c, SeparableCase))
    assert sep.work("unfused").flops == 2 * 56 * 56 * 128 * (9 + 128) == 109_985_792
    assert sep.work("unfused").workspace_bytes == 128 * 56 * 56 * 4
    fused = sep.work("fused")
    assert fused.workspace_bytes == 0
    assert fused.algo_flops == 2 * 3136 * 128 * 9 * 2 + 2 * 3136 * 128 * 128


def test_tolerance_scales_only_past_the_tables_reduction_lengths():
    small = ConvCase("t", "s", problem=Conv2dProblem(1, 64, 8, 8, 8, 3, 3))          # C·R·S = 576
    big = ConvCase("t", "b", problem=Conv2dProblem(1, 512, 8, 8, 8, 3, 3))           # 4608: the table's own
    bound = tolerance("float32", "direct")
    assert scaled_tolerance(small, "direct") == bound
    assert scaled_tolerance(big, "direct") == bound
    assert scaled_tolerance(GemmCase("t", "g", M=1, N=1, K=25088), "gemm") == pytest.approx(
        tolerance("float32", "gemm") * math.sqrt(25088 / 4608))                      # as cuconv.testing.grown
    assert scaled_tolerance(Im2colCase("t", "i", problem=big.problem), "im2col") == 0.0


def test_statistics_by_hand():
    s = [5.0, 1.0, 4.0, 2.0, 3.0]
    st = measure.TimingStats.from_samples(s)
    assert (st.median_s, st.p20_s, st.p80_s, st.repeats) == (3.0, pytest.approx(1.8), pytest.approx(4.2), 5)
    assert st.noise == pytest.approx(math.sqrt(2.5) / 3)      # sample stdev / mean
    assert measure.noise([1.0]) == math.inf
    assert measure.percentile([1.0, 2.0], 50) == 1.5
    with pytest.raises(ValueError):
        measure.percentile([], 50)


def test_stopping_rules():
    opts = measure.TimingOptions(min_repeats=3, max_repeats=50, noise_target=0.01, budget_s=1.0)
    steady, noisy = [1.0] * 3, [1.0, 2.0, 3.0]
    assert measure.should_stop(steady[:2], opts, 0.0) is None          # fewer than min_repeats
    assert measure.should_stop(steady, opts, 0.0) == "noise"
    assert measure.should_stop(noisy, opts, 0.5) is None
    assert measure.should_stop(noisy, opts, 1.5) == "budget"
    assert measure.should_stop([1.0, 2.0] * 25, opts, 0.0) == "max_repeats"
    fixed = measure.TimingOptions(repeats=4)
    assert measure.should_stop(steady, fixed, 99.0) is None             # a fixed count ignores the budget
    assert measure.should_stop(steady + [1.0], fixed, 0.0) == "repeats"
    with pytest.raises(ValueError):
        measure.TimingOptions(repeats=0)


def test_published_peaks():
    h = peaks.published("H100")
    assert h is peaks.PUBLISHED["h100"] and h.arch == "sm_90" and h.source
    assert peaks.published("a100_40gb").dram_bytes_per_s == 1555e9
    assert h.compute_peak("float32", tensor_cores=False) == 67e12
    assert h.compute_peak("float16", tensor_cores=True) == h.fp16_tensor_flops
    assert h.ridge_flops_per_byte == pytest.approx(67e12 / 3350e9)
    with pytest.raises(ValueError, match="h100"):
        peaks.published("gtx480")
    assert peaks.match_device_name("NVIDIA H100 PCIe").name.startswith("H100 PCIe")
    assert peaks.match_device_name("NVIDIA A100-SXM4-40GB") is peaks.PUBLISHED["a100-40gb"]
    assert peaks.match_device_name("Some Future GPU") is None
    for key, p in peaks.PUBLISHED.items():
        assert p.fp32_flops > 0 and p.dram_bytes_per_s > 0 and p.source, key


def test_si_format():
    assert report.si(14_797_504_512) == "14.8 G"
    assert report.si(51_380_224, "B") == "51.4 MB"
    assert report.si(None) == "-" and report.si(0, "B") == "0 B"


# ============================================================== schema
def _row(**kw):
    r = rows.new_row(suite="s", case="c", count=1, op="conv2d", algo="auto", args="N=1", dtype="float32",
                     status="verified-emulated", kernels=[{"label": "k", "launches": 2}],
                     throttle_reasons=["sw_power_cap"], verified=True, max_rel_error=float("inf"))
    r.update(kw)
    return r


def test_row_fields():
    assert len(set(rows.FIELDS)) == len(rows.FIELDS)
    r = rows.new_row(case="x")
    assert list(r) == list(rows.FIELDS) and r["time_ms"] is None
    with pytest.raises(KeyError):
        rows.new_row(not_a_field=1)
    for status in ("timed", "verified-emulated", "verify-failed", "no-kernel"):
        assert status in rows.STATUSES


def test_json_and_csv_schema(tmp_path):
    header = {"schema": rows.SCHEMA, "mode": "emulator", "device": None, "timing": {"repeats": 3}}
    data = [_row(), _row(case="d, with a comma", verified=None, kernels=None)]
    jpath, cpath = tmp_path / "b.json", tmp_path / "b.csv"
    report.write_json(jpath, header, data)
    report.write_csv(cpath, header, data)
    doc = json.loads(jpath.read_text())
    assert doc["schema"] == rows.SCHEMA and doc["header"]["mode"] == "emulator" and doc["totals"] is None
    assert [list(r) for r in doc["rows"]] == [list(rows.FIELDS)] * 2
    assert doc["rows"][0]["max_rel_error"] is None                  # inf is not JSON: null
    assert doc["rows"][0]["kernels"] == [{"label": "k", "launches": 2}]
    lines = cpath.read_text().splitlines()
    comments = [ln for ln in lines if ln.startswith("#")]
    assert comments[0] == f"# schema: {rows.SCHEMA}" and "# device: " in comments
    assert '# timing: {"repeats":3}' in comments
    table = list(csv.reader(ln for ln in lines if not ln.startswith("#")))
    assert table[0] == list(rows.FIELDS) and len(table) == 3
    got = dict(zip(table[0], table[1]))
    assert got["verified"] == "true" and got["time_ms"] == "" and got["throttle_reasons"] == '["sw_power_cap"]'
    assert dict(zip(table[0], table[2]))["case"] == "d, with a comma"


# ============================================================== suites
def _conv_counts(cases):
    return Counter({c.problem: c.count for c in cases if isinstance(c, ConvCase)})


@pytest.mark.parametrize("name", ["resnet50", "vgg16", "mobilenet_v2"])
def test_model_suites_are_the_models_distinct_layers(name):
    model = models.get(name, batch=suites.DEFAULT_MODEL_BATCH)
    cases = suites.build_suite(name)
    assert _conv_counts(cases) == Counter(dict(model.distinct_conv_problems()))
    assert sum(c.count for c in cases if isinstance(c, ConvCase)) == len(model.conv_problems())
    linear = [lay for lay in model.layers if lay.type == "linear"]
    gemms = [c for c in cases if isinstance(c, GemmCase)]
    assert sorted((c.M, c.N, c.K) for c in gemms) == sorted(
        {(lay.input_shape[0], lay.output_shape[1], lay.input_shape[1]) for lay in linear})
    pools = [lay for lay in model.layers if lay.type in ("maxpool", "avgpool", "global_avgpool")]
    assert sum(c.count for c in cases if isinstance(c, PoolCase)) == len(pools)
    for c in cases:
        assert c.suite == model.name
        assert c.name in c.layer and c.layer.split(", ")[0] == c.name


def test_model_suite_batch_and_every_layer_listing():
    cases = suites.build_suite("resnet50", batch=4)
    assert {c.problem.N for c in cases if isinstance(c, ConvCase)} == {4}
    layers = suites.model_cases("resnet50", batch=2, distinct=False)
    assert [c.name for c in layers] == [lay.name for lay in models.get("resnet50", batch=2).layers]
    assert {c.op for c in layers} >= {"conv2d", "batchnorm", "relu", "add", "max_pool2d", "gemm"}


def test_seed_suite_is_the_textbooks_worked_layers():
    cases = {c.name: c for c in suites.seed_cases()}
    assert cases["§9.1 conv 64->128 3x3 56x56"].problem == Conv2dProblem(32, 64, 56, 56, 128, 3, 3, 1, 1, 1, 1)
    flops = {n: c.work(None).flops for n, c in cases.items() if isinstance(c, ConvCase)}
    # §9.4: 102.8 M + 231.2 M + 102.8 M (the book sums the rounded parts to 436.8 M)
    bottleneck = [flops["§9.4 bottleneck 1x1 256->64"], flops["§9.4 bottleneck 3x3 64->64"],
                  flops["§9.4 bottleneck 1x1 64->256"]]
    assert bottleneck == [102_760_448, 231_211_008, 102_760_448]
    assert flops["§9.4 without bottleneck 3x3 256->256"] == 2 * 256 * 56 * 56 * 256 * 9 == 3_699_376_128
    # §9.5: standard 924 M against depthwise + pointwise 110 M
    assert round(flops["§9.5 standard 3x3 128->128"] / 1e6) == 925
    assert flops["§9.5 depthwise 3x3 128ch"] + flops["§9.5 pointwise 1x1 128->128"] == 109_985_792
    assert cases["§8.3 conv via im2col 7x7 64->64"].algo == "im2col_gemm"
    assert {c.problem.N for c in suites.seed_cases(batch=3) if isinstance(c, ConvCase)} == {3}
    assert all(c.algo == "direct" for c in suites.seed_cases(algo="direct") if isinstance(c, ConvCase))


def test_gemm_and_algos_suites():
    g = suites.build_suite("gemm")
    assert {(c.M, c.N, c.K) for c in g} >= {(1024, 1024, 1024), (128, 32 * 56 * 56, 576)}
    from cuconv.ops.conv2d import algorithms
    a = suites.build_suite("algos", batch=1)
    for c in a:
        assert {i.name: i for i in algorithms(c.problem)}[c.algo].ok
    seen = {(c.problem, c.algo) for c in a}
    for p in {c.problem for c in a}:
        assert {(p, i.name) for i in algorithms(p) if i.ok} <= seen


def test_algos_suite_has_the_large_kernel_layers_with_fft_work():
    """§8.4's comparison: 5x5 ... 11x11 stride-1 layers run by every algorithm, the FFT rows with
    the cost model's FLOPs and workspace; one FFT row verified in emulation."""
    from cuconv import cost
    a = [c for c in suites.build_suite("algos") if c.name.startswith("§8.4 large kernel")]
    assert sorted({c.problem.R for c in a}) == [5, 7, 9, 11]
    assert all(c.problem.stride_h == 1 and c.problem.P == c.problem.H for c in a)
    for c in a:
        algos = {x.algo for x in a if x.problem == c.problem}
        assert {"direct", "im2col_gemm", "implicit_gemm", "fft", "fft_tiling"} <= algos
        if c.algo in ("fft", "fft_tiling"):
            f = cost.fft_cost(c.problem, c.algo)
            work = c.work(c.algo)
            assert work.algo_flops == f.flops < work.flops and work.workspace_bytes == f.workspace_bytes
    case = next(c for c in a if c.problem.R == 7 and c.algo == "fft_tiling")
    row = Runner(BenchOptions(**EMU)).run_case(case)
    assert row["status"] == "verified-emulated" and row["max_rel_error"] <= row["tolerance"]
    assert row["algo_flops"] == cost.fft_cost(case.problem, "fft_tiling").flops
    assert [k["label"] for k in row["kernels"] if k.get("library")] == ["fft2d_r2c_16x16", "fft2d_c2r_16x16"]


def test_unknown_suite_names_the_choices():
    with pytest.raises(ValueError, match="seed.*resnet50"):
        suites.build_suite("resnet49")


# ============================================================== reduction for the emulator
@pytest.mark.parametrize("p", [
    Conv2dProblem(32, 64, 56, 56, 128, 3, 3, 1, 1, 1, 1),
    Conv2dProblem(32, 3, 224, 224, 64, 7, 7, 2, 2, 3, 3),
    Conv2dProblem(32, 96, 112, 112, 96, 3, 3, 2, 2, 1, 1, groups=96),
    Conv2dProblem(1, 64, 57, 57, 64, 3, 3, 1, 1, 2, 2, 2, 2, groups=2),
    Conv2dProblem(1, 9, 9, 9, 6, 1, 1),
], ids=lambda p: p.describe().replace(" ", "_"))
def test_reduction_keeps_what_makes_the_problem_awkward(p):
    reduced = list(reduced_conv_problems(p))
    assert reduced[-1] == p                               # the full problem is the last resort
    q = reduced[0]
    assert (q.R, q.S, q.stride_h, q.stride_w, q.pad_h, q.pad_w, q.dilation_h, q.dilation_w) == \
        (p.R, p.S, p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dilation_h, p.dilation_w)
    assert q.N == min(p.N, 2) and q.P <= 7 and q.Q <= 7 and q.P == min(p.P, 7)
    assert q.is_depthwise == p.is_depthwise and (q.groups > 1) == (p.groups > 1)
    assert q.flops() <= p.flops()


def test_padding_argument_round_trip():
    p = Conv2dProblem.from_shapes((1, 3, 8, 8), (4, 3, 4, 4), 1, "same")   # even kernel: end pad is larger
    assert conv_padding_arg(p) == "same"
    assert conv_padding_arg(Conv2dProblem(1, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1)) == (1, 1)
    odd = Conv2dProblem(1, 3, 8, 8, 4, 3, 3, 1, 1, 0, 0, pad_h_end=2)
    assert conv_padding_arg(odd) is None
    assert ConvCase("t", "odd", problem=odd).resolve_algo()[1].startswith("cannot-run")


# ============================================================== recording launches
def test_record_backend_records_and_runs_nothing():
    import cuconv
    from cuconv.testing import poison
    x = np.ones((2, 3, 9, 9), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    out = np.empty((2, 4, 7, 7), np.float32)
    poison(out)
    kernels = recorded_kernels(lambda: cuconv.conv2d(x, w, algo="direct", out=out))
    assert np.isnan(out).all()           # recorded, not run
    assert [k["label"] for k in kernels] == ["direct_f32_256"] and kernels[0]["launches"] == 1
    assert all(k["registered"] for k in kernels)
    # The same table from the plan the call runs.
    with cuconv.backend("record"):
        assert kernel_table(cuconv.plan_conv2d(x, w, algo="direct").launches) == kernels


# ============================================================== running in emulation
def test_planted_failures_are_reported_not_timed():
    p = Conv2dProblem(2, 3, 9, 9, 4, 3, 3, 1, 1, 1, 1)

    class WrongCase(ConvCase):
        def call(self, inputs, algo, out=None):
            out = super().call(inputs, algo, out)
            out[0, 0, 0, 0] += 1.0
            return out

    class UnwrittenCase(ConvCase):
        def call(self, inputs, algo, out=None):
            return out

    runner = Runner(BenchOptions(**EMU))
    good = runner.run_case(ConvCase("t", "good", problem=p, algo="direct"))
    assert good["status"] == "verified-emulated" and good["verified"] is True
    assert good["max_rel_error"] <= good["tolerance"]
    wrong = runner.run_case(WrongCase("t", "wrong", problem=p, algo="direct"))
    assert wrong["status"] == "verify-failed" and wrong["verified"] is False and wrong["max_rel_error"] > 1e-3
    unwritten = runner.run_case(UnwrittenCase("t", "unwritten", problem=p, algo="direct"))
    assert unwritten["verified"] is False and unwritten["max_rel_error"] == math.inf
    assert "NaN" in unwritten["note"]
    for r in (good, wrong, unwritten):
        assert r["time_ms"] is None and r["effective_tflops"] is None and r["mem_measured_bytes"] is None
        assert r["flops"] == p.flops()


def test_cases_that_cannot_run_say_why():
    runner = Runner(BenchOptions(**EMU))
    r = runner.run_case(ConvCase("t", "wino 5x5", problem=Conv2dProblem(1, 8, 9, 9, 8, 5, 5),
                                 algo="winograd_f2x2_3x3"))
    assert r["status"] == "cannot-run" and "3x3" in r["note"] and r["flops"] is not None
    r = runner.run_case(ConvCase("t", "nope", problem=Conv2dProblem(1, 8, 9, 9, 8, 3, 3), algo="no_such_algo"))
    assert r["status"] == "not-built" and "no_such_algo" in r["note"]


def test_cli_seed_in_emulation(tmp_path, capsys):
    """`cuconv bench seed` without a GPU: every case verified on the emulator at a reduced size,
    theoretical and roofline columns filled, measured columns null, the same schema as on a GPU."""
    jpath, cpath = tmp_path / "seed.json", tmp_path / "seed.csv"
    rc = cli_main(["bench", "seed", "--emulate", "--quiet", "--roofline", "h100", "--no-resources",
                   "--json", str(jpath), "--csv", str(cpath)])
    out = capsys.readouterr().out
    doc = json.loads(jpath.read_text())
    bad = [(r["case"], r["status"], r["note"]) for r in doc["rows"] if r["status"] != "verified-emulated"]
    assert rc == 0 and not bad, bad
    assert ("NO GPU" in out or "EMULATION ONLY" in out) and "Nothing was timed" in out
    assert "§9.1 conv 64->128 3x3 56x56" in out
    h = doc["header"]
    assert h["mode"] == "emulator" and h["roofline_device"].startswith("H100") and h["verification"]
    assert h["resource_arch"] is None and h["timing"] is None
    assert len(doc["rows"]) == len(suites.seed_cases())
    from cuconv.compile import registered_kernels
    labels = {e.label for e in registered_kernels()}
    for r in doc["rows"]:
        assert list(r) == list(rows.FIELDS)
        assert r["verified"] is True and r["verify_scope"].startswith("emulator, reduced")
        assert r["flops"] is not None and r["min_bytes"] > 0 and r["mem_theory_bytes"] > 0
        assert r["bound"] in ("compute", "memory") and r["roofline_time_ms"] > 0
        assert r["kernel"] and set(r["kernel"].split("+")) <= labels
        for k in ("time_ms", "time_p20_ms", "effective_tflops", "achieved_gbps", "pct_of_roofline",
                  "mem_measured_bytes", "baseline_ratio", "sm_clock_mhz_before", "throttled"):
            assert r[k] is None, k
    roof = {r["case"]: r["roofline_time_ms"] for r in doc["rows"]}
    # The roofline bound is max(FLOPs / 67 TFLOP/s, bytes / 3.35 TB/s) on an H100
    r91 = next(r for r in doc["rows"] if r["case"].startswith("§9.1"))
    expect = max(r91["algo_flops"] / 67e12, r91["algo_bytes"] / 3350e9) * 1e3
    assert roof[r91["case"]] == pytest.approx(expect, rel=1e-5)
    table = list(csv.reader(ln for ln in cpath.read_text().splitlines() if not ln.startswith("#")))
    assert table[0] == list(rows.FIELDS) and len(table) == len(doc["rows"]) + 1


def test_cli_conv2d_every_algorithm_and_model_totals(tmp_path, capsys):
    jpath = tmp_path / "conv.json"
    rc = cli_main(["bench", "conv2d", "--input", "2,3,9,9", "--weight", "5,3,3,3", "--padding", "1",
                   "--algo", "all", "--emulate", "--quiet", "--no-resources", "--json", str(jpath)])
    doc = json.loads(jpath.read_text())
    from cuconv.ops.conv2d import algorithms
    expected = {i.name for i in algorithms(Conv2dProblem(2, 3, 9, 9, 5, 3, 3, 1, 1, 1, 1)) if i.ok}
    assert rc == 0 and {r["algo"] for r in doc["rows"]} == expected
    for r in doc["rows"]:   # an algorithm the tolerance table does not cover yet is shown, not judged
        assert r["status"] == "verified-emulated" or (r["status"] == "not-verified" and "no tolerance" in r["note"])
        assert r["max_rel_error"] is not None and r["max_rel_error"] < 1e-2
    capsys.readouterr()

    jpath = tmp_path / "lenet.json"
    rc = cli_main(["bench", "model", "lenet5", "--batch", "2", "--emulate", "--quiet", "--no-resources",
                   "--json", str(jpath)])
    out = capsys.readouterr().out
    doc = json.loads(jpath.read_text())
    model = models.get("lenet5", batch=2)
    t = doc["totals"]
    assert rc == 0 and "Totals for lenet5" in out
    assert [r["case"] for r in doc["rows"]] == [lay.name for lay in model.layers]
    assert (t["flops"], t["params"], t["layers"]) == (model.totals().flops, model.totals().params, len(model.layers))
    kernel_flops = sum(lay.flops for lay in model.layers if lay.type in ("conv2d", "linear", "avgpool"))
    assert t["kernel_flops"] == kernel_flops and t["time_ms"] is None
    assert t["verified_layers"] == t["kernel_layers"] == 7 and t["failed_layers"] == 0
    assert {r["status"] for r in doc["rows"]} == {"verified-emulated", "no-kernel"}


def test_registers_and_spills_without_a_gpu():
    """The registers/spills columns come from NVRTC for the --roofline GPU's arch (pool.cu and
    direct.cu: the quickest files to compile)."""
    from cuconv.compile import compile_entry, find_kernel
    runner = Runner(BenchOptions(roofline="a100", **EMU))
    pool = PoolCase("t", "pool", algo="pool", kind="max", x_shape=(2, 5, 9, 9), kernel=(3, 3), stride=(2, 2),
                    padding=(1, 1))
    conv = ConvCase("t", "conv", problem=Conv2dProblem(2, 3, 9, 9, 4, 3, 3, 1, 1, 1, 1), algo="direct")
    for case in (pool, conv):
        r = runner.run_case(case)
        assert r["status"] == "verified-emulated" and r["resource_arch"] == "sm_80"
        (k,) = r["kernels"]
        res = compile_entry(find_kernel(k["label"]), "sm_80")
        assert (r["registers"], r["spill_bytes"]) == (k["registers"], k["spill_bytes"]) == \
            (res.registers, res.spill_bytes)
        assert r["registers"] > 0 and k["launches"] == 1 and k["block"][0] > 0


@pytest.mark.parametrize("argv, message", [
    (["conv2d", "--input", "1,3,8,8"], "needs --input"),
    (["conv2d", "--input", "1,3,8,8", "--weight", "4,2,3,3"], "channels"),
    (["conv2d", "--input", "1,3,8,8", "--weight", "4,3,9,9"], "larger than"),
    (["seed", "--input", "1,3,8,8"], "belongs to"),
    (["resnet49"], "unknown suite"),
    (["model"], "usage"),
    (["seed", "--roofline", "gtx480"], "unknown roofline device"),
    (["seed", "--filter", "no such case"], "no case matches"),
])
def test_cli_usage_errors(argv, message, capsys):
    assert cli_main(["bench", *argv, "--emulate"]) == 2
    assert message in capsys.readouterr().err


def test_cli_list(capsys):
    assert cli_main(["bench", "seed", "gemm", "--list"]) == 0
    out = capsys.readouterr().out
    assert "§9.1 conv 64->128 3x3 56x56" in out and "square 4096" in out


def test_plot(tmp_path, capsys):
    path = tmp_path / "roof.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert cli_main(["bench", "seed", "--emulate", "--plot", str(path)]) == 2
        assert "pip install" in capsys.readouterr().err and not path.exists()
        return
    data = [_row(intensity=10.0, algo_flops=1e9, roofline_time_ms=1.0, case="a"),
            _row(intensity=100.0, algo_flops=1e10, time_ms=2.0, case="b")]
    n = report.plot_roofline(path, {"device": None}, data, peaks.published("a100"))
    assert n == 2 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ============================================================== shards (issue 23)
def _shard_doc(i, n, names, **header):
    h = dict(cuconv="0.1.0", git_revision="abc123", selection={"targets": ["algos"], "algo": "auto"},
             cases_in_suite=len(names), shard=f"{i}/{n}", host="node1", device="NVIDIA H100", device_index=0,
             mode="gpu", started=f"2026-01-0{i}")
    h.update(header)
    rows_ = [rows.new_row(case=c, status="timed", device=h["device_index"]) for c in names[i - 1::n]]
    return {"schema": rows.SCHEMA, "header": h, "rows": rows_}


def test_merge_shards_restores_the_suite_order_and_names_devices():
    names = [f"case{k}" for k in range(7)]
    docs = [_shard_doc(i, 3, names) for i in (2, 3, 1)]
    header, merged, several = report.merge_shards(docs, ["b.json", "c.json", "a.json"])
    assert [r["case"] for r in merged] == names and not several
    assert header["shard"] is None and [s["shard"] for s in header["shards"]] == ["2/3", "3/3", "1/3"]
    docs = [_shard_doc(1, 2, names), _shard_doc(2, 2, names, host="node7", device="NVIDIA A100")]
    header, merged, several = report.merge_shards(docs, ["a.json", "b.json"])
    assert several and [r["device_name"] for r in merged[:2]] == ["NVIDIA H100 @node1", "NVIDIA A100 @node7"]
    table = report.markdown_table(merged, device_column=True).splitlines()
    assert table[0].startswith("| device ") and "NVIDIA A100 @node7 #0" in table[3]


@pytest.mark.parametrize("change,message", [
    (dict(git_revision="def456"), "differ in their cuconv revision"),
    (dict(selection={"targets": ["seed"], "algo": "auto"}), "differ in their suite selection"),
    (dict(cases_in_suite=9), "differ in their case count"),
    (dict(shard="2/4"), "split the suite differently"),
    (dict(shard="1/2"), "given twice 1/2"),
    (dict(selection=None), "not the --json of a `cuconv bench ... --shard I/N` run"),
])
def test_merge_refuses_shards_that_do_not_belong_together(change, message):
    names = [f"case{k}" for k in range(5)]
    docs = [_shard_doc(1, 2, names), _shard_doc(2, 2, names, **change)]
    with pytest.raises(report.MergeError, match=message):
        report.merge_shards(docs, ["a.json", "b.json"])
    with pytest.raises(report.MergeError, match="missing 2/3"):
        report.merge_shards([_shard_doc(1, 3, names), _shard_doc(3, 3, names)], ["a.json", "c.json"])


def test_cli_shards_then_merge(tmp_path, capsys):
    """`cuconv bench ... --shard I/N --json` then `cuconv bench merge`: the same cases, in the suite's
    order, as one table and one JSON/CSV."""
    base = ["bench", "conv2d", "--input", "1,8,7,7", "--weight", "8,8,3,3", "--padding", "1", "--algo", "all",
            "--emulate", "--no-resources", "--quiet"]
    from cuconv.cli import build_parser
    from cuconv.commands import bench as bench_cmd
    cases, _, _ = bench_cmd._build_cases(build_parser("bench").parse_args(base))
    listed = [c.algo for c in cases]
    assert len(set(listed)) == len(listed) > 3
    files = []
    for i in (1, 2, 3):
        files.append(str(tmp_path / f"s{i}.json"))
        assert cli_main([*base, "--shard", f"{i}/3", "--json", files[-1]]) == 0
    capsys.readouterr()
    out_json, out_csv = tmp_path / "all.json", tmp_path / "all.csv"
    assert cli_main(["bench", "merge", *files, "--json", str(out_json), "--csv", str(out_csv)]) == 0
    out = capsys.readouterr().out
    assert "3 shards merged" in out and "| device" not in out
    doc = json.loads(out_json.read_text())
    assert [r["algo"] for r in doc["rows"]] == listed
    assert doc["header"]["cases_in_suite"] == len(listed) and len(doc["header"]["shards"]) == 3
    assert len([ln for ln in out_csv.read_text().splitlines() if not ln.startswith("#")]) == len(listed) + 1
    assert cli_main(["bench", "merge", *files[:2]]) == 2
    assert "missing 3/3" in capsys.readouterr().err
    assert cli_main(["bench", "merge", *files, "--shard", "1/2"]) == 2
    assert "takes the shards' JSON files" in capsys.readouterr().err


def test_host_bench_cuconv_torch_rows():
    """`cuconv bench host`'s cuconv.torch rows: each operator's cached call runs cuconv's kernels
    (launches recorded on the record backend: the forward's plan, and more with the backward);
    the table names the torch figure beside cuconv.conv2d's. No time is checked (a benchmark)."""
    pytest.importorskip("torch")
    from cuconv import plan_conv2d
    from cuconv.backend import backend
    from cuconv.bench import host
    with backend("record") as be:
        be.keep_args = False
        rows = host.torch_rows(be, repeats=2, calls=1)
    by = {(r.op, r.case, r.algo): r for r in rows}
    assert {r.op for r in rows} == {f"cuconv.torch.{op}" for op in ("conv2d", "conv_transpose2d", "max_pool2d",
                                                                    "avg_pool2d", "adaptive_avg_pool2d")}
    assert all(r.launches >= 1 and r.cached_us > 0 and r.first_us > 0 for r in rows), rows
    x, w, b = np.ones((1, 64, 56, 56), np.float32), np.ones((64, 64, 3, 3), np.float32), np.ones(64, np.float32)
    forward = by[("cuconv.torch.conv2d", "ResNet-50 layer1 3x3", "auto")]
    assert forward.launches == len(plan_conv2d(x, w, b, 1, 1).launches)
    assert by[("cuconv.torch.conv2d", "ResNet-50 layer1 3x3", "forward+backward")].launches > forward.launches
    pool = by[("cuconv.torch.max_pool2d", "ResNet-50 maxpool 3x3/2", "pool")]
    assert by[("cuconv.torch.max_pool2d", "ResNet-50 maxpool 3x3/2", "forward+backward")].launches > pool.launches
    raw = host.HostTiming("conv2d", "ResNet-50 layer1 3x3", "auto", 6, 7.0, 6.5, 7.5, 400.0)
    table = host.markdown(dict(rows=[raw.as_dict()] + [r.as_dict() for r in rows], torch_eager_conv2d_us=3.0))
    assert (f"cuconv.torch.conv2d cached (ResNet-50 layer1 3x3, CPU tensors, no grad): {forward.cached_us:.1f} µs; "
            "cuconv.conv2d on NumPy arrays, same layer (relu fused): 7.0 µs") in table

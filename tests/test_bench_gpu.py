"""The bench harness's GPU paths: CUDA-event timing, the L2 flush, NVML readings, pool
memory, kernel replay, baselines, and a full timed run. Each test asserts what was measured
is well-formed (never a particular time); all are skipped with a reason without a device.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import requires_gpu

from cuconv.bench import measure
from cuconv.bench.cases import ConvCase, GemmCase
from cuconv.bench.runner import BenchOptions, Runner
from cuconv.cli import main as cli_main
from cuconv.problem import Conv2dProblem

pytestmark = [requires_gpu, pytest.mark.gpu]

QUICK = measure.TimingOptions(repeats=5, warmup_runs=1, warmup_s=0.0, budget_s=0.5)


@pytest.fixture
def cupy():
    import cupy
    return cupy


def test_time_gpu_statistics(cupy):
    a = cupy.random.default_rng(1).random((512, 512), dtype=cupy.float32)
    flusher = measure.L2Flusher(cupy.cuda.Device().attributes.get("L2CacheSize", 0))
    assert flusher.nbytes >= 64 << 20 and flusher.buffer.nbytes == flusher.nbytes
    stats = measure.time_gpu(lambda: a @ a, QUICK, flusher)
    assert stats.repeats == 5 and stats.stopped_by == "repeats"
    assert 0 < stats.p20_s <= stats.median_s <= stats.p80_s
    adaptive = measure.TimingOptions(min_repeats=3, max_repeats=40, noise_target=1e-9, budget_s=0.2,
                                     warmup_s=0.0)
    stats = measure.time_gpu(lambda: a @ a, adaptive, flusher)   # an unreachable noise target:
    assert stats.stopped_by in ("budget", "max_repeats") and stats.repeats >= 1


def test_nvml_snapshot(cupy):
    nvml = measure.Nvml(cupy.cuda.Device().id)
    snap = nvml.snapshot()
    if snap.error:
        pytest.skip(f"NVML is not readable here: {snap.error}")
    assert snap.sm_clock_mhz > 0 and snap.mem_clock_mhz > 0 and snap.temperature_c is not None
    fields = measure.nvml_fields(snap, nvml.snapshot())
    assert set(fields) == {"sm_clock_mhz_before", "sm_clock_mhz_after", "mem_clock_mhz", "power_w",
                           "temperature_c", "throttle_reasons", "throttled"}
    assert isinstance(fields["throttled"], bool)


def test_peak_pool_bytes_counts_what_was_live_at_once(cupy):
    def fn():
        tmp = cupy.empty(4 << 20, dtype=cupy.uint8)      # 4 MiB, freed before returning
        out = cupy.empty(1 << 20, dtype=cupy.uint8)      # 1 MiB, returned
        tmp.fill(1)
        del tmp
        return out
    assert measure.peak_pool_bytes(fn) == 5 << 20
    assert measure.peak_pool_bytes(lambda: None) == 0


def test_timed_conv_row():
    p = Conv2dProblem(4, 16, 30, 30, 24, 3, 3, 1, 1, 1, 1)
    runner = Runner(BenchOptions(timing=QUICK, progress=False, baseline=True))
    assert runner.gpu
    r = runner.run_case(ConvCase("t", "conv", problem=p, algo="im2col_gemm"))
    assert r["status"] == "timed" and r["verified"] is True, r["note"]
    assert r["verify_scope"].startswith("gpu, full size")
    assert r["repeats"] == 5 and 0 < r["time_p20_ms"] <= r["time_ms"] <= r["time_p80_ms"]
    assert r["timed"] in ("plan", "op")
    assert r["effective_tflops"] == pytest.approx(p.flops() / (r["time_ms"] * 1e-3) / 1e12, rel=1e-5)
    # the allocating call took at least its output and the column matrix from the pool
    assert r["mem_measured_bytes"] >= p.output_bytes() + p.im2col_bytes()
    assert r["kernel"] and r["registers"] > 0 and r["resource_arch"] == runner.device.arch
    assert r["peak_tflops"] > 0 and r["bound"] in ("compute", "memory") and r["pct_of_roofline"] > 0
    assert r["sm_clock_mhz_before"] is None or r["sm_clock_mhz_before"] > 0


def test_timed_gemm_row_against_cublas():
    runner = Runner(BenchOptions(timing=QUICK, progress=False))
    r = runner.run_case(GemmCase("t", "gemm", algo="gemm", M=257, N=129, K=300))
    assert r["status"] == "timed" and r["verified"] is True, r["note"]
    assert r["baseline"].startswith("cuBLAS") and r["baseline_time_ms"] > 0
    assert r["baseline_ratio"] == pytest.approx(r["baseline_time_ms"] / r["time_ms"], rel=1e-5)


def test_plan_execute_reproduces_the_op(cupy):
    import cuconv
    rng = cupy.random.default_rng(3)
    x = rng.random((2, 8, 13, 13), dtype=cupy.float32)
    w = rng.random((16, 8, 3, 3), dtype=cupy.float32)
    with cuconv.backend("cupy") as be:
        y = cuconv.conv2d(x, w, padding=1, algo="implicit_gemm")
        expected = y.copy()
        y.fill(cupy.nan)
        plan = cuconv.plan_conv2d(x, w, padding=1, algo="implicit_gemm")
        plan.execute(be, plan.bind(be, x, w, out=y))
    assert bool(cupy.array_equal(y, expected))


def test_wrong_output_is_not_timed():
    class WrongCase(ConvCase):
        def call(self, inputs, algo, out=None):
            out = super().call(inputs, algo, out)
            out[0, 0, 0, 0] += 1.0
            return out
    runner = Runner(BenchOptions(timing=QUICK, progress=False))
    r = runner.run_case(WrongCase("t", "wrong", problem=Conv2dProblem(2, 3, 9, 9, 4, 3, 3), algo="direct"))
    assert r["status"] == "verify-failed" and r["verified"] is False
    assert r["time_ms"] is None and r["mem_measured_bytes"] is None


def test_cudnn_baseline_when_pytorch_has_cuda():
    try:
        import torch
    except ImportError:
        pytest.skip("PyTorch is not installed: the cuDNN baseline is optional")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here")
    runner = Runner(BenchOptions(timing=QUICK, progress=False))
    r = runner.run_case(ConvCase("t", "conv", problem=Conv2dProblem(2, 16, 20, 20, 16, 3, 3, 1, 1, 1, 1)))
    assert r["baseline"].startswith("cuDNN") and r["baseline_ratio"] > 0


def test_cli_on_the_gpu(tmp_path, capsys):
    path = tmp_path / "gpu.json"
    rc = cli_main(["bench", "conv2d", "--input", "2,16,20,20", "--weight", "32,16,3,3", "--padding", "1",
                   "--repeats", "5", "--quiet", "--json", str(path)])
    out = capsys.readouterr().out
    doc = json.loads(path.read_text())
    assert rc == 0 and "NO GPU" not in out
    h = doc["header"]
    assert h["mode"] == "gpu" and h["device"] and h["sm_count"] > 0 and h["timing"]["repeats"] == 5
    (r,) = doc["rows"]
    assert r["status"] == "timed" and r["time_ms"] > 0 and np.isfinite(r["effective_tflops"])


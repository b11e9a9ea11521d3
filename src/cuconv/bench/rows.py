"""The bench row: its schema and its arithmetic (work, roofline, achieved rates).

One schema for every run, with or without a GPU: a field nothing measured is ``None``
(JSON ``null``, an empty CSV cell). The arithmetic is plain functions of numbers so the
tests can check it on hand-computed cases.

Two families of rates, on purpose:

* *effective* rates compare algorithms: ``effective_tflops`` divides the direct count
  2·N·K·P·Q·(C/groups)·R·S (the same for every algorithm) by the time, and
  ``achieved_gbps`` the compulsory bytes (read input and weight once, write output once).
* *hardware* rates say how busy the device was: ``pct_peak_compute`` uses the FLOPs the
  algorithm really does (Winograd fewer, plus its transforms), ``pct_peak_bandwidth`` the
  bytes it really moves in this model (compulsory + every workspace buffer written once and
  read once: the im2col column matrix, Winograd's transformed tiles). The roofline bound
  and ``roofline_time_ms`` = max(algo_flops / peak FLOP/s, algo_bytes / peak B/s) use the
  same two figures.
"""
from __future__ import annotations

from dataclasses import dataclass

SCHEMA = "cuconv-bench/1"

# (field, meaning). The order is the CSV column order and the JSON key order.
FIELD_DOCS: tuple[tuple[str, str], ...] = (
    ("suite", "suite the case belongs to (seed, resnet50, gemm, conv2d, model:resnet50, ...)"),
    ("case", "the case's name (a textbook section or a model layer)"),
    ("layer", "model layer name(s) with this problem"),
    ("count", "how often the problem occurs in the model (1 outside models)"),
    ("op", "conv2d | gemm | max_pool2d | avg_pool2d | ... | the layer type for layers without a kernel; "
           "backward rows: conv2d_input (dgrad), conv2d_weight (wgrad), conv2d_bias, max_pool2d_backward, ..., "
           "<type>_backward"),
    ("algo", "algorithm asked for (auto or a name from cuconv.algorithms)"),
    ("algo_used", "algorithm that ran (auto resolved for the full-size problem)"),
    ("kernel", "kernel config label(s) launched, '+'-joined in launch order"),
    ("args", "the problem's full arguments"),
    ("dtype", "element type"),
    ("device", "CUDA device index the row was measured on (null without a GPU)"),
    ("device_name", "name of that device (null without a GPU): what tells apart the rows of `cuconv bench merge`d "
                    "shards measured on different machines"),
    ("verified", "true/false: the output matched the float64 reference; null: not verified"),
    ("max_rel_error", "max|out-ref| / max|ref| of the verification"),
    ("tolerance", "the bound max_rel_error had to meet"),
    ("verify_scope", "what was verified: gpu full size (which images), or emulator at a reduced size"),
    ("timed", "what the CUDA events bracketed: 'plan' (the op's plan launched without host checks), "
              "'graph' (--graph: the plan's launches captured once in a CUDA graph, replayed) or 'op'"),
    ("time_ms", "median time per call (GPU, CUDA events, L2 flushed before each run)"),
    ("time_p20_ms", "20th percentile"),
    ("time_p80_ms", "80th percentile"),
    ("noise_pct", "relative standard deviation of the timed runs, %"),
    ("repeats", "timed runs"),
    ("flops", "direct count 2*N*K*P*Q*(C/groups)*R*S (GEMM: 2*M*N*K), the same for every algorithm"),
    ("algo_flops", "FLOPs the algorithm does (Winograd: element-wise products + transforms; FFT: "
                   "5*n*log2(n) per complex n-point transform, half per real one, + 8 per complex MAC)"),
    ("min_bytes", "compulsory DRAM bytes: inputs read once, output written once"),
    ("algo_bytes", "min_bytes + each workspace buffer written once and read once"),
    ("intensity", "algo_flops / algo_bytes, FLOP/byte"),
    ("effective_tflops", "flops / time"),
    ("achieved_gbps", "min_bytes / time"),
    ("pct_peak_compute", "algo_flops / time as % of the compute roof"),
    ("pct_peak_bandwidth", "algo_bytes / time as % of the bandwidth roof"),
    ("roofline_device", "device whose peaks the roofline columns use"),
    ("peak_tflops", "compute roof used (fp32 CUDA cores, or tensor cores for tensor-core kernels)"),
    ("peak_gbps", "DRAM bandwidth roof"),
    ("bound", "compute | memory: the roof that bounds this case"),
    ("roofline_time_ms", "roofline lower bound max(algo_flops/peak, algo_bytes/bandwidth)"),
    ("pct_of_roofline", "roofline_time / time, %"),
    ("mem_output_bytes", "output tensor bytes"),
    ("mem_workspace_theory_bytes", "cost model's workspace: im2col column matrix, Winograd V+M+U, FFT real "
                                   "planes + input, output and filter spectra; gradients: the plan's (wgrad's "
                                   "split-K partials)"),
    ("mem_workspace_op_bytes", "workspace the op says it allocates (it may chunk the batch)"),
    ("mem_theory_bytes", "mem_output_bytes + mem_workspace_theory_bytes"),
    ("mem_measured_bytes", "peak device memory the allocating call took from CuPy's pool (measured)"),
    ("resource_arch", "arch the registers/spills were compiled for"),
    ("registers", "registers per thread (max over the kernels launched)"),
    ("spill_bytes", "spill stores + loads (sum over the kernels launched)"),
    ("issue_ceiling", "static issue-bound ceiling of the compute kernel's main loop (the kernel with "
                      "the largest math share), fraction of its pipe's peak (cuconv.analysis)"),
    ("features", "the compute kernel's Hopper data movement from its SASS: TMA loads, WS (warp-specialized: its "
                 "main loop loads nothing, another loop feeds it), setmaxnreg; '-' for none (cuconv.analysis)"),
    ("kernels", "per kernel: label, launches, grid, block, registers, spill bytes, issue ceiling, math share, "
                "features"),
    ("baseline", "baseline library call (cuBLAS via cupy.matmul, cuDNN via PyTorch)"),
    ("baseline_time_ms", "baseline median time, measured the same way"),
    ("baseline_ratio", "baseline_time / time: 1 = as fast as the baseline, 0.5 = half its speed"),
    ("sm_clock_mhz_before", "NVML SM clock before the case"),
    ("sm_clock_mhz_after", "NVML SM clock after the case"),
    ("mem_clock_mhz", "NVML memory clock after the case"),
    ("power_w", "NVML power draw after the case"),
    ("temperature_c", "NVML GPU temperature after the case"),
    ("throttle_reasons", "NVML clock-event reasons seen before or after"),
    ("throttled", "true when a throttling reason (power cap, thermal, hw slowdown) was active"),
    ("status", "timed | verified-emulated | verify-failed | not-verified | cannot-run | not-built | "
               "no-kernel | error"),
    ("note", "why a field is empty, what was reduced, anything a reader must know"),
)
FIELDS: tuple[str, ...] = tuple(name for name, _ in FIELD_DOCS)

STATUSES = ("timed", "verified-emulated", "verify-failed", "not-verified", "cannot-run", "not-built",
            "no-kernel", "error")


def new_row(**values) -> dict:
    """A row with every field present (None unless given); unknown names are an error."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise KeyError(f"not bench row fields: {sorted(unknown)}")
    row = dict.fromkeys(FIELDS)
    row.update(values)
    return row


@dataclass(frozen=True)
class Work:
    """What one case must do in theory (from the cost model)."""
    flops: int                  # direct count
    algo_flops: int             # what the algorithm does
    min_bytes: int              # compulsory
    workspace_bytes: int = 0    # cost-model workspace (written once, read once)
    output_bytes: int = 0

    @property
    def algo_bytes(self) -> int:
        return self.min_bytes + 2 * self.workspace_bytes

    @property
    def intensity(self) -> float | None:
        return self.algo_flops / self.algo_bytes if self.algo_bytes else None


def roofline(algo_flops: float, algo_bytes: float, peak_flops: float | None,
             peak_bytes_per_s: float | None) -> tuple[str | None, float | None]:
    """(bound, lower-bound seconds): the slower of the compute time and the memory time at peak.

    A case with no FLOPs (a copy) is memory-bound; unknown peaks give (None, None).
    """
    if not peak_flops or not peak_bytes_per_s:
        return None, None
    t_compute = algo_flops / peak_flops
    t_memory = algo_bytes / peak_bytes_per_s
    return ("compute" if t_compute > t_memory else "memory"), max(t_compute, t_memory)


def fill_work(row: dict, work: Work, peaks=None, tensor_cores: bool = False) -> dict:
    """Set the theoretical columns (and the roofline ones when ``peaks`` is known)."""
    row.update(flops=work.flops, algo_flops=work.algo_flops, min_bytes=work.min_bytes,
               algo_bytes=work.algo_bytes, intensity=_sig(work.intensity),
               mem_output_bytes=work.output_bytes, mem_workspace_theory_bytes=work.workspace_bytes,
               mem_theory_bytes=work.output_bytes + work.workspace_bytes)
    if peaks is not None:
        peak = peaks.compute_peak(row.get("dtype") or "float32", tensor_cores)
        bound, t = roofline(work.algo_flops, work.algo_bytes, peak, peaks.dram_bytes_per_s)
        row.update(roofline_device=peaks.name, peak_tflops=_sig(peak / 1e12 if peak else None),
                   peak_gbps=_sig(peaks.dram_bytes_per_s / 1e9), bound=bound,
                   roofline_time_ms=_sig(t * 1e3 if t is not None else None))
    return row


def fill_achieved(row: dict, time_s: float) -> dict:
    """Set the rates that divide by a measured time (needs fill_work first)."""
    if not time_s or time_s <= 0:
        raise ValueError(f"a measured time must be positive, got {time_s!r}")
    row["effective_tflops"] = _sig(row["flops"] / time_s / 1e12)
    row["achieved_gbps"] = _sig(row["min_bytes"] / time_s / 1e9)
    if row.get("peak_tflops"):
        row["pct_peak_compute"] = _sig(100 * row["algo_flops"] / time_s / (row["peak_tflops"] * 1e12))
    if row.get("peak_gbps"):
        row["pct_peak_bandwidth"] = _sig(100 * row["algo_bytes"] / time_s / (row["peak_gbps"] * 1e9))
    if row.get("roofline_time_ms") is not None:
        row["pct_of_roofline"] = _sig(100 * row["roofline_time_ms"] * 1e-3 / time_s)
    return row


def _sig(v):
    """Six significant digits (derived figures; the inputs stay exact integers)."""
    return None if v is None else float(f"{v:.6g}")

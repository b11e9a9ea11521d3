"""Running cases: verify, then (on a GPU) time, read NVML, measure memory and the baseline.

With a GPU, per case: random inputs on the device, one recorded call into a NaN-poisoned
output, verification against the float64 reference (all images, or the first and last when
the reference would be too slow), then the allocating call under CuPy's pool hook (peak
memory), NVML before, CUDA-event timing of the recorded kernel launches replayed (the op's
Python checks stay outside the events; when a replay does not reproduce the op's output
exactly, the whole op is timed instead and the row says so), NVML after, and the baseline
timed the same way. A case that fails verification is reported and not timed.

Without a GPU (or with ``emulate=True``): the kernels the op launches at full size are
recorded in a dry run (nothing executes), each case runs on the CPU emulator at a reduced
size against the reference, the theoretical columns are filled, and every measured column
stays None.
"""
from __future__ import annotations

import datetime
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import emulator
from ..arch import normalize_arch
from ..backend import backend, gpu_available, gpu_unsupported_reason
from ..compile import ARCHS
from ..device import device_report
from ..emulator import LaunchError
from ..testing import poison, random_array
from .cases import REDUCTION_RULE, Case
from .cases import numpy_dtype as _np_dtype
from .measure import (
    L2Flusher,
    Nvml,
    TimingOptions,
    capture_graph,
    nvml_fields,
    peak_pool_bytes,
    time_gpu,
)
from .peaks import DevicePeaks, measured_device_peaks, published
from .record import kernel_resources, kernels_for_json, plan_kernels, recorded_kernels
from .rows import SCHEMA, STATUSES, fill_achieved, fill_work, new_row

# The CPU reference is NumPy float64; above this many FLOPs the GPU check uses a subset of images.
MAX_REFERENCE_FLOPS = 2e9
# A dry run allocates (never touches) the full-size arrays; above this it is skipped.
MAX_DRY_RUN_BYTES = 16 << 30
# Reduction lengths up to this meet the tolerance table as it stands (its comment: "CRS up to a
# few thousand"); longer ones scale it linearly, as the worst-case fp32 summation bound grows.
TOLERANCE_REDUCTION_LENGTH = 4096
SAME_AS = "run once for identical layers, first "
NOT_TIMED = "not timed: verified on the CPU emulator"


@dataclass
class BenchOptions:
    timing: TimingOptions = field(default_factory=TimingOptions)
    emulate: bool = False             # verify in the emulator and time nothing, even with a GPU
    device: int = 0
    roofline: str | None = None       # a name from peaks.PUBLISHED; default: the measured device
    arch: str | None = None           # arch for registers/spills without a GPU
    baseline: bool = True
    resources: bool = True            # compile each kernel with NVRTC for registers/spills
    seed: int = 0
    progress: bool = True
    max_reference_flops: float = MAX_REFERENCE_FLOPS
    graph: bool = False               # time replays of the plan captured in a CUDA graph


def git_revision() -> str | None:
    """``git describe --always --dirty`` of the checkout cuconv runs from (None when installed)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=here,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class Progress:
    """A one-line progress bar on stderr (a line per case when stderr is not a terminal)."""

    def __init__(self, total: int, enabled: bool = True, stream=None):
        self.total, self.done, self.enabled = total, 0, enabled and total > 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()

    def step(self, label: str) -> None:
        if not self.enabled:
            return
        width = 24
        filled = int(width * self.done / self.total)
        elapsed = time.perf_counter() - self.start
        text = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {elapsed:5.0f}s  {label}"
        if self.tty:
            self.stream.write("\r" + text[:120].ljust(120))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.done += 1

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r" + " " * 120 + "\r")
            self.stream.flush()


class Runner:
    def __init__(self, opts: BenchOptions | None = None):
        self.opts = opts or BenchOptions()
        self.report = device_report()
        self.gpu = (not self.opts.emulate) and gpu_available()
        self.device = None
        if self.gpu:
            if not 0 <= self.opts.device < len(self.report.devices):
                raise ValueError(f"--device {self.opts.device}: this machine has "
                                 f"{len(self.report.devices)} CUDA device(s)")
            unsupported = gpu_unsupported_reason(self.opts.device)
            if unsupported:     # said once, instead of every case failing the same way
                raise ValueError(unsupported)
            self.device = self.report.devices[self.opts.device]
        self.peaks: DevicePeaks | None = None
        if self.opts.roofline:
            self.peaks = published(self.opts.roofline)
        elif self.device is not None:
            self.peaks = measured_device_peaks(self.device)
        if self.device is not None:
            self.resource_arch = self.device.arch
        elif self.opts.arch:
            self.resource_arch = normalize_arch(self.opts.arch)
        elif self.peaks is not None and self.peaks.arch in ARCHS:
            self.resource_arch = self.peaks.arch
        else:
            self.resource_arch = "sm_90"
        self._flusher = None
        self._nvml = None
        self._measured: dict[tuple, dict] = {}

    # ------------------------------------------------------------------ header
    def header(self, command: str | None = None) -> dict:
        r = self.report
        h = dict(schema=SCHEMA, cuconv=r.cuconv, git_revision=git_revision(), python=r.python,
                 platform=r.platform, numpy=r.numpy, cupy=r.cupy, cuda_runtime=r.cuda_runtime,
                 cuda_driver=r.cuda_driver, nvrtc=r.nvrtc, nvml_driver=r.nvml_driver,
                 mode="gpu" if self.gpu else "emulator", started=_now(), command=command,
                 device=None, device_index=None, arch=None, sm_count=None, sm_clock_mhz=None,
                 sm_clock_max_mhz=None, mem_clock_mhz=None, mem_clock_max_mhz=None, l2_cache_bytes=None,
                 power_limit_w=None, no_gpu_reason=None)
        if self.device is not None:
            d = self.device
            h.update(device=d.name, device_index=d.index, arch=d.arch, sm_count=d.sm_count,
                     sm_clock_mhz=d.sm_clock_mhz, sm_clock_max_mhz=d.sm_clock_max_mhz,
                     mem_clock_mhz=d.mem_clock_mhz, mem_clock_max_mhz=d.mem_clock_max_mhz,
                     l2_cache_bytes=d.l2_cache_bytes, power_limit_w=d.power_limit_w)
        elif self.opts.emulate and r.devices:
            h["no_gpu_reason"] = "--emulate: verification on the CPU emulator only, nothing timed"
        else:
            h["no_gpu_reason"] = r.errors.get("devices", "no CUDA device was found")
        p = self.peaks
        h.update(roofline_device=p.name if p else None, roofline_source=p.source if p else None,
                 peak_fp32_tflops=p.fp32_flops / 1e12 if p else None,
                 peak_dram_gbps=p.dram_bytes_per_s / 1e9 if p else None,
                 resource_arch=self.resource_arch if self.opts.resources else None)
        t = self.opts.timing
        if self.gpu:
            h.update(timing=dict(warmup_runs=t.warmup_runs, repeats=t.repeats, min_repeats=t.min_repeats,
                                 max_repeats=t.max_repeats, noise_target_pct=100 * t.noise_target,
                                 budget_s=t.budget_s, flush_l2=t.flush_l2, graph=self.opts.graph),
                     verification=None)
        else:
            h.update(timing=None, verification=REDUCTION_RULE)
        return h

    # ------------------------------------------------------------------ running
    def run(self, cases: list[Case]) -> list[dict]:
        progress = Progress(len(cases), self.opts.progress)
        rows = []
        try:
            for case in cases:
                progress.step(case.name)
                rows.append(self.run_case(case))
        finally:
            progress.close()
        return rows

    def run_case(self, case: Case) -> dict:
        """One row; a problem already run in this session (a repeated model layer) is not re-run."""
        key = (type(case).__name__, case.op, case.grad_pass, case.args(), case.dtype, case.algo)
        first = self._measured.get(key)
        if first is not None:
            row = dict(first, suite=case.suite, case=case.name, layer=case.layer or None, count=case.count)
            row["note"] = "; ".join(filter(None, [first["note"], f"{SAME_AS}{first['case']}"]))
            return row
        row = self._run_case(case)
        self._measured[key] = row
        return row

    def _run_case(self, case: Case) -> dict:
        row = new_row(suite=case.suite, case=case.name, layer=case.layer or None, count=case.count, op=case.op,
                      algo=case.algo, args=case.args(), dtype=case.dtype,
                      device=self.opts.device if self.gpu else None,
                      device_name=self.device.name if self.device is not None else None)
        try:
            algo, reason = case.resolve_algo()
            row["algo_used"] = algo
            if reason is not None:
                status, _, note = reason.partition(": ")
                fill_work(row, case.work(algo), self.peaks)
                row.update(status=status if status in STATUSES else "error", note=note or reason)
                return row
            row["tolerance"] = scaled_tolerance(case, algo)
            row["mem_workspace_op_bytes"] = case.workspace_op_bytes(algo)
            if self.gpu:
                self._run_gpu(case, algo, row)
            else:
                self._run_emulated(case, algo, row)
        except Exception as exc:  # one broken case must not end the run
            row.update(status="error", note=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            if row["flops"] is None:
                try:
                    fill_work(row, case.work(row["algo_used"]), self.peaks)
                except Exception:
                    pass
        return row

    def _resources(self, row: dict, case: Case, algo: str, kernels: list[dict], note: list[str]) -> None:
        if self.opts.resources:
            regs, spills, problem = kernel_resources(kernels, self.resource_arch)
            row["resource_arch"] = self.resource_arch
            if problem:
                note.append(problem)
        else:
            regs = spills = None
        # The row's ceiling is its compute kernel's: the one whose main loop has the largest math
        # share (a Winograd row's GEMM, not its memory-bound transforms); each kernel's is in `kernels`.
        rated = [k for k in kernels if k.get("issue_ceiling") is not None]
        compute = max(rated, key=lambda k: k.get("math_share") or 0.0) if rated else None
        row.update(kernel="+".join(k["label"] for k in kernels) or None, registers=regs, spill_bytes=spills,
                   issue_ceiling=compute["issue_ceiling"] if compute else None,
                   features=compute.get("features") if compute else None,
                   kernels=kernels_for_json(kernels))
        fill_work(row, case.work(algo), self.peaks, case.uses_tensor_cores(algo, [k["label"] for k in kernels]))

    # ------------------------------------------------------------------ no GPU
    def _run_emulated(self, case: Case, algo: str, row: dict) -> None:
        note: list[str] = list(case.notes(algo))
        kernels = None
        dt = _np_dtype(case.dtype)
        nbytes = case.problem_size() * np.dtype(dt).itemsize
        if nbytes <= MAX_DRY_RUN_BYTES:
            try:   # the full-size call on the record backend: which kernels, what grids
                inputs = case.prepare_inputs({k: np.empty(s, dt) for k, s in case.input_shapes().items()},
                                             np.asarray, dry=True)
                kernels = recorded_kernels(lambda: case.call(inputs, algo, out=np.empty(case.output_shape(), dt)))
            except Exception as exc:
                note.append(f"full-size record run failed ({type(exc).__name__}: {exc}); kernel column from "
                            "the reduced run")
        else:
            note.append("full-size record run skipped (too large); kernel column from the reduced run")

        missing = emulator_missing()
        if missing:
            self._resources(row, case, algo, kernels or [], note)
            note.append(missing)
            row.update(status="not-verified", note="; ".join(note))
            return
        small = case.reduced(algo)
        if small is None:
            note.append(f"no reduced size that {algo} accepts; not verified")
            self._resources(row, case, algo, kernels or [], note)
            row.update(status="not-verified", note="; ".join(note))
            return
        rng = np.random.default_rng(self.opts.seed)
        scope = f"emulator, reduced: {small.args()}"
        inputs = small.prepare_inputs({k: random_array(rng, s, dt) for k, s in small.input_shapes().items()},
                                      np.asarray)
        out = np.empty(small.output_shape(), dt)
        if kernels is None:
            kernels = recorded_kernels(lambda: small.call(inputs, algo, out=np.empty_like(out)))
        with backend("emulator"):
            poison(out)
            try:
                small.call(inputs, algo, out=out)
            except LaunchError as exc:   # the kernel faulted: a failed verification, not a harness error
                fault = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            else:
                fault = None
        if fault:
            self._resources(row, case, algo, kernels, note)
            row.update(verified=False, verify_scope=scope, status="verify-failed",
                       note="; ".join([fault, *note]))
            return
        err = small.verify_error(out, inputs)
        tol = scaled_tolerance(small, algo)
        verified = judge(err, tol, case, algo, note)
        self._resources(row, case, algo, kernels, note)
        row.update(verified=verified, max_rel_error=err, tolerance=tol, verify_scope=scope,
                   status={True: "verified-emulated", False: "verify-failed", None: "not-verified"}[verified])
        note.insert(0, NOT_TIMED)
        row["note"] = "; ".join(note)

    # ------------------------------------------------------------------ GPU
    def _run_gpu(self, case: Case, algo: str, row: dict) -> None:
        import cupy  # noqa: PLC0415  (optional: only on a machine with a GPU)
        note: list[str] = list(case.notes(algo))
        with cupy.cuda.Device(self.opts.device), backend("cupy") as be:
            if self._flusher is None:
                self._flusher = L2Flusher(self.device.l2_cache_bytes)
                self._nvml = Nvml(self.opts.device)
            gen = cupy.random.default_rng(self.opts.seed)
            dt = _np_dtype(case.dtype)
            inputs = case.prepare_inputs({k: (gen.random(s, dtype=cupy.float32) * 2 - 1).astype(dt)
                                          for k, s in case.input_shapes().items()}, cupy.asarray)
            out = cupy.empty(case.output_shape(), dt)
            plan, env = case.plan(inputs, algo, out)
            kernels = plan_kernels(plan)
            self._resources(row, case, algo, kernels, note)
            poison(out)
            case.call(inputs, algo, out=out)      # the op as a user calls it is what is verified
            cupy.cuda.get_current_stream().synchronize()

            subset, scope = case.verify_subsets(self.opts.max_reference_flops)
            err = case.verify_error(out, inputs, subset)
            verified = judge(err, row["tolerance"], case, algo, note)
            row.update(verified=verified, max_rel_error=err, verify_scope=scope)
            if not verified:
                row.update(status="verify-failed" if verified is False else "not-verified",
                           note="; ".join(note + ["not timed"]))
                return

            # Timed: the plan's launches alone (no host checks between them), when they
            # reproduce the verified output bit for bit; else the whole op call.
            expected = out.copy()
            workspace = be.empty((plan.workspace_bytes,), np.uint8) if plan.workspace_bytes else None
            poison(out)
            plan.execute(be, env, workspace)
            cupy.cuda.get_current_stream().synchronize()
            if bool(cupy.array_equal(out, expected)):
                def fn():
                    plan.execute(be, env, workspace)
                row["timed"] = "plan"
                if self.opts.graph:
                    fn = self._graph_or(fn, plan, be, env, workspace, out, expected, row, note)
            else:
                def fn():
                    case.call(inputs, algo, out=out)
                row["timed"] = "op"
                note.append("the plan's launches did not reproduce the op's output; timed the whole op")
            row["mem_measured_bytes"] = peak_pool_bytes(lambda: case.call(inputs, algo))
            before = self._nvml.snapshot()
            stats = time_gpu(fn, self.opts.timing, self._flusher)
            after = self._nvml.snapshot()
            row.update(time_ms=stats.median_s * 1e3, time_p20_ms=stats.p20_s * 1e3, time_p80_ms=stats.p80_s * 1e3,
                       noise_pct=100 * stats.noise, repeats=stats.repeats, **nvml_fields(before, after))
            fill_achieved(row, stats.median_s)
            if stats.stopped_by == "budget" and stats.noise > self.opts.timing.noise_target:
                note.append(f"time budget reached at {100 * stats.noise:.2g}% noise")
            if row["throttled"]:
                note.append("THROTTLED during the case: " + ", ".join(row["throttle_reasons"]))
            if before.error:
                note.append(before.error)
            if self.opts.baseline:
                self._baseline(case, inputs, row, note)
        row.update(status="timed", note="; ".join(note) or None)

    @staticmethod
    def _graph_or(fn, plan, be, env, workspace, out, expected, row, note):
        """``--graph``: the plan's launches captured once in a CUDA graph and replayed (no launch
        overhead between them: nvbench's batch habit), when a replay reproduces the verified
        output bit for bit; else ``fn`` with a note saying why."""
        import cupy  # noqa: PLC0415
        try:
            replay = capture_graph(lambda: plan.execute(be, env, workspace))
            poison(out)
            replay()
            cupy.cuda.get_current_stream().synchronize()
        except Exception as exc:
            note.append(f"--graph: capture failed ({type(exc).__name__}: {exc}); timed the plan's launches")
            return fn
        if not bool(cupy.array_equal(out, expected)):
            note.append("--graph: the replayed graph did not reproduce the output; timed the plan's launches")
            return fn
        row["timed"] = "graph"
        return replay

    def _baseline(self, case, inputs, row, note) -> None:
        try:
            b = case.baseline(inputs)
        except Exception as exc:
            note.append(f"baseline unavailable ({type(exc).__name__}: {exc})")
            return
        if b is None:
            if case.op == "conv2d":
                note.append("no cuDNN baseline: PyTorch with CUDA is not importable")
            return
        name, fn = b
        try:
            stats = time_gpu(fn, self.opts.timing, self._flusher)
        except Exception as exc:
            note.append(f"baseline {name} failed ({type(exc).__name__}: {exc})")
            return
        row.update(baseline=name, baseline_time_ms=stats.median_s * 1e3,
                   baseline_ratio=stats.median_s / (row["time_ms"] * 1e-3))


def emulator_missing() -> str | None:
    """Why the CPU emulator cannot run kernels here, or None when it can."""
    if not hasattr(emulator, "RawModule"):
        return "the CPU emulator is not built yet (cuconv.emulator has no RawModule); not verified"
    return None


def scaled_tolerance(case: Case, algo: str) -> float | None:
    """The (dtype, algo) table entry, scaled linearly for reductions longer than the table covers;
    None when the table has no entry."""
    try:
        tol = case.tolerance(algo)
    except KeyError:
        return None
    return tol * max(1.0, case.reduction_length() / TOLERANCE_REDUCTION_LENGTH)


def judge(err: float, tol: float | None, case: Case, algo: str, note: list[str]) -> bool | None:
    """Verified (True/False), or None when there is no tolerance to judge by; notes why."""
    if not np.isfinite(err):
        note.append("the output holds NaN or Inf (an element left unwritten, or an overflow)")
    if tol is None:
        note.append(f"no tolerance for ({case.dtype!r}, {algo!r}) in cuconv.testing.TOLERANCES: "
                    f"max relative error {err:.3g}, not judged")
        return None
    return bool(err <= tol)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


"""Measuring on the GPU: CUDA-event timing with L2 flushes, NVML readings, pool memory.

Timing follows nvbench and ``triton.testing.do_bench``: warm up, then repeat
[flush L2] [event] fn() [event] on CuPy's current stream, where the flush writes a
buffer twice the size of L2 (so no operand is left cached) and lies outside the events;
batches of runs are synchronised together, and it stops once the relative standard
deviation of the samples falls under the noise target (after ``min_repeats``), at
``max_repeats``, or when the time budget is spent. The statistics are plain functions
of a list of seconds (tested without a GPU).

Nothing here is imported without a GPU except the statistics; CuPy and NVML are imported
inside the functions that need them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..device import THROTTLING, nvml_handle, nvml_readings


# ----------------------------------------------------------------- statistics
def percentile(sorted_values, q: float) -> float:
    """Linear-interpolation percentile (NumPy's default) of an ascending list, q in [0, 100]."""
    if not sorted_values:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def noise(values) -> float:
    """Relative standard deviation (sample stdev / mean), nvbench's "Noise"; inf for < 2 samples."""
    n = len(values)
    if n < 2:
        return math.inf
    mean = sum(values) / n
    if mean <= 0:
        return math.inf
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(var) / mean


@dataclass(frozen=True)
class TimingStats:
    median_s: float
    p20_s: float
    p80_s: float
    noise: float          # relative standard deviation (a fraction)
    repeats: int
    stopped_by: str       # "noise" | "repeats" | "max_repeats" | "budget"

    @classmethod
    def from_samples(cls, samples, stopped_by: str = "repeats") -> "TimingStats":
        s = sorted(samples)
        return cls(percentile(s, 50), percentile(s, 20), percentile(s, 80), noise(samples), len(s),
                   stopped_by)


@dataclass(frozen=True)
class TimingOptions:
    warmup_runs: int = 3            # at least this many, and at least warmup_s of work
    warmup_s: float = 0.025
    repeats: int | None = None      # fixed count (overrides the noise rule)
    min_repeats: int = 10
    max_repeats: int = 2000
    noise_target: float = 0.005     # nvbench's default max noise, 0.5 %
    budget_s: float = 2.0           # wall-clock budget per timed function
    flush_l2: bool = True

    def __post_init__(self):
        if self.repeats is not None and self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.budget_s <= 0:
            raise ValueError(f"the time budget must be positive, got {self.budget_s}")
        if not 0 < self.noise_target:
            raise ValueError(f"the noise target must be positive, got {self.noise_target}")


def should_stop(samples, opts: TimingOptions, elapsed_s: float) -> str | None:
    """Why the sampling loop stops now, or None to go on."""
    n = len(samples)
    if opts.repeats is not None:
        return "repeats" if n >= opts.repeats else None
    if n >= opts.max_repeats:
        return "max_repeats"
    if n >= opts.min_repeats and noise(samples) <= opts.noise_target:
        return "noise"
    if n >= 1 and elapsed_s >= opts.budget_s:
        return "budget"
    return None


# ----------------------------------------------------------------- L2 flush
class L2Flusher:
    """Writes a buffer of 2 x L2 bytes (at least 64 MiB) on the current stream."""

    def __init__(self, l2_bytes: int | None):
        import cupy  # noqa: PLC0415
        self.nbytes = max(2 * int(l2_bytes or 0), 64 << 20)
        self.buffer = cupy.empty(self.nbytes, dtype=cupy.uint8)

    def __call__(self) -> None:
        import cupy  # noqa: PLC0415
        stream = cupy.cuda.get_current_stream()
        cupy.cuda.runtime.memsetAsync(self.buffer.data.ptr, 0, self.nbytes, stream.ptr)


def time_gpu(fn, opts: TimingOptions, flusher: L2Flusher | None) -> TimingStats:
    """Time ``fn()`` (which queues GPU work on the current stream) with CUDA events."""
    import cupy  # noqa: PLC0415

    stream = cupy.cuda.get_current_stream()
    # Warm-up: compile, autotune, fill caches of the pool; runs until both minimums are met.
    t0 = time.perf_counter()
    runs = 0
    while runs < opts.warmup_runs or time.perf_counter() - t0 < opts.warmup_s:
        fn()
        stream.synchronize()
        runs += 1
        if runs >= 1000:
            break
    per_run = max((time.perf_counter() - t0) / runs, 1e-6)

    samples: list[float] = []
    start = time.perf_counter()
    batch = 1
    while True:
        events = []
        for _ in range(batch):
            if flusher is not None and opts.flush_l2:
                flusher()
            begin, end = cupy.cuda.Event(), cupy.cuda.Event()
            begin.record(stream)
            fn()
            end.record(stream)
            events.append((begin, end))
        events[-1][1].synchronize()
        samples.extend(cupy.cuda.get_elapsed_time(b, e) * 1e-3 for b, e in events)
        reason = should_stop(samples, opts, time.perf_counter() - start)
        if reason:
            return TimingStats.from_samples(samples, reason)
        # Batches of about 50 ms of work (at most 100 runs) keep the sync overhead small.
        left = (opts.repeats - len(samples)) if opts.repeats else opts.max_repeats - len(samples)
        batch = max(1, min(100, int(0.05 / per_run), left))


# ----------------------------------------------------------------- CUDA graphs
def capture_graph(fn):
    """Capture the GPU work ``fn()`` queues into a CUDA graph; returns ``replay()``, which launches
    the graph on the current stream (its ``.graph`` attribute is the ``cupy.cuda.Graph``).

    ``fn`` runs once under stream capture on a side stream (so nothing executes then): it must
    queue the same work each time, synchronise nothing, read no device data and allocate nothing
    that it frees (Plan.execute with the workspace passed in keeps to this; run it once before
    capturing, so its kernels are compiled and loaded). The arrays it uses must outlive the
    graph: replays read and write the same addresses.
    """
    import cupy  # noqa: PLC0415

    current = cupy.cuda.get_current_stream()
    side = cupy.cuda.Stream(non_blocking=True)
    side.wait_event(current.record())          # the capture comes after the work queued so far
    with side:
        side.begin_capture()
        try:
            fn()
        finally:
            graph = side.end_capture()

    def replay() -> None:
        graph.launch(cupy.cuda.get_current_stream())
    replay.graph = graph
    return replay


# ----------------------------------------------------------------- NVML
@dataclass(frozen=True)
class NvmlSnapshot:
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    power_w: float | None = None
    temperature_c: int | None = None
    throttle_reasons: tuple[str, ...] = ()
    error: str | None = None

    @property
    def throttled(self) -> bool:
        return any(r in THROTTLING for r in self.throttle_reasons)


class Nvml:
    """NVML readings of the CUDA device ``index`` (matched by PCI bus id); never raises."""

    def __init__(self, index: int):
        self.handle = None
        self.error = None
        try:
            import cupy  # noqa: PLC0415
            pci = cupy.cuda.runtime.deviceGetPCIBusId(index)
            self.handle = nvml_handle(pci, index)
        except Exception as exc:  # no NVML, no permission, ...
            self.error = f"NVML unavailable ({exc})"

    def snapshot(self) -> NvmlSnapshot:
        if self.handle is None:
            return NvmlSnapshot(error=self.error)
        try:
            r = nvml_readings(self.handle)
        except Exception as exc:
            return NvmlSnapshot(error=f"NVML reading failed ({exc})")
        return NvmlSnapshot(r.get("sm_clock_mhz"), r.get("mem_clock_mhz"), r.get("power_w"),
                            r.get("temperature_c"), tuple(r.get("throttle_reasons") or ()))


def nvml_fields(before: NvmlSnapshot, after: NvmlSnapshot) -> dict:
    """The row's device-state columns from readings before and after a case."""
    reasons = sorted(set(before.throttle_reasons) | set(after.throttle_reasons))
    return dict(sm_clock_mhz_before=before.sm_clock_mhz, sm_clock_mhz_after=after.sm_clock_mhz,
                mem_clock_mhz=after.mem_clock_mhz, power_w=after.power_w,
                temperature_c=after.temperature_c, throttle_reasons=reasons,
                throttled=before.throttled or after.throttled)


# ----------------------------------------------------------------- memory
def _peak_hook_class():
    from cupy.cuda import memory_hook  # noqa: PLC0415

    class PeakMemoryHook(memory_hook.MemoryHook):
        """Peak bytes held, among the blocks taken from CuPy's pool inside the ``with`` block."""
        name = "CuconvPeakMemoryHook"

        def __init__(self):
            self.live: dict[int, int] = {}
            self.current = 0
            self.peak = 0

        def malloc_postprocess(self, **kw):
            size = int(kw["mem_size"])
            self.live[int(kw["mem_ptr"])] = size
            self.current += size
            self.peak = max(self.peak, self.current)

        def free_postprocess(self, **kw):
            size = self.live.pop(int(kw["mem_ptr"]), None)
            if size is not None:
                self.current -= size

    return PeakMemoryHook


def peak_pool_bytes(fn) -> int:
    """Run ``fn()`` once and synchronise; the peak bytes it held from CuPy's memory pool.

    Measured by the pool's own malloc/free hooks (sizes as the pool rounds them, 512-byte
    granularity), so it counts the op's output and workspace, not its inputs. What ``fn``
    returns stays alive until the hook is removed, so a returned output is counted.
    """
    import cupy  # noqa: PLC0415
    hook = _peak_hook_class()()
    with hook:
        result = fn()
        cupy.cuda.get_current_stream().synchronize()
    del result
    return hook.peak

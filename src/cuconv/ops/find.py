"""``cuconv.find``: time every applicable algorithm on the GPU once, remember the fastest.

cuDNN's ``cudnnFindConvolutionForwardAlgorithm`` habit: the caller's own tensors are
run through every algorithm that can implement the problem (within
``max_workspace_bytes``), each timed with CUDA events after warm-up (median of
``repeats``), and the winner is cached per (device name, dtype, problem) in memory
and, with ``cache_file=``, in a JSON file that later processes read back::

    res = cuconv.find(x, w, padding=1, cache_file="conv_algos.json")
    y = cuconv.conv2d(x, w, padding=1, algo=res.algo)

``find`` synchronizes the device (it has to, to read the timers); it is a planning
step, not an op for a stream pipeline.

On the CPU emulator there is nothing to time — a CPU run of a kernel says nothing
about its speed on a GPU — so ``find`` raises ``TimingUnavailableError`` there unless
a ``timer`` is given. ``timer(algo_name, launch) -> seconds`` replaces the CUDA-event
timer (``launch()`` runs the convolution once with that algorithm); the cache logic
is the same with either.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..backend import current_backend
from ..problem import Conv2dProblem
from . import _common
from ._conv_frontend import build_spec
from .conv2d import ALGORITHMS, algorithm, algorithms, plan_conv2d

CACHE_FORMAT = "cuconv.find/1"


class TimingUnavailableError(RuntimeError):
    """``cuconv.find`` was asked to time kernels where no GPU timing is possible."""


@dataclass(frozen=True)
class FindResult:
    """The outcome of ``cuconv.find``.

    ``algo``: the fastest algorithm; ``times``: median seconds of each timed algorithm;
    ``skipped``: algorithm -> why it was not timed (cannot implement the problem, too
    much workspace); ``failed``: algorithm -> the error it raised while being timed;
    ``from_cache``: True when the answer came from the memory or file cache (then
    ``times`` are the ones recorded when it was timed).
    """
    algo: str
    times: dict
    problem: Conv2dProblem
    device: str
    key: str
    skipped: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)
    from_cache: bool = False

    def __str__(self) -> str:
        lines = [f"cuconv.find on {self.device}: {self.problem.describe()} {self.problem.dtype}"
                 + (" (cached)" if self.from_cache else "")]
        for name, t in sorted(self.times.items(), key=lambda kv: kv[1]):
            mark = "*" if name == self.algo else " "
            lines.append(f" {mark} {name:28s} {t * 1e6:12.2f} us")
        for name, why in self.skipped.items():
            lines.append(f"   {name:28s} skipped: {why}")
        for name, why in self.failed.items():
            lines.append(f"   {name:28s} FAILED: {why}")
        return "\n".join(lines)


# key -> {"algo", "times", "device", "problem", "dtype"}
_MEMORY: dict[str, dict] = {}
_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every in-memory result (files are left alone)."""
    with _LOCK:
        _MEMORY.clear()


def cache_key(problem: Conv2dProblem, device: str) -> str:
    """The cache key: device name, dtype and the problem's full description."""
    return f"{device}|{problem.dtype}|{problem.describe()}"


def device_name(be) -> str:
    if be.name == "cupy":
        import cupy  # noqa: PLC0415
        dev = cupy.cuda.Device()
        name = cupy.cuda.runtime.getDeviceProperties(dev.id)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    return f"{be.name}"


def cuda_event_timer(repeats: int = 10, warmup: int = 3) -> Callable[[str, Callable[[], None]], float]:
    """Median seconds per launch on the current stream, from CUDA events.

    ``warmup`` untimed launches first (they also compile the kernels). Then each of the
    ``repeats`` samples brackets ``inner`` back-to-back launches with two events and
    divides by ``inner``: a single short kernel between two events would also time the
    host's launch overhead (the GPU idles between the start event and the kernel), so
    ``inner`` is chosen from a first sample to make a bracket last about 200 us (1..100).
    """
    def elapsed(stream, launch, inner: int) -> float:
        import cupy  # noqa: PLC0415
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record(stream)
        for _ in range(inner):
            launch()
        end.record(stream)
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) * 1e-3

    def timer(name: str, launch: Callable[[], None]) -> float:
        import cupy  # noqa: PLC0415
        stream = cupy.cuda.get_current_stream()
        for _ in range(warmup):
            launch()
        first = elapsed(stream, launch, 1)
        inner = int(min(100, max(1, np.ceil(200e-6 / max(first, 1e-9)))))
        return float(np.median([elapsed(stream, launch, inner) / inner for _ in range(repeats)]))
    return timer


# --------------------------------------------------------------------------- the file cache
def _read_cache_file(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cache_file {str(path)!r} is not a readable cuconv.find cache: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(data.get("entries"), dict):
        raise ValueError(f"cache_file {str(path)!r} is not a cuconv.find cache "
                         f"(expected a JSON object with format {CACHE_FORMAT!r} and 'entries')")
    return data["entries"]


def _write_cache_file(path: Path, entries: dict[str, dict]) -> None:
    """Merge ``entries`` into the file, replacing it atomically (a reader never sees half a file)."""
    merged = _read_cache_file(path)
    merged.update(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"format": CACHE_FORMAT, "entries": merged}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- find
def computes_in_tf32(name: str, problem: Conv2dProblem) -> bool:
    """True for the algorithms that run a float32 problem on tf32 tensor cores (10-bit
    mantissas): ``find`` times them only with ``allow_tf32=True``, as ``auto`` takes them only
    then (PyTorch's ``allow_tf32=False`` habit)."""
    return ALGORITHMS[name].computes_tf32(problem.dtype)


def _still_usable(entry: dict, problem: Conv2dProblem, max_workspace_bytes, layout, allow_tf32) -> bool:
    """A cached winner answers a new call if that call's candidates are a subset of the timed
    ones (its workspace limit is no looser) and the winner is still one of them."""
    timed_limit = entry.get("max_workspace_bytes")
    if timed_limit is not None and (max_workspace_bytes is None or max_workspace_bytes > timed_limit):
        return False  # more algorithms may apply now than were timed
    name = entry.get("algo")
    for info in algorithms(problem, max_workspace_bytes, layout=layout, allow_tf32=allow_tf32):
        if info.name == name:
            return info.ok
    return False  # no longer registered


def find(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None, residual=None,
         max_workspace_bytes=None, layout="NCHW", allow_tf32: bool = False, cache_file=None, repeats: int = 10,
         warmup: int = 3, algos=None, timer: Callable[[str, Callable[[], None]], float] | None = None,
         refresh: bool = False) -> FindResult:
    """Time every algorithm that can run this convolution and return the fastest.

    Arguments as ``cuconv.conv2d`` (the epilogue arguments make the timed launches match
    the real ones; ``layout="NHWC"`` takes NHWC/KRSC arrays). ``max_workspace_bytes``
    excludes algorithms that need more. ``allow_tf32``: also time float32-on-tf32
    tensor-core algorithms (less precise).
    ``algos``: time only these algorithm names (default: all registered).
    ``cache_file``: a JSON file read before and updated after timing. ``refresh=True``
    re-times even when a cached answer exists. ``timer``: see the module docstring.
    The cache key covers the problem, dtype, layout and device; answers found with a
    different ``allow_tf32``/``algos`` are kept apart by a suffix on the key.
    """
    be = current_backend()
    if timer is None and be.name != "cupy":
        raise TimingUnavailableError(
            f"cuconv.find times kernels with CUDA events on a GPU, but the current backend is "
            f"{be.name!r}: a CPU-emulated run says nothing about GPU speed. Use "
            "cuconv.algorithms(problem) to see which algorithms apply, or pass timer= to supply timings.")
    if not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    if not isinstance(warmup, (int, np.integer)) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    if max_workspace_bytes is not None and max_workspace_bytes < 0:
        raise ValueError(f"max_workspace_bytes must be >= 0, got {max_workspace_bytes}")

    # The checks of conv2d, once, before anything runs.
    x, w = _common.native(be, x, "input"), _common.native(be, w, "weight")
    bias, residual = _common.native(be, bias, "bias"), _common.native(be, residual, "residual")
    tf32_arg = True if allow_tf32 else None
    spec = build_spec(be, x, w, bias, residual, None, stride, padding, dilation, groups, activation,
                      max_workspace_bytes, layout, tf32_arg, {})
    problem = spec.problem
    conv_args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, layout=layout,
                     activation=activation, residual=residual, allow_tf32=tf32_arg,
                     max_workspace_bytes=max_workspace_bytes)

    if algos is not None:
        algos = tuple(dict.fromkeys([algos] if isinstance(algos, str) else algos))
        for name in algos:
            algorithm(name)  # unknown name -> ValueError listing the available ones
    allowed = set(algos) if algos is not None else None

    device = device_name(be)
    key = cache_key(problem, device)
    if layout != "NCHW":
        key += f"|{layout}"
    if allow_tf32:
        key += "|tf32"
    if allowed is not None:
        key += "|only:" + ",".join(sorted(allowed))
    path = Path(cache_file) if cache_file is not None else None
    if path is not None:
        file_entries = _read_cache_file(path)
        with _LOCK:
            for k, v in file_entries.items():
                _MEMORY.setdefault(k, v)

    if not refresh:
        with _LOCK:
            entry = _MEMORY.get(key)
        if entry is not None and _still_usable(entry, problem, max_workspace_bytes, layout, tf32_arg):
            return FindResult(entry["algo"], dict(entry["times"]), problem, device, key, from_cache=True)

    timer = timer or cuda_event_timer(repeats, warmup)
    out = be.empty(spec.out_shape, x.dtype)
    env0 = {"x": x, "w": w, "bias": bias, "residual": residual, "out": out}
    times, skipped, failed = {}, {}, {}
    for info in algorithms(problem, max_workspace_bytes, layout=layout, allow_tf32=tf32_arg):
        if not info.ok:
            skipped[info.name] = info.reason
            continue
        if allowed is not None and info.name not in allowed:
            skipped[info.name] = "not in algos="
            continue
        if not allow_tf32 and computes_in_tf32(info.name, problem):
            skipped[info.name] = "computes float32 in tf32 (pass allow_tf32=True to time it)"
            continue
        try:
            plan = plan_conv2d(x, w, bias, algo=info.name, **conv_args)
        except (TypeError, ValueError) as exc:     # e.g. misaligned arrays this algorithm refuses
            skipped[info.name] = str(exc)
            continue

        # The arguments were checked once above; each timed launch goes straight to the
        # plan's launches so the front end's Python checks stay out of the timings.
        def launch(plan=plan):
            plan.execute(be, dict(env0))
        try:
            t = float(timer(info.name, launch))
        except Exception as exc:  # one broken algorithm must not hide the others' timings
            failed[info.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"cuconv.find: algorithm {info.name!r} failed on {problem.describe()}: {exc}",
                          RuntimeWarning, stacklevel=2)
            continue
        if not np.isfinite(t) or t < 0:
            raise ValueError(f"timer returned {t!r} seconds for {info.name!r}; expected a finite time >= 0")
        times[info.name] = t
    if not times:
        raise ValueError(f"no algorithm could be timed for {problem.describe()}: "
                         + "; ".join(f"{k}: {v}" for k, v in {**skipped, **failed}.items()))
    best = min(times, key=lambda name: (times[name], name))
    algorithm(best)  # still registered (raises otherwise)
    entry = {"algo": best, "times": times, "device": device, "dtype": problem.dtype,
             "problem": problem.describe(), "max_workspace_bytes": max_workspace_bytes, "layout": layout}
    with _LOCK:
        _MEMORY[key] = entry
    if path is not None:
        _write_cache_file(path, {key: entry})
    return FindResult(best, dict(times), problem, device, key, skipped, failed)

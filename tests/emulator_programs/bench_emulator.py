"""Measure the CPU emulator's speed (not a test): compile time cold/warm, the
cost of one launch, and a 256^3 shared-memory tiled SGEMM plain and under
ASan+UBSan. Run from the repository root:

    python tests/emulator_programs/bench_emulator.py
"""

import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def timed(fn, repeat=1):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_seconds(pid):
    """user + system CPU time of a process (the worker that runs the kernels)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    os.environ["CUCONV_CACHE_DIR"] = tempfile.mkdtemp(prefix="cuconv-bench-")  # cold cache
    from cuconv import emulator as emu
    from cuconv.emulator import _build

    code = (HERE / "features.cu").read_text()
    opts = ("-DTILE=16",)
    names = ("sgemm_tiled<16>",)
    n = 256
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n)).astype(np.float32)
    B = rng.standard_normal((n, n)).astype(np.float32)
    ref = A.astype(np.float64) @ B
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {_build.toolchain().version}; "
          f"fibers: {_build.toolchain().fibers}")
    for sanitize in ("", "address,undefined", "thread"):
        label = sanitize or "plain"
        t_runner = timed(lambda: _build.build_runner(sanitize))
        # Three sources in a row (a new macro each): the first compiles without the
        # precompiled prelude, the second builds it, the third uses it.
        compiles = []
        for variant in range(3):
            c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = timed(lambda: emu.RawModule(code=code, options=opts + (f"-DBENCH_VARIANT={variant}",),
                                            name_expressions=names, sanitize=sanitize).compile())
            c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            compiles.append((t, (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)))
        t_warm = timed(lambda: emu.RawModule(code=code, options=opts, name_expressions=names,
                                             sanitize=sanitize).compile(), repeat=3)
        fn = emu.RawModule(code=code, options=opts, name_expressions=names, sanitize=sanitize).get_function(names[0])
        C = np.full((n, n), np.nan, np.float32)
        args = (A, B, C, np.int32(n), np.int32(n), np.int32(n))
        fn((n // 16, n // 16), (16, 16), args)  # first launch starts the worker
        pid = emu._worker.worker(sanitize).proc.pid
        cpu0 = cpu_seconds(pid)
        t_run = timed(lambda: fn((n // 16, n // 16), (16, 16), args), repeat=3)
        cpu_run = (cpu_seconds(pid) - cpu0) / 3
        err = np.linalg.norm(C - ref) / np.linalg.norm(ref)
        tiny = emu.RawModule(code=code, options=opts, name_expressions=names, sanitize=sanitize).get_function(
            "indices3d")
        out = np.zeros(8, np.int32)
        t_launch = timed(lambda: tiny(1, 1, (out,)), repeat=50)
        first, second, third = compiles
        print(f"[{label}] runner build {t_runner:.2f} s | compile features.cu: first {first[0]:.2f} s wall "
              f"({first[1]:.2f} s g++ CPU), second (+ precompiled prelude) {second[0]:.2f} s ({second[1]:.2f} s), "
              f"then {third[0]:.2f} s ({third[1]:.2f} s), cached {t_warm * 1e3:.1f} ms | "
              f"sgemm 256^3 (16x16 tiles, 65536 threads, 33 barriers each) {t_run:.3f} s wall, "
              f"{cpu_run:.3f} s worker CPU, rel err {err:.1e} | "
              f"empty launch {t_launch * 1e6:.0f} us")


if __name__ == "__main__":
    sys.exit(main())

"""`cuconv profile` and the NVTX hook of Plan.execute (CUCONV_NVTX=1), without a GPU: the ranges
each run and launch opens (recorded in place of cupy.cuda.nvtx), the plan and the checked output
on the emulator, and the exact ncu / compute-sanitizer command lines (mangled names from NVRTC,
launch-skip and launch-count from the plan's launches)."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cuconv
from cuconv import plan as plan_mod
from cuconv.cli import main as cli_main
from cuconv.backend import RecordBackend, using
from cuconv.compile import compile_entry
from cuconv.testing import random_array

CONV = ["--input", "2,16,9,9", "--weight", "16,16,3,3", "--padding", "1"]


@pytest.fixture
def ranges(monkeypatch):
    """NVTX on, with push/pop recorded as ("push", name) / ("pop",)."""
    events = []
    monkeypatch.setattr(plan_mod, "_nvtx_calls", (lambda name: events.append(("push", name)),
                                                  lambda: events.append(("pop",))))
    previous = plan_mod.nvtx_ranges()
    plan_mod.nvtx_ranges(True)
    yield events
    plan_mod.nvtx_ranges(previous)


def _nesting_ok(events) -> bool:
    depth = 0
    for e in events:
        depth += 1 if e[0] == "push" else -1
        if depth < 0:
            return False
    return depth == 0


def test_execute_opens_a_range_per_run_and_per_launch(rng, ranges):
    x, w = random_array(rng, (2, 16, 9, 9)), random_array(rng, (16, 16, 3, 3))
    with cuconv.backend("record") as rec:
        plan = cuconv.plan_conv2d(x, w, padding=1, algo="winograd_f2x2_3x3")
        cuconv.conv2d(x, w, padding=1, algo="winograd_f2x2_3x3")
    assert len(plan.launches) == 6 and rec.kernels() == plan.kernels
    expected = [("push", "cuconv:conv2d:winograd_f2x2_3x3")]
    for label in plan.kernels:
        expected += [("push", label), ("pop",)]
    assert ranges == expected + [("pop",)]


def test_ranges_off_cost_no_calls_and_launch_the_same(rng, ranges):
    plan_mod.nvtx_ranges(False)
    x, w = random_array(rng, (1, 3, 7, 7)), random_array(rng, (4, 3, 3, 3))
    with cuconv.backend("record") as rec:
        cuconv.conv2d(x, w)
    assert ranges == [] and len(rec.launches) >= 1


def test_a_failing_launch_still_closes_its_ranges(rng, ranges):
    class Failing(RecordBackend):
        def launch(self, entry, grid, block, args, shared_mem=0):
            raise RuntimeError("launch failed")
    x, w = random_array(rng, (1, 3, 7, 7)), random_array(rng, (4, 3, 3, 3))
    with using(Failing()), pytest.raises(RuntimeError, match="launch failed"):
        cuconv.conv2d(x, w, algo="direct")
    assert ranges[0] == ("push", "cuconv:conv2d:direct") and _nesting_ok(ranges)


def test_cuconv_nvtx_is_read_once_at_import():
    code = "import cuconv.plan as p; print(p.nvtx_ranges())"
    env = {k: v for k, v in os.environ.items() if k != "CUCONV_NVTX"}
    for value, want in ((None, "False"), ("1", "True"), ("0", "False")):
        if value is not None:
            env["CUCONV_NVTX"] = value
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == want, value


def _command(out: str, tool: str) -> list[str]:
    lines = out.splitlines()
    i = lines.index(f"{tool}:")
    return shlex.split(lines[i + 1])


def test_profile_on_the_record_backend_prints_the_exact_ncu_and_sanitizer_lines(capsys, ranges):
    rc = cli_main(["profile", *CONV, "--algo", "winograd_f2x2_3x3", "--backend", "record", "--warmup", "2",
                   "--repeat", "3", "--ncu", "--ncu-set", "full", "--sanitize", "racecheck"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "algo=winograd_f2x2_3x3" in out and "6 launch(es)" in out and "not checked" in out
    x, w = np.empty((2, 16, 9, 9), np.float32), np.empty((16, 16, 3, 3), np.float32)
    with cuconv.backend("record"):
        plan = cuconv.plan_conv2d(x, w, padding=1, algo="winograd_f2x2_3x3")
    names = []
    for ln in plan.launches:
        n = compile_entry(ln.entry, "sm_90").lowered_name
        if n not in names:
            names.append(n)
    assert all(n.startswith("_Z") for n in names)

    ncu = _command(out, "ncu")
    assert ncu[0] == "ncu"
    opt = {ncu[i]: ncu[i + 1] for i in range(len(ncu) - 1) if ncu[i].startswith("--")}
    assert opt["--kernel-name-base"] == "mangled"
    assert opt["--kernel-name"] == "regex:^(" + "|".join(names) + ")$"
    assert opt["--launch-skip"] == str(2 * 6) and opt["--launch-count"] == str(3 * 6)
    assert opt["--set"] == "full" and opt["--clock-control"] == "none"
    target = ncu[ncu.index("-m") - 1:]
    assert target[1:4] == ["-m", "cuconv", "profile"]
    assert "--ncu" not in target and "--sanitize" not in target and "--ncu-set" not in target
    assert target[-2:] == ["--backend", "cupy"] and "record" not in target
    assert target[target.index("--warmup") + 1] == "2" and target[target.index("--repeat") + 1] == "3"
    # the regex matches each name whole, and nothing else cuconv registers
    pattern = re.compile(opt["--kernel-name"][len("regex:"):])
    assert all(pattern.fullmatch(n) for n in names) and not pattern.fullmatch(names[0] + "x")

    san = _command(out, "compute-sanitizer")
    assert san[:5] == ["compute-sanitizer", "--tool", "racecheck", "--error-exitcode", "99"]
    assert [san[i + 1] for i, a in enumerate(san) if a == "--kernel-name"] == [f"kns={n}" for n in names]
    st = san[san.index("-m") - 1:]
    assert st[st.index("--warmup") + 1] == "0" and st[st.index("--repeat") + 1] == "1"
    assert st.count("--warmup") == 1 and st.count("--repeat") == 1


def test_profile_on_the_emulator_checks_the_output_inside_its_ranges(capsys, ranges):
    rc = cli_main(["profile", "--input", "2,3,9,7", "--weight", "5,3,3,3", "--padding", "1", "--stride", "2",
                   "--backend", "emulator", "--warmup", "1", "--repeat", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "output verified" in out, out
    pushed = [e[1] for e in ranges if e[0] == "push"]
    steps = [p for p in pushed if p in ("cuconv:plan", "cuconv:warmup", "cuconv:profile", "cuconv:epilogue")]
    assert steps == ["cuconv:plan", "cuconv:warmup", "cuconv:profile", "cuconv:epilogue"]
    runs = [p for p in pushed if p.startswith("cuconv:conv2d:")]
    assert len(runs) == 3 and _nesting_ok(ranges)
    # every run's launches sit inside the warm-up or profile range, none in planning or the epilogue
    i_profile, i_epilogue = pushed.index("cuconv:profile"), pushed.index("cuconv:epilogue")
    assert sum(1 for p in pushed[i_profile:i_epilogue] if p.startswith("cuconv:conv2d:")) == 2


@pytest.mark.parametrize("argv", [
    ["--op", "gemm", "--mnk", "67,45,53"],
    ["--op", "max_pool2d", "--input", "2,3,9,9", "--kernel-size", "3", "--stride", "2", "--padding", "1"],
    ["--op", "avg_pool2d", "--input", "2,3,9,9", "--kernel-size", "3"],
    ["--op", "global_avg_pool2d", "--input", "2,5,7,9"],
    ["--op", "im2col", "--input", "2,3,9,7", "--kernel-size", "3", "--padding", "1"],
], ids=["gemm", "max_pool", "avg_pool", "global_avg_pool", "im2col"])
def test_profile_other_ops_on_the_emulator(capsys, argv):
    rc = cli_main(["profile", *argv, "--backend", "emulator", "--ncu", "--ncu-output", "-"])
    out = capsys.readouterr().out
    assert rc == 0 and "output verified" in out, out
    ncu = _command(out, "ncu")
    assert "-o" not in ncu and ncu[ncu.index("--launch-skip") + 1] == ncu[ncu.index("--launch-count") + 1]


def test_profile_usage_errors(capsys):
    assert cli_main(["profile", "--input", "2,3,9,9"]) == 2
    assert "--weight" in capsys.readouterr().err
    assert cli_main(["profile", "--op", "gemm"]) == 2
    assert "--mnk" in capsys.readouterr().err
    assert cli_main(["profile", *CONV, "--algo", "nope", "--backend", "record"]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli_main(["profile", "--input", "1,4,5,5", "--weight", "4,3,3,3", "--backend", "record"]) == 2
    assert "channels" in capsys.readouterr().err.lower()


@pytest.mark.skipif(shutil.which("ncu") is not None, reason="ncu is on the PATH here")
def test_profile_run_without_the_tool_says_so(capsys):
    rc = cli_main(["profile", *CONV, "--backend", "record", "--ncu", "--run"])
    assert rc == 3 and "ncu is not on the PATH" in capsys.readouterr().err


def test_profile_help_documents_the_options():
    out = subprocess.run([sys.executable, "-m", "cuconv", "profile", "--help"], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ))
    assert out.returncode == 0
    for text in ("--ncu", "--sanitize", "--run", "--warmup", "--repeat", "--op", "--launch-skip", "NVTX",
                 "CUCONV_NVTX", "record backend"):
        assert text in out.stdout, text


def test_profile_an_fft_plan_counts_only_its_kernels_in_the_ncu_window(capsys, ranges):
    """Issue 23 row 3: the issue's command (auto picks fft) crashed with AttributeError on the FFT step,
    and the ncu window counted the cuFFT steps as launches. ncu applies --launch-skip/--launch-count
    after the --kernel-name filter, so the window counts the plan's own kernels only (cuFFT's kernels
    inside an FFT step match none of our names)."""
    argv = ["profile", "--input", "8,64,56,56", "--weight", "64,64,7,7", "--padding", "3", "--backend", "record",
            "--warmup", "2", "--repeat", "3", "--ncu"]
    rc = cli_main(argv)
    out = capsys.readouterr().out
    assert rc == 0 and "algo=fft" in out, out
    x, w = np.empty((8, 64, 56, 56), np.float32), np.empty((64, 64, 7, 7), np.float32)
    with cuconv.backend("record"):
        plan = cuconv.plan_conv2d(x, w, padding=3)
    kernels = [ln for ln in plan.launches if ln.entry is not None]
    steps = len(plan.launches) - len(kernels)
    assert plan.algo == "fft" and steps > 0 and kernels
    assert f"{len(kernels)} kernel launch(es) each and {steps} cuFFT step(s)" in out
    ncu = _command(out, "ncu")
    opt = {ncu[i]: ncu[i + 1] for i in range(len(ncu) - 1) if ncu[i].startswith("--")}
    assert opt["--launch-skip"] == str(2 * len(kernels)) and opt["--launch-count"] == str(3 * len(kernels))
    names = {compile_entry(ln.entry, "sm_90").lowered_name for ln in kernels}
    assert opt["--kernel-name"] == "regex:^(" + "|".join(dict.fromkeys(
        compile_entry(ln.entry, "sm_90").lowered_name for ln in kernels)) + ")$"
    assert len(names) == len(set(ln.kernel for ln in kernels))

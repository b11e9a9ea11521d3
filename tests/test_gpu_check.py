"""`cuconv check --gpu` without a GPU: its cases cover every registered kernel a device can run
(checked on the record backend for several compute capabilities), the same cases pass on the
CPU emulator, a wrong kernel fails the run with a non-zero status and a FAILED line, and with no
device the command says so and exits with its own status."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import GPU

import cuconv
from cuconv.cli import main as cli_main
from cuconv.commands import check
from cuconv.registry import registered_kernels


@pytest.mark.parametrize("cc", [75, 80, 90, 120])
def test_the_cases_exercise_every_kernel_the_device_can_run(cc):
    with cuconv.backend("record", cc=cc) as rec:
        results = check.run_checks(rec, check.device_checks())
    launched = {k for r in results for k in r.kernels}
    expected = {e.label for e in registered_kernels() if check.runnable(e, cc) and e.file not in check.NOT_OP_KERNELS}
    assert expected - launched == set(), f"sm_{cc}: no check launches {sorted(expected - launched)}"
    # nothing a check forces is refused on this device: every case planned and launched
    planning_errors = [r for r in results if not r.skipped and not r.kernels]
    assert planning_errors == [], [(r.name, r.message) for r in planning_errors]
    skipped = [r for r in results if r.skipped]
    wgmma = [r for r in skipped if r.name.startswith("conv2d implicit_gemm_wgmma")]
    assert bool(set(map(id, skipped)) - set(map(id, wgmma))) == (cc < 80), [r.skipped for r in skipped][:3]
    # the wgmma kernels exist only for sm_90a: run on sm_90, skipped with the reason elsewhere
    assert bool(wgmma) == (cc != 90) and all("not built for" in r.skipped for r in wgmma)


def test_a_subset_passes_on_the_emulator_with_a_line_per_kernel_file():
    lines, ok, results = check.check_device(None, backend_name="emulator", quiet=True,
                                            name_filter="x2x3x9x7")
    assert ok and results and all(r.ok for r in results if not r.skipped), [r.message for r in results]
    text = "\n".join(lines)
    for f in ("direct.cu", "im2col.cu", "gemm.cu", "implicit_gemm.cu", "pool.cu"):
        assert any(ln.startswith(f) and " ok " in ln for ln in lines), (f, text)
    assert "tc_probe.cu          not checked here" in text


def test_a_wrong_kernel_fails_the_check(monkeypatch):
    right = check.device_checks()

    def wrong():
        chk = next(c for c in right if c.name.startswith("gemm gemm_f32_naive") and "relu" not in c.name)

        def run(xp, rng):
            out, ref, dtype, algo = chk.run(xp, rng)
            ref = ref.copy()
            ref[0, 0] += 1.0          # as if the kernel had written a wrong element
            return out, ref, dtype, algo
        return [check.DeviceCheck("gemm naive, corrupted", run), chk]
    monkeypatch.setattr(check, "device_checks", wrong)
    lines, ok, results = check.check_device(None, backend_name="emulator", quiet=True)
    assert not ok and [r.ok for r in results] == [False, True]
    assert any(ln.startswith("gemm.cu") and "1 FAILED" in ln for ln in lines)
    assert any(ln.startswith("FAILED gemm naive, corrupted: max relative error") for ln in lines)


def test_an_unwritten_output_fails_as_nan():
    def run(xp, rng):
        out = xp.full((3, 3), np.nan, np.float32)
        return out, np.ones((3, 3)), "float32", "gemm"
    (r,) = check.run_checks(_emulator(), [check.DeviceCheck("nan", run)])
    assert not r.ok and "NaN" in r.message


def _emulator():
    from cuconv.backend import EmulatorBackend
    return EmulatorBackend()


def test_one_per_file_picks_one_case_per_kernel_file():
    with cuconv.backend("record") as rec:
        picked = check.one_per_file(check.device_checks(), rec)
        results = check.run_checks(rec, picked)
    files = {e.label: e.file for e in registered_kernels()}
    firsts = [{files[k] for k in r.kernels} for r in results]
    covered = set().union(*firsts)
    assert covered >= {e.file for e in registered_kernels()} - set(check.NOT_OP_KERNELS)
    assert len(picked) <= len(covered)


@pytest.mark.skipif(GPU, reason="checks the behaviour without a GPU")
def test_check_gpu_without_a_device_says_so_with_its_own_exit_status(capsys):
    assert cli_main(["check", "--gpu"]) == check.EXIT_NO_GPU
    err = capsys.readouterr().err
    assert "no GPU was found" in err and "nothing was checked" in err


def test_device_lists():
    assert check.parse_devices("all", 3) == [0, 1, 2]
    assert check.parse_devices("2,0,2", 3) == [2, 0]
    with pytest.raises(ValueError, match="device 3 does not exist"):
        check.parse_devices("0,3", 2)
    with pytest.raises(ValueError, match="comma-separated"):
        check.parse_devices("gpu0", 2)

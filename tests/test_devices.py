"""Several devices without a GPU: `--devices` parsing, and the one-process-per-device machinery of
`cuconv bench --devices` (spawned children, results returned in device order) exercised on the
emulator. The per-device plan and function caches are tested in tests/test_plan.py."""
from __future__ import annotations

import pytest
from conftest import GPU

from cuconv.cli import build_parser
from cuconv.cli import main as cli_main
from cuconv.commands import bench


def test_device_indices():
    assert bench.device_indices("all", 2) == [0, 1]
    assert bench.device_indices(" 1, 0 ,1", 2) == [1, 0]
    with pytest.raises(ValueError, match="device 2 does not exist"):
        bench.device_indices("0,2", 2)
    with pytest.raises(ValueError, match="no CUDA device"):
        bench.device_indices("all", 0)
    with pytest.raises(ValueError, match="names no device"):
        bench.device_indices(",", 2)


def test_one_process_per_device_returns_every_device_in_order():
    args = build_parser("bench").parse_args(["bench", "seed", "-k", "§9.5 depthwise 3x3", "--emulate",
                                            "--no-resources", "--quiet"])
    cases, _, _ = bench._build_cases(args)
    cases = [c for c in cases if "§9.5 depthwise 3x3" in c.name]
    results = bench._per_device(args, cases, [1, 0])
    assert len(results) == 2
    for header, rows, peaks, error in results:
        assert error is None and header["mode"] == "emulator"
        (row,) = rows
        assert row["status"] == "verified-emulated" and row["verified"] is True
    assert results[0][1] == results[1][1] or all(r[1][0]["case"] == cases[0].name for r in results)


@pytest.mark.skipif(GPU, reason="checks the behaviour without a GPU")
def test_devices_without_a_gpu_runs_once_emulated(capsys, tmp_path):
    path = tmp_path / "b.json"
    rc = cli_main(["bench", "seed", "-k", "§9.5 depthwise 3x3", "--devices", "all", "--no-resources", "--quiet",
                   "--json", str(path)])
    err = capsys.readouterr().err
    assert rc == 0 and "--devices: no GPU here" in err and path.exists()

"""bench/gpu_session.sh without a GPU, shrunk to a token case (CUCONV_SESSION_QUICK=1): it says there
is no GPU, runs the emulated bench, writes its files (at most 8) and exits 0; a session cut off
by its deadline records the steps it did not reach, and --resume runs exactly those."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest
from conftest import GPU

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_session.sh"
FILES = {"session.md", "session.json", "bench.json", "bench.csv", "roofline.png", "host.json", "ncu.csv", "logs.md"}


def _run(out, *extra, **env):
    e = dict(os.environ, CUCONV_SESSION_QUICK="1", PYTHONPATH=str(ROOT / "src"), **env)
    return subprocess.run(["bash", str(SCRIPT), str(out), *extra], capture_output=True, text=True, env=e,
                          timeout=600)


@pytest.mark.skipif(GPU, reason="checks the no-GPU mode")
def test_no_gpu_session_cut_off_then_resumed(tmp_path):
    out = tmp_path / "session"
    first = _run(out, CUCONV_SESSION_DEADLINE="1")          # every step past the deadline
    assert first.returncode == 0, first.stdout + first.stderr
    assert "NO GPU here" in first.stdout and "running the emulated bench instead" in first.stdout
    doc = json.loads((out / "session.json").read_text())
    assert doc["mode"] == "no-gpu" and doc["no_gpu_reason"]
    assert doc["steps"]["info"]["status"] == "not-run" and doc["steps"]["bench_seed"]["status"] == "not-run"
    assert doc["steps"]["finalize"]["status"] == "ok"
    assert "| info | not-run |" in (out / "session.md").read_text()

    second = _run(out, "--resume")
    assert second.returncode == 0, second.stdout + second.stderr
    doc = json.loads((out / "session.json").read_text())
    assert [r["resume"] for r in doc["runs"]] == [False, True]
    assert {n: s["status"] for n, s in doc["steps"].items()} == {"info": "ok", "bench_seed": "ok", "finalize": "ok"}
    assert doc["steps"]["bench_seed"]["cap"] == 240            # a step cut off before gets twice its cap
    assert doc["info"]["devices"] == [] and doc["info"]["nvrtc"]
    bench = json.loads((out / "bench.json").read_text())
    (row,) = bench["steps"]["bench_seed"]["rows"]
    assert row["status"] == "verified-emulated" and row["verified"] is True and row["time_ms"] is None
    assert row["roofline_time_ms"] > 0                          # --roofline h100 without a GPU
    md = (out / "session.md").read_text()
    assert "**NO GPU**" in md and "§9.5 depthwise 3x3 128ch" in md and "nothing was timed" in md
    csv_rows = [ln for ln in (out / "bench.csv").read_text().splitlines() if not ln.startswith("#")]
    assert len(csv_rows) == 2 and "device" in csv_rows[0].split(",")
    names = {p.name for p in out.iterdir()}
    assert names <= FILES and len(names) <= 8
    assert all(p.stat().st_size < 16 << 20 for p in out.iterdir())
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "roofline.png not drawn" in md
    else:
        assert (out / "roofline.png").stat().st_size > 0

    third = _run(out, "--resume")                               # nothing left to do
    assert third.returncode == 0
    assert "info: ok in an earlier run, skipped" in third.stdout
    assert "bench_seed: ok in an earlier run, skipped" in third.stdout


def test_usage():
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage" in proc.stderr
    proc = subprocess.run(["bash", str(SCRIPT), "/tmp/x", "--bogus"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2


def test_the_script_states_its_sizing():
    text = SCRIPT.read_text()
    head = text.split("set -u", 1)[0]
    for word in ("cap (s)", "deadline", "--resume", "timeout_s", "8 files", "CUCONV_SESSION_QUICK"):
        assert word in head, word
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_every_array_that_can_be_empty_expands_safely_under_set_u():
    """Issue 23 row 14: ``"${A[@]}"`` of an empty array is an unbound variable under ``set -u`` on bash
    < 4.4 (the session aborts there). An array the script may leave empty (assigned ``A=()``) must be
    expanded as ``${A[@]+"${A[@]}"}``."""
    import re
    text = SCRIPT.read_text()
    assert "set -u" in text
    may_be_empty = set(re.findall(r"^\s*(\w+)=\(\)", text, re.MULTILINE))
    assert "SMALL" in may_be_empty
    bare = re.compile(r'(?<!\+)"\$\{(\w+)\[@\]\}"')
    unsafe = sorted({m.group(1) for m in bare.finditer(text) if m.group(1) in may_be_empty})
    assert unsafe == [], f"expand {unsafe} as ${{A[@]+\"${{A[@]}}\"}}"
    assert '${SMALL[@]+"${SMALL[@]}"}' in text


def test_session_reports_first_contact_steps_first():
    """On a GPU the session's first steps after `info` are the launchability sweep for the device and the
    first-contact GPU tests (issue 23), and an unsupported GPU (below sm_75) is said once."""
    text = SCRIPT.read_text()
    gpu = text[text.index("# --- on a GPU"):]
    order = [gpu.index(s) for s in ("run_step launchability", "run_step first_contact", "run_step prewarm",
                                    "run_step check")]
    assert order == sorted(order)
    assert "check --launchability device" in gpu and "tests/test_first_contact.py" in gpu
    assert "gpu_unsupported_reason" in text and "NOT SUPPORTED" in text

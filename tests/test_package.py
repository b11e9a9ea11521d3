"""Packaging and the no-GPU contract: the wheel ships every kernel source, the Dockerfile is
sound, `import cuconv` and the CLI work without a GPU, and GPU ops fail with one clear error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import cuconv
from cuconv.compile import kernel_dir, kernel_files

ROOT = Path(__file__).resolve().parents[1]
from conftest import GPU  # noqa: E402


def run_cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "cuconv", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # pip builds the wheel in an isolated environment with hatchling, as a user's pip would.
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(out.glob("cuconv-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_ships_every_kernel_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in kernel_files():
        assert f"cuconv/kernels/{f}" in names, f"kernels/{f} is missing from {wheel.name}"


def test_installed_wheel_finds_and_loads_its_kernels(wheel, tmp_path):
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code = ("import cuconv.compile as c, json; d=c.kernel_dir(); "
            "print(json.dumps([str(d)] + [len(c.load_source(f)) for f in c.kernel_files()]))")
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert Path(found[0]).is_relative_to(target), f"kernels loaded from {found[0]}, not from the installed wheel"
    assert len(found) - 1 == len(kernel_files()) and all(n > 0 for n in found[1:])


def test_dockerfile_is_sound():
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert len(froms) == 1 and froms[0].split()[1].startswith("nvidia/cuda:13.") and "devel" in froms[0]
    joined = "\n".join(lines)
    assert "pip install" in joined and "cuda13" in joined, "the image must install cuconv with its CUDA 13 extra"
    for src in ("src", "kernels", "pyproject.toml"):
        assert any(ln.startswith("COPY") and src in ln for ln in lines), f"Dockerfile does not COPY {src}"
    cmd = [ln for ln in lines if ln.startswith("CMD")]
    assert len(cmd) == 1 and "cuconv info" in cmd[0] and "cuconv bench" in cmd[0]


def test_kernel_dir_is_the_checkout_in_development():
    assert (kernel_dir() / "common.cuh").is_file()


@pytest.mark.skipif(GPU, reason="checks the behaviour on a machine without a GPU")
def test_gpu_op_without_device_raises_one_clear_error():
    import cupy
    with cuconv.backend("cupy") as be:
        with pytest.raises(cuconv.NoDeviceError, match="no CUDA device was found.*emulator"):
            be.ensure_device()
        # An op with a (host-side) CUDA array interface reaches the same device check.
        with pytest.raises(cuconv.NoDeviceError, match="CUCONV_BACKEND=emulator"):
            be.as_array(object.__new__(type("FakeCudaArray", (), {"__cuda_array_interface__": {}})), "input")
    assert cupy is not None


def test_numpy_on_gpu_backend_is_a_type_error_that_names_the_emulator():
    x = np.ones((1, 1, 3, 3), np.float32)
    with cuconv.backend("cupy"):
        with pytest.raises(TypeError, match="emulator"):
            cuconv.conv2d(x, x)


def test_cli_info_without_gpu_tells_the_truth():
    proc = run_cli("info")
    assert proc.returncode == 0, proc.stderr
    assert "compile targets" in proc.stdout and "sm_90" in proc.stdout
    if not GPU:
        assert "No CUDA device found" in proc.stdout
    data = json.loads(run_cli("info", "--json").stdout)
    assert data["nvrtc"] and data["cupy"] == __import__("cupy").__version__
    assert (len(data["devices"]) > 0) == GPU


def test_cli_kernels_json_lists_every_registered_kernel():
    from cuconv.compile import registered_kernels
    proc = run_cli("kernels", "--arch", "sm_90", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {r["kernel"] for r in rows} == {e.label for e in registered_kernels()}
    for r in rows:   # kernels that exist only for sm_90a (wgmma) are listed under their own target
        assert r["arch"] in ("sm_90", "sm_90a") and r["registers"] > 0 and r["error"] is None
    assert {r["kernel"] for r in rows if r["arch"] == "sm_90a"} == {
        e.label for e in registered_kernels() if e.archs == ("sm_90a",)}
    table = run_cli("kernels", "--arch", "sm_90")
    assert table.returncode == 0 and "occupancy" in table.stdout


def test_ci_runs_exactly_the_readme_commands():
    """.ci/run says it runs exactly the README's set-up and test commands: the README's "From a
    checkout" block and .ci/run have the same pip and pytest command lines, in the same order,
    and install the same system packages."""
    import re
    import shlex

    readme = (ROOT / "README.md").read_text()
    block = readme.split("From a checkout", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    ci = (ROOT / ".ci" / "run").read_text()

    def commands(text):
        lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
        return [ln for ln in lines if ln.startswith(("python3 -m pip", "python3 -m pytest"))]

    def apt_packages(text):
        return {w for ln in text.splitlines() if "apt-get install" in ln
                for w in shlex.split(ln.split("#", 1)[0].split(">", 1)[0]) if re.fullmatch(r"[a-z0-9][a-z0-9+.-]*", w)
                and w not in ("sudo", "apt-get", "install")}

    assert commands(block) and commands(block) == commands(ci)
    assert apt_packages(block) == apt_packages(ci) == {"g++", "libboost-context-dev"}

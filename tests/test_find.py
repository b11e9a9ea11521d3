"""cuconv.find: the choice, the memory and file caches (with an injected timer, no GPU
needed), the refusal to time on the emulator, and real CUDA-event timing on a GPU.
"""
from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
from conftest import requires_gpu

import cuconv
from cuconv.ops import find as find_mod
from cuconv.problem import Conv2dProblem
from cuconv.reference import conv2d_ref
from cuconv.testing import assert_close, random_array

backend_mod = importlib.import_module("cuconv.backend")
ARGS = dict(padding=1)


@pytest.fixture(autouse=True)
def fresh_cache():
    find_mod.clear_cache()
    yield
    find_mod.clear_cache()


@pytest.fixture
def xw(rng):
    return random_array(rng, (2, 4, 9, 7)), random_array(rng, (6, 4, 3, 3))


class FakeTimer:
    """Deterministic 'times' (the alphabetical rank of the name, direct made fastest);
    counts calls and never launches unless told to."""

    def __init__(self, fastest="direct", launch_for=()):
        self.calls = []
        self.fastest = fastest
        self.launch_for = set(launch_for)

    def __call__(self, name, launch):
        self.calls.append(name)
        if name in self.launch_for:
            launch()
        return 1e-6 if name == self.fastest else 1e-3 + len(name) * 1e-6


def _applicable(problem, limit=None, allow_tf32=False):
    return {i.name for i in cuconv.algorithms(problem, limit)
            if i.ok and (allow_tf32 or not find_mod.computes_in_tf32(i.name, problem))}


def test_emulator_refuses_to_time(xw):
    x, w = xw
    with cuconv.backend("emulator"):
        with pytest.raises(find_mod.TimingUnavailableError, match=r"backend is 'emulator'.*says nothing about GPU speed"):
            cuconv.find(x, w, **ARGS)


def test_times_every_applicable_algorithm_and_picks_the_fastest(xw):
    x, w = xw
    problem = Conv2dProblem.from_shapes(x.shape, w.shape, **ARGS)
    timer = FakeTimer(fastest="implicit_gemm")
    with cuconv.backend("emulator"):
        res = cuconv.find(x, w, timer=timer, **ARGS)
    assert res.algo == "implicit_gemm" and not res.from_cache
    assert set(res.times) == _applicable(problem) == set(timer.calls)
    assert set(res.skipped) == {i.name for i in cuconv.algorithms(problem)} - _applicable(problem)
    assert all(isinstance(why, str) and why for why in res.skipped.values())
    assert res.times["implicit_gemm"] == min(res.times.values())
    assert res.device == "emulator" and res.key == find_mod.cache_key(problem, "emulator")
    assert "implicit_gemm" in str(res)


def test_second_call_comes_from_the_memory_cache(xw):
    x, w = xw
    timer = FakeTimer()
    with cuconv.backend("emulator"):
        first = cuconv.find(x, w, timer=timer, **ARGS)
        n = len(timer.calls)
        again = cuconv.find(x, w, timer=timer, **ARGS)
        assert len(timer.calls) == n, "a cached problem was timed again"
        assert again.from_cache and again.algo == first.algo == "direct"
        assert again.times == first.times
        # Another problem (another dtype/shape/stride) is timed afresh.
        cuconv.find(x, w, timer=timer, padding=1, stride=2)
        assert len(timer.calls) > n
        # refresh=True re-times.
        m = len(timer.calls)
        cuconv.find(x, w, timer=timer, refresh=True, **ARGS)
        assert len(timer.calls) > m


def test_file_cache_round_trip(xw, tmp_path):
    x, w = xw
    path = tmp_path / "sub" / "algos.json"
    with cuconv.backend("emulator"):
        first = cuconv.find(x, w, timer=FakeTimer(fastest="implicit_gemm"), cache_file=path, **ARGS)
        data = json.loads(path.read_text())
        assert data["format"] == find_mod.CACHE_FORMAT
        entry = data["entries"][first.key]
        assert entry["algo"] == "implicit_gemm" and entry["times"] == first.times
        assert entry["device"] == "emulator" and entry["dtype"] == "float32"

        # A new process: nothing in memory, the file answers without timing.
        find_mod.clear_cache()
        res = cuconv.find(x, w, timer=lambda name, launch: pytest.fail("timed a cached problem"),
                          cache_file=path, **ARGS)
        assert res.from_cache and res.algo == "implicit_gemm" and res.times == first.times

        # Another problem is added to the same file; the first entry stays.
        second = cuconv.find(x, w, timer=FakeTimer(), cache_file=path, padding=0)
    entries = json.loads(path.read_text())["entries"]
    assert set(entries) == {first.key, second.key}


def test_unreadable_cache_file_is_a_clear_error(xw, tmp_path):
    x, w = xw
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"some": "thing"}))
    with cuconv.backend("emulator"):
        with pytest.raises(ValueError, match=r"bad.json.*not a readable cuconv.find cache"):
            cuconv.find(x, w, timer=FakeTimer(), cache_file=bad, **ARGS)
        with pytest.raises(ValueError, match=r"other.json.*is not a cuconv.find cache"):
            cuconv.find(x, w, timer=FakeTimer(), cache_file=other, **ARGS)


def test_workspace_limit(xw):
    x, w = xw
    problem = Conv2dProblem.from_shapes(x.shape, w.shape, **ARGS)
    with cuconv.backend("emulator"):
        timer = FakeTimer(fastest="no such algorithm")
        res = cuconv.find(x, w, timer=timer, max_workspace_bytes=0, **ARGS)
        assert set(timer.calls) == _applicable(problem, 0)
        workspace = {i.name: i.workspace_bytes for i in cuconv.algorithms(problem, 0)}
        assert res.times and all(workspace[n] == 0 for n in res.times)
        # A looser limit may admit more algorithms: the cached answer is not reused.
        timer2 = FakeTimer()
        res2 = cuconv.find(x, w, timer=timer2, **ARGS)
        assert not res2.from_cache and set(timer2.calls) == _applicable(problem)
        # A tighter limit than the one timed reuses the winner if it still fits (direct needs none).
        res3 = cuconv.find(x, w, timer=lambda n, l: pytest.fail("re-timed"), max_workspace_bytes=0, **ARGS)
        assert res3.from_cache and res3.algo == "direct"


def test_the_timed_launch_runs_the_named_algorithm(xw):
    """The launch closure given to the timer runs conv2d with that algorithm."""
    x, w = xw

    class Recorder(backend_mod.EmulatorBackend):
        launched = []

        def launch(self, entry, *args, **kwargs):
            self.launched.append(entry.file)
            return super().launch(entry, *args, **kwargs)

    token = backend_mod._current.set(Recorder())
    try:
        timer = FakeTimer(launch_for={"direct"})
        cuconv.find(x, w, timer=timer, **ARGS)
        assert Recorder.launched == ["direct.cu"]
        Recorder.launched.clear()
        timer = FakeTimer(launch_for={"implicit_gemm"})
        cuconv.find(x, w, timer=timer, refresh=True, **ARGS)
        assert Recorder.launched == ["implicit_gemm.cu"]
    finally:
        backend_mod._current.reset(token)


def test_a_failing_algorithm_is_reported_not_hidden(xw):
    x, w = xw

    def timer(name, launch):
        if name == "direct":
            raise RuntimeError("planted failure")
        return 1e-3

    with cuconv.backend("emulator"):
        with pytest.warns(RuntimeWarning, match="'direct' failed"):
            res = cuconv.find(x, w, timer=timer, **ARGS)
    assert "direct" in res.failed and "planted failure" in res.failed["direct"]
    assert res.algo != "direct" and "direct" not in res.times


def test_bad_timer_values_and_arguments(xw):
    x, w = xw
    with cuconv.backend("emulator"):
        with pytest.raises(ValueError, match="timer returned nan"):
            cuconv.find(x, w, timer=lambda n, l: float("nan"), **ARGS)
        calls = []
        with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
            cuconv.find(x, w, np.zeros(5, np.float32), timer=lambda n, l: calls.append(n) or 1.0, **ARGS)
        with pytest.raises(ValueError, match="repeats must be a positive int"):
            cuconv.find(x, w, timer=FakeTimer(), repeats=0, **ARGS)
        with pytest.raises(ValueError, match="max_workspace_bytes must be >= 0"):
            cuconv.find(x, w, timer=FakeTimer(), max_workspace_bytes=-5, **ARGS)
        assert calls == []


@requires_gpu
@pytest.mark.gpu
def test_find_times_on_the_gpu(rng, tmp_path):
    import cupy
    x = random_array(rng, (4, 16, 28, 28))
    w = random_array(rng, (32, 16, 3, 3))
    res = cuconv.find(cupy.asarray(x), cupy.asarray(w), padding=1, repeats=5, warmup=2,
                      cache_file=tmp_path / "gpu.json")
    problem = Conv2dProblem.from_shapes(x.shape, w.shape, padding=1)
    assert set(res.times) | set(res.failed) == _applicable(problem)
    assert all(t > 0 for t in res.times.values())
    assert res.times[res.algo] == min(res.times.values())
    assert res.device == find_mod.device_name(backend_mod.current_backend())
    y = cuconv.conv2d(cupy.asarray(x), cupy.asarray(w), padding=1, algo=res.algo)
    assert_close(y, conv2d_ref(x, w, padding=1), np.float32, res.algo)


def test_tf32_and_algos_filters(xw):
    x, w = xw
    problem = Conv2dProblem.from_shapes(x.shape, w.shape, **ARGS)
    tf32 = {i.name for i in cuconv.algorithms(problem) if i.ok and find_mod.computes_in_tf32(i.name, problem)}
    with cuconv.backend("emulator"):
        timer = FakeTimer()
        res = cuconv.find(x, w, timer=timer, **ARGS)
        assert not (set(timer.calls) & tf32)
        assert all("tf32" in res.skipped[n] for n in tf32)
        timer = FakeTimer()
        res = cuconv.find(x, w, timer=timer, allow_tf32=True, **ARGS)
        assert not res.from_cache, "an answer found without tf32 must not answer a tf32 query"
        assert tf32 <= set(timer.calls)
        timer = FakeTimer(fastest="implicit_gemm")
        res = cuconv.find(x, w, timer=timer, algos=["implicit_gemm", "direct"], **ARGS)
        assert sorted(timer.calls) == ["direct", "implicit_gemm"] and res.algo == "implicit_gemm"
        with pytest.raises(ValueError, match="unknown algo 'nope'"):
            cuconv.find(x, w, timer=timer, algos=["nope"], **ARGS)

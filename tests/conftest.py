"""Shared fixtures: one test body runs on every backend available.

``be`` is parametrized over the CPU emulator (always) and the GPU through CuPy (skipped
with a reason when no CUDA device is present). ``xp_of(be)`` moves NumPy inputs there.
"""
from __future__ import annotations

import os
import zlib

import numpy as np
import pytest
from hypothesis import settings

import cuconv
from cuconv.backend import gpu_available

# CI (CI=true) draws the same hypothesis examples every run, so a landing never depends on
# luck; local runs keep exploring new examples.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

GPU = gpu_available()
requires_gpu = pytest.mark.skipif(not GPU, reason="needs a CUDA device; none was found (CuPy reports no driver/device)")

BACKENDS = ["emulator", pytest.param("cupy", marks=[requires_gpu, pytest.mark.gpu])]


@pytest.fixture(params=BACKENDS)
def be(request):
    """Run the test inside `cuconv.backend(<name>)`; yields the backend object."""
    with cuconv.backend(request.param) as backend:
        yield backend


def put(be, a):
    """A NumPy array moved to the backend's memory (a cupy.ndarray on the GPU)."""
    if a is None:
        return None
    return be.xp.asarray(a)


@pytest.fixture
def rng(request):
    """A fresh generator seeded from the test's id, so each test draws its own inputs."""
    seed = zlib.crc32(request.node.nodeid.encode())
    if os.environ.get("CUCONV_TEST_SEED"):
        seed = int(os.environ["CUCONV_TEST_SEED"])
    return np.random.default_rng(seed)


def draw_conv(rng, case):
    """Fresh random input and weight for a conv case (N, C, H, W, K, R, S, stride, padding,
    dilation, groups), and the conv2d keyword arguments."""
    from cuconv.testing import random_array
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    x = random_array(rng, (N, C, H, W))
    w = random_array(rng, (K, C // groups, R, S))
    return x, w, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def auto_order(problem, **kwargs):
    """The algorithms ``auto`` tries for ``problem``, in order (ops/heuristics.py's rule table)."""
    from cuconv.ops import conv2d as conv2d_mod
    from cuconv.ops import heuristics
    return [r.algo for r in heuristics.candidates(conv2d_mod._spec_of(problem, **kwargs))]

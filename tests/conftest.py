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


def draw_conv(rng, case, dtype="float32"):
    """Fresh random input and weight for a conv case (N, C, H, W, K, R, S, stride, padding,
    dilation, groups), and the conv2d keyword arguments."""
    from cuconv.testing import random_array
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    x = random_array(rng, (N, C, H, W), dtype)
    w = random_array(rng, (K, C // groups, R, S), dtype)
    return x, w, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def nhwc(a):
    """An NCHW activation (or KCRS weight) as a contiguous NHWC (KRSC) array."""
    return None if a is None else np.ascontiguousarray(np.asarray(a).transpose(0, 2, 3, 1))


def nchw(a):
    """An NHWC array back in NCHW order."""
    return np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2))


def conv_in_layout(be, x, w, layout="NCHW", *, bias=None, residual=None, **kwargs):
    """``cuconv.conv2d`` on NCHW/KCRS NumPy ``x``, ``w`` (and NCHW ``residual``) passed in
    ``layout``, into a NaN-poisoned ``out=`` of the input's dtype; the result as NCHW NumPy."""
    from cuconv.problem import Conv2dProblem
    from cuconv.testing import poison
    p = Conv2dProblem.from_shapes(x.shape, w.shape, kwargs.get("stride", 1), kwargs.get("padding", 0),
                                  kwargs.get("dilation", 1), kwargs.get("groups", 1), x.dtype.name)
    conv = (lambda a: a) if layout == "NCHW" else nhwc
    shape = p.output_shape if layout == "NCHW" else (p.N, p.P, p.Q, p.K)
    out = be.empty(shape, x.dtype)
    poison(out)
    got = cuconv.conv2d(put(be, conv(x)), put(be, conv(w)), put(be, bias), residual=put(be, conv(residual)),
                        out=out, layout=layout, **kwargs)
    assert got is out
    got = be.to_numpy(out)
    return got if layout == "NCHW" else nchw(got)


def auto_order(problem, **kwargs):
    """The algorithms ``auto`` tries for ``problem``, in order (ops/heuristics.py's rule table)."""
    from cuconv.ops import conv2d as conv2d_mod
    from cuconv.ops import heuristics
    return [r.algo for r in heuristics.candidates(conv2d_mod.spec_of(problem, **kwargs))]

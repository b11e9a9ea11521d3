"""Shared pieces of the cuconv.torch tests (tests/test_torch*.py): seeded inputs and the
comparisons against PyTorch."""
from __future__ import annotations

import zlib

import pytest
import torch

# max|out - ref| / max|ref| against PyTorch's CPU layers (both sides round; float32 sums of up to
# a few hundred products, Winograd's transforms included).
TOL = {torch.float64: 1e-11, torch.float32: 1e-5}
# ||out - ref|| / ||ref|| of a compiled model against the same model run eagerly (issue 24).
NORMWISE = {torch.float64: 1e-12, torch.float32: 1e-5}


@pytest.fixture
def gen(request):
    """A torch generator seeded from the test's id (fresh inputs per test, reproducible)."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


def randn(gen, shape, dtype, requires_grad=False):
    return torch.randn(shape, generator=gen, dtype=dtype).requires_grad_(requires_grad)


def assert_close(out, ref, dtype, what="", tol=None):
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} vs {tuple(ref.shape)}"
    assert out.dtype == ref.dtype, f"{what}: dtype {out.dtype} vs {ref.dtype}"
    out, ref = out.detach().double(), ref.detach().double()
    assert torch.isfinite(out).all(), f"{what}: non-finite values"
    tol = TOL[dtype] if tol is None else tol
    err = ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-300)).item()
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:.1g}"


def normwise(out, ref) -> float:
    """||out - ref|| / ||ref|| in float64."""
    out, ref = out.detach().double(), ref.detach().double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()

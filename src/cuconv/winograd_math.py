"""Winograd F(m×m, 3×3) math shared by the cost model and the Winograd op: the transform
matrices (derived exactly from the interpolation points), the shape rule, tile counts and
buffer sizes. A leaf module: it imports only ``cuconv.problem``.

Toom-Cook for the linear convolution, transposed into a correlation (the derivation is in
kernels/winograd.cu): Aᵀ[i][j] = a_j^i, G[i][j] = a_i^j / Π_{l≠i}(a_i − a_l), Bᵀ row i =
the coefficients of Π_{l≠i}(x − a_l); the ∞ rows are [0 … 0 1] in Aᵀ's last column and G,
and Π_l (x − a_l) in Bᵀ.
"""
from __future__ import annotations

import functools
from fractions import Fraction

from .problem import Conv2dProblem

R = 3                                                   # the filter size every variant is built for
# Output tile m of each variant, by its short name and by its conv2d algorithm name.
VARIANTS = {"f2x2_3x3": 2, "f4x4_3x3": 4}
ALGORITHM_TILE = {"winograd_f2x2_3x3": 2, "winograd_f4x4_3x3": 4, "winograd_fused_f2x2_3x3": 2}
# The finite interpolation points of each F(m, 3) (plus the point at infinity): Lavin's.
INTERPOLATION_POINTS = {2: (0, 1, -1), 4: (0, 1, -1, 2, -2)}
# Lavin & Gray's sign choices on top of the derivation (a diagonal scale along ξ may move between
# Aᵀ, G and Bᵀ as long as the three scales multiply to 1): F(2,3) negates row 0 of Bᵀ into G and
# the ∞ row of Bᵀ into Aᵀ; F(4,3) is exactly the derivation.
_SIGNS = {2: dict(BT=(-1, 1, 1, -1), G=(-1, 1, 1, 1), A=(1, 1, 1, -1)),
          4: dict(BT=(1,) * 6, G=(1,) * 6, A=(1,) * 6)}


def _poly_from_roots(roots) -> list[Fraction]:
    """Coefficients (ascending powers) of Π (x − a) over ``roots``."""
    coeffs = [Fraction(1)]
    for a in roots:
        nxt = [Fraction(0)] * (len(coeffs) + 1)
        for i, c in enumerate(coeffs):
            nxt[i + 1] += c
            nxt[i] -= a * c
        coeffs = nxt
    return coeffs


def interpolation_matrices(points, m: int, r: int = R):
    """(Aᵀ, G, Bᵀ) of F(m, r) from its α − 1 finite interpolation points and ∞, exact
    (lists of lists of Fractions)."""
    points = [Fraction(p) for p in points]
    alpha = m + r - 1
    if len(points) != alpha - 1 or len(set(points)) != len(points):
        raise ValueError(f"F({m},{r}) needs {alpha - 1} distinct finite points, got {points}")
    AT = [[a ** i for a in points] + [Fraction(int(i == m - 1))] for i in range(m)]
    G, BT = [], []
    for i, a in enumerate(points):
        others = [b for j, b in enumerate(points) if j != i]
        denom = Fraction(1)
        for b in others:
            denom *= a - b
        G.append([a ** j / denom for j in range(r)])
        BT.append(_poly_from_roots(others) + [Fraction(0)])
    G.append([Fraction(int(j == r - 1)) for j in range(r)])
    BT.append(_poly_from_roots(points))
    return AT, G, BT


def tile_size(m_or_algo) -> int:
    """The output tile m of F(m×m, 3×3) from m, a variant ("f4x4_3x3") or an algorithm name."""
    if isinstance(m_or_algo, str):
        names = {**VARIANTS, **ALGORITHM_TILE, "fused_f2x2_3x3": 2}
        if m_or_algo not in names:
            raise ValueError(f"unknown Winograd variant {m_or_algo!r}; expected one of {sorted(names)}")
        return names[m_or_algo]
    if isinstance(m_or_algo, bool) or m_or_algo not in INTERPOLATION_POINTS:
        raise ValueError(f"Winograd output tile m must be 2 or 4 (F(2x2,3x3), F(4x4,3x3)), got {m_or_algo!r}")
    return int(m_or_algo)


@functools.cache
def winograd_matrices(m: int):
    """The (Aᵀ, G, Bᵀ) the kernels of F(m×m, 3×3) hard-code, as exact Fractions."""
    m = tile_size(m)
    AT, G, BT = interpolation_matrices(INTERPOLATION_POINTS[m], m)
    s = _SIGNS[m]
    AT = [[v * s["A"][j] for j, v in enumerate(row)] for row in AT]
    G = [[v * s["G"][i] for v in row] for i, row in enumerate(G)]
    BT = [[v * s["BT"][i] for v in row] for i, row in enumerate(BT)]
    return AT, G, BT


def unsupported_reason(problem: Conv2dProblem) -> str | None:
    """Why F(m×m, 3×3) cannot run this problem's shape (3x3, stride 1, dilation 1, groups 1),
    or None if it can."""
    rules = []
    if (problem.R, problem.S) != (3, 3):
        rules.append(f"a 3x3 kernel (got {problem.R}x{problem.S})")
    if (problem.stride_h, problem.stride_w) != (1, 1):
        rules.append(f"stride 1 (got {problem.stride_h}x{problem.stride_w})")
    if (problem.dilation_h, problem.dilation_w) != (1, 1):
        rules.append(f"dilation 1 (got {problem.dilation_h}x{problem.dilation_w})")
    if problem.groups != 1:
        rules.append(f"groups 1 (got {problem.groups})")
    return None if not rules else "Winograd F(mxm,3x3) needs " + ", ".join(rules)


def check(problem: Conv2dProblem) -> None:
    reason = unsupported_reason(problem)
    if reason:
        raise ValueError(f"{reason}: {problem.describe()}")


def tile_grid(problem: Conv2dProblem, m) -> tuple[int, int]:
    """Output tiles per image: (⌈P/m⌉, ⌈Q/m⌉)."""
    m = tile_size(m)
    return -(-problem.P // m), -(-problem.Q // m)


def tiles(problem: Conv2dProblem, m) -> int:
    """Output tiles over the whole batch: N·⌈P/m⌉·⌈Q/m⌉."""
    check(problem)
    th, tw = tile_grid(problem, m)
    return problem.N * th * tw


def workspace_bytes(problem: Conv2dProblem, m) -> int:
    """Transformed input V (α²·C·T) plus transformed products M (α²·K·T) at the problem's dtype
    (the filter transform U is :func:`filter_bytes`)."""
    alpha = tile_size(m) + R - 1
    return alpha * alpha * (problem.C + problem.K) * tiles(problem, m) * problem.itemsize


def filter_bytes(problem: Conv2dProblem, m) -> int:
    """The transformed filter U: α²·K·C elements at the problem's dtype."""
    check(problem)
    alpha = tile_size(m) + R - 1
    return alpha * alpha * problem.K * problem.C * problem.itemsize

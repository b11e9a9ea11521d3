"""float64 NumPy references that every kernel is checked against (tests and bench).

Written for clarity, not speed: each follows the textbook's definition directly
(§9.1's sum over channels and the kernel window), vectorised over the batch and
output positions with NumPy.
"""
from .conv import conv2d_ref, gemm_ref, im2col_ref  # noqa: F401

"""float64 NumPy references that every kernel is checked against (tests and bench).

Written for clarity, not speed: each follows the textbook's definition directly
(§9.1's sum over channels and the kernel window), vectorised over the batch and
output positions with NumPy.
"""
from .conv import conv2d_ref, gemm_ref, im2col_ref  # noqa: F401
from .pool import avg_pool2d_ref, global_avg_pool2d_ref, max_pool2d_ref, pool_out_size_ref  # noqa: F401,E402
from .transposed import conv_transpose2d_ref  # noqa: F401,E402
from .grad import (avg_pool2d_backward_ref, conv2d_bias_ref, conv2d_input_ref,  # noqa: F401,E402
                   conv2d_weight_ref, conv_problem, global_avg_pool2d_backward_ref,
                   max_pool2d_backward_ref)

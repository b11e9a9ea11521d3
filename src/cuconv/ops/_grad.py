"""Pieces the backward kernels' modules share (conv_dgrad, conv_wgrad, depthwise_grad, tc_grad):
the one-thread-per-output direct config of conv_dgrad.cu and conv_wgrad.cu, the 32-bit limits
of a problem's sizes, the split-K chunking, and the array slots of the gradients' plans."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..dtypes import ctype, int32_reason, tag
from ..plan import Ref
from ..registry import KernelEntry, stem

# The array slots of the gradient plans (ops/_algorithm.py's roles).
X, W, DY, DX, DW, DB = Ref("x"), Ref("w"), Ref("dy"), Ref("dx"), Ref("dw"), Ref("db")


def problem_int32_reason(p, *products) -> str | None:
    """Why ``p``'s sizes (N, C, H, W, K, R, S, P, Q and the (label, value) ``products``) do not
    fit the kernels' 32-bit ints, or None."""
    return int32_reason(("N", p.N), ("C", p.C), ("H", p.H), ("W", p.W), ("K", p.K), ("R", p.R), ("S", p.S),
                        ("P", p.P), ("Q", p.Q), *products)


@dataclass(frozen=True)
class DirectConfig:
    """``<KIND>_direct<T, BLOCK, NHWC>`` of ``FILE``: one thread per output element, the
    always-correct variant (conv_dgrad's dx, conv_wgrad's dW), labelled
    ``<file stem>_direct_<dtype>[_nhwc]_<BLOCK>``; ``layout`` "NHWC" reads and writes NHWC/KRSC."""
    KIND: ClassVar[str] = ""
    FILE: ClassVar[str] = ""
    dtype: str = "float32"
    block: int = 256
    layout: str = "NCHW"

    @property
    def name(self) -> str:
        return f"{stem(self.FILE)}_direct_{tag(self.dtype)}{layout_tag(self.layout)}_{self.block}"

    @property
    def expression(self) -> str:
        nhwc = ", true" if self.layout == "NHWC" else ""
        return f"{self.KIND}_direct<{ctype(self.dtype)}, {self.block}{nhwc}>"

    def can_implement(self, p) -> str | None:
        if p.dtype != self.dtype:
            return f"{self.name} takes {self.dtype}, got {p.dtype}"
        return problem_int32_reason(p, ("R·S", p.R * p.S))

    def entry(self) -> KernelEntry:
        return KernelEntry(self.FILE, self.expression, self.name, block_threads=self.block, min_blocks_per_sm=2)


def layout_tag(layout: str) -> str:
    """The label part of a gradient kernel's layout: "" for NCHW, "_nhwc" (as the forward's)."""
    return "_nhwc" if layout == "NHWC" else ""


def split_chunk(L: int, splits: int, align: int) -> tuple[int, int]:
    """(splits, chunk) covering L reduction indices with chunks that are multiples of
    ``align``, none empty: chunk = align·ceil(ceil(L / splits) / align), splits = ceil(L / chunk)."""
    splits = max(1, splits)
    chunk = -(-(-(-L // splits)) // align) * align
    return -(-L // chunk), chunk

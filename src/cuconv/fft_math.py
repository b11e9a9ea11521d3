"""FFT convolution math shared by the cost model and the FFT op (ops/fft_conv.py): the shape
rule, the transform sizes and tiles, the buffer sizes and the operation counts. A leaf module:
it imports only ``cuconv.problem``.

Stride-1 cross-correlation of a zero-padded Hp×Wp plane with an Re×Se (dilated) filter is a
circular correlation of any length L >= Hp along each axis: the wrap-around only reaches
outputs p > Hp − Re, which are cropped anyway (overlap-save). So the whole-image algorithm
(``fft``) transforms at Lh >= H + pad_top + pad_bottom (not the linear-convolution length
Hp + Re − 1, which zero-pads further for nothing), and the tiled one (``fft_tiling``) cuts the
output into Th×Tw tiles, each computed from an Lh×Lw input tile with Th = Lh − Re + 1.

FLOP convention (FFTW's benchFFT, http://www.fftw.org/speed/method.html): a complex
n-point transform counts 5·n·log2(n) real FLOPs and a real-data one half of that,
2.5·n·log2(n), whatever algorithm the library runs (the radix-2 Cooley-Tukey count; the
FLOPs cuFFT or pocketfft actually execute differ, the figure is a yardstick). A 2-D Lh×Lw
transform is n = Lh·Lw. A complex multiply-accumulate is 8 real FLOPs (4 multiplies, 4 adds).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from .problem import Conv2dProblem

ALGORITHMS = ("fft", "fft_tiling")
# The primes cuFFT has dedicated radix kernels for (and pocketfft too): lengths whose only
# prime factors are these run at full speed; other lengths fall back to Bluestein's algorithm.
SMOOTH_PRIMES = (2, 3, 5, 7)
# fft_tiling's square tile sizes (cuDNN's FFT_TILING works on 32x32 tiles); each axis is
# capped at the whole-image length, so a small image becomes one tile.
TILE_CANDIDATES = (16, 32, 64)
REAL_FFT_FLOPS_PER_POINT_LOG2 = 2.5     # half of the complex 5·n·log2(n)
COMPLEX_MAC_FLOPS = 8
# The filter planes are packed (real) and transformed in passes of at most this many bytes of
# real planes (or the items' real-planes buffer, when larger): the K·C/g planes of a large
# layer at whole-image size would otherwise need as much staging as their spectra.
FILTER_PASS_BYTES = 8 << 20
# fft_tiling runs its (image, tile) items in passes whose real planes and spectra take at most
# this many bytes (one item at least): its workspace stays bounded however large the image or
# the batch (cuDNN's FFT_TILING), where ``fft`` holds the whole batch's spectra at once.
TILING_PASS_BYTES = 128 << 20
COMPLEX_BYTES = 8                       # complex64
REAL_BYTES = 4                          # float32
FLAG_BYTES = 4                          # int32


def is_smooth(n: int) -> bool:
    """True when ``n`` > 0 has no prime factor other than 2, 3, 5, 7."""
    if n <= 0:
        return False
    for p in SMOOTH_PRIMES:
        while n % p == 0:
            n //= p
    return n == 1


@functools.cache
def fft_length(n: int, even: bool = False) -> int:
    """The smallest 2,3,5,7-smooth length >= ``n`` (even when ``even``: the last axis of a
    real-to-complex transform, which cuFFT and pocketfft run as a half-length complex one)."""
    m = max(int(n), 1)
    while not is_smooth(m) or (even and m % 2):
        m += 1
    return m


def effective_kernel(p: Conv2dProblem) -> tuple[int, int]:
    """The dilated filter's extent: (dil_h·(R−1) + 1, dil_w·(S−1) + 1)."""
    return p.dilation_h * (p.R - 1) + 1, p.dilation_w * (p.S - 1) + 1


def padded_extent(p: Conv2dProblem) -> tuple[int, int]:
    """The zero-padded input plane: (H + pad_top + pad_bottom, W + pad_left + pad_right)."""
    return p.H + p.pad_h + p.pad_bottom, p.W + p.pad_w + p.pad_right


def unsupported_reason(p: Conv2dProblem) -> str | None:
    """Why the FFT algorithms cannot run this problem's shape, or None. Stride 1 only: a strided
    convolution is a subsampled stride-1 one, and computing every stride-1 output to keep
    1/(s_h·s_w) of them is what polyphase decomposition avoids; that is not built."""
    if (p.stride_h, p.stride_w) != (1, 1):
        return (f"FFT convolution needs stride 1 (got {p.stride_h}x{p.stride_w}): it computes every "
                f"stride-1 output and would discard {1 - 1 / (p.stride_h * p.stride_w):.0%} of them; "
                f"polyphase decomposition of strided convolutions is not built")
    return None


@dataclass(frozen=True)
class FftTiling:
    """How one problem is cut for the FFT: transform size Lh×Lw, output tile Th×Tw, tiles per
    image. ``items`` = N·tiles_h·tiles_w transforms' worth of input per channel (one per image
    for ``fft``). Spectra hold Lh·(Lw//2 + 1) complex values per plane (the half of a real
    signal's spectrum that determines it)."""
    algo: str
    Lh: int
    Lw: int
    Th: int
    Tw: int
    tiles_h: int
    tiles_w: int
    N: int
    C: int
    K: int
    groups: int

    @property
    def Fw(self) -> int:
        return self.Lw // 2 + 1

    @property
    def freqs(self) -> int:
        """Complex values per spectrum plane: Lh·(Lw//2 + 1)."""
        return self.Lh * self.Fw

    @property
    def tiles(self) -> int:
        return self.tiles_h * self.tiles_w

    @property
    def items(self) -> int:
        return self.N * self.tiles

    @property
    def C_per_group(self) -> int:
        return self.C // self.groups

    @property
    def K_per_group(self) -> int:
        return self.K // self.groups

    @property
    def filter_planes(self) -> int:
        return self.K * self.C_per_group

    @property
    def filter_pass_planes(self) -> int:
        """Filter planes packed and transformed at a time when the workspace is not capped."""
        return min(self.filter_planes, max(1, FILTER_PASS_BYTES // (self.Lh * self.Lw * REAL_BYTES)))

    # ------------------------------------------------------------------ buffers
    def real_elements(self, items: int, filter_planes: int = 0) -> int:
        """The real planes buffer: the packed input tiles of ``items`` items, later their inverse
        transforms (max(C, K) planes each), and before them the packed filter planes,
        ``filter_planes`` at a time (``filter_pass_planes`` when the workspace is not capped)."""
        return max(items * max(self.C, self.K), filter_planes) * self.Lh * self.Lw

    def input_spectrum_elements(self, items: int) -> int:
        return items * self.C * self.freqs

    def output_spectrum_elements(self, items: int) -> int:
        return items * self.K * self.freqs

    def filter_spectrum_elements(self) -> int:
        return self.filter_planes * self.freqs

    def flag_elements(self, items: int) -> int:
        """The non-finite flags of a pass of ``items`` items (kernels/fft_conv.cu's header): an
        "any item" word, one int32 per item and one per output channel, rounded up to 16 bytes
        so that the buffer after them starts aligned."""
        return -(-(1 + items + self.K) // 4) * 4

    def chunk_bytes(self, items: int, filter_planes: int = 0) -> int:
        """Real planes + input and output spectra + non-finite flags for ``items`` items (no
        alignment padding)."""
        return (self.real_elements(items, filter_planes) * REAL_BYTES
                + (self.input_spectrum_elements(items) + self.output_spectrum_elements(items)) * COMPLEX_BYTES
                + self.flag_elements(items) * FLAG_BYTES)

    @property
    def filter_bytes(self) -> int:
        return self.filter_spectrum_elements() * COMPLEX_BYTES

    @property
    def pass_items(self) -> int:
        """Items a pass holds when the workspace is not capped: the whole batch for ``fft``, at
        most TILING_PASS_BYTES worth (at least one item) for ``fft_tiling``."""
        if self.algo == "fft":
            return self.items
        return min(self.items, max(1, TILING_PASS_BYTES // self.chunk_bytes(1)))

    def workspace_bytes(self, with_filter: bool = True) -> int:
        """One pass of ``pass_items`` items: real planes, input, output (and filter) spectra."""
        if not with_filter:
            return self.chunk_bytes(self.pass_items)
        return self.chunk_bytes(self.pass_items, self.filter_pass_planes) + self.filter_bytes

    # ------------------------------------------------------------------ FLOPs
    @property
    def transform_flops(self) -> int:
        """One real 2-D Lh×Lw transform (forward or inverse): 2.5·n·log2(n), n = Lh·Lw."""
        n = self.Lh * self.Lw
        return int(round(REAL_FFT_FLOPS_PER_POINT_LOG2 * n * math.log2(n))) if n > 1 else 0

    @property
    def input_transform_flops(self) -> int:
        return self.items * self.C * self.transform_flops

    @property
    def filter_transform_flops(self) -> int:
        return self.filter_planes * self.transform_flops

    @property
    def output_transform_flops(self) -> int:
        return self.items * self.K * self.transform_flops

    @property
    def product_macs(self) -> int:
        """Complex multiply-accumulates of the channel reduction: items·K·(C/g)·Lh·(Lw//2+1)."""
        return self.items * self.K * self.C_per_group * self.freqs

    @property
    def product_flops(self) -> int:
        return COMPLEX_MAC_FLOPS * self.product_macs

    def flops(self, with_filter: bool = True) -> int:
        """Input and output transforms, the products, and the filter transforms unless a
        transformed weight is reused."""
        return (self.input_transform_flops + self.product_flops + self.output_transform_flops
                + (self.filter_transform_flops if with_filter else 0))


def check(p: Conv2dProblem) -> None:
    reason = unsupported_reason(p)
    if reason:
        raise ValueError(f"{reason}: {p.describe()}")


def _tiling(p: Conv2dProblem, algo: str, Lh: int, Lw: int) -> FftTiling:
    Re, Se = effective_kernel(p)
    Th, Tw = Lh - Re + 1, Lw - Se + 1
    return FftTiling(algo, Lh, Lw, Th, Tw, -(-p.P // Th), -(-p.Q // Tw), p.N, p.C, p.K, p.groups)


def whole_image_size(p: Conv2dProblem) -> tuple[int, int]:
    """``fft``'s transform size: smooth lengths >= the padded plane (the last axis even)."""
    Hp, Wp = padded_extent(p)
    return fft_length(Hp), fft_length(Wp, even=True)


def tile_size_reason(p: Conv2dProblem, tile) -> str | None:
    """Why an explicit fft_tiling ``tile=(Lh, Lw)`` cannot run ``p`` (None when it can)."""
    Re, Se = effective_kernel(p)
    Lh, Lw = tile
    if Lh < Re or Lw < Se:
        return (f"tile {Lh}x{Lw} is smaller than the (dilated) filter {Re}x{Se}: no output would fit "
                f"in a tile")
    return None


def tiling(p: Conv2dProblem, algo: str = "fft", tile=None) -> FftTiling:
    """The transform size and tiles of ``algo`` on ``p``.

    ``fft``: one tile per image, Lh×Lw = ``whole_image_size``. ``fft_tiling``: ``tile`` (an
    int or (Lh, Lw)) when given, else the candidate of TILE_CANDIDATES, each axis capped at the
    whole-image length, with the fewest modelled FLOPs among those whose output tile is at least
    half the transform (Th >= L/2: the overlap does not dominate); when the filter is too large
    for every candidate, the smallest smooth length >= 2·(Re − 1).
    """
    check(p)
    whole_h, whole_w = whole_image_size(p)
    if algo == "fft":
        return _tiling(p, algo, whole_h, whole_w)
    if algo != "fft_tiling":
        raise ValueError(f"unknown FFT algorithm {algo!r}; expected one of {ALGORITHMS}")
    if tile is not None:
        Lh, Lw = (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))
        reason = tile_size_reason(p, (Lh, Lw))
        if reason:
            raise ValueError(f"{reason}: {p.describe()}")
        return _tiling(p, algo, Lh, Lw)
    Re, Se = effective_kernel(p)
    options = []
    for L in TILE_CANDIDATES:
        Lh, Lw = min(L, whole_h), min(L, whole_w)
        if (Lh == whole_h or 2 * (Lh - Re + 1) >= Lh) and (Lw == whole_w or 2 * (Lw - Se + 1) >= Lw):
            options.append(_tiling(p, algo, Lh, Lw))
    if not options:
        Lh = min(fft_length(2 * (Re - 1)), whole_h)
        Lw = min(fft_length(2 * (Se - 1), even=True), whole_w)
        return _tiling(p, algo, Lh, Lw)
    return min(options, key=lambda t: (t.flops(), t.Lh * t.Lw))


def fft_flops(p: Conv2dProblem, algo: str = "fft", with_filter: bool = True, tile=None) -> int:
    return tiling(p, algo, tile).flops(with_filter)


def workspace_bytes(p: Conv2dProblem, algo: str = "fft", with_filter: bool = True, tile=None) -> int:
    """Real planes, input, output and (unless reused) filter spectra and the non-finite flags of
    one pass (the whole batch for ``fft``): what the plan allocates when no workspace cap makes it
    chunk further (the plan adds at most 16 bytes of alignment per buffer)."""
    return tiling(p, algo, tile).workspace_bytes(with_filter)

"""FFT convolution, whole-image and tiled (the textbook's §8.4; kernels/fft_conv.cu).

Two algorithms for ``cuconv.conv2d`` (float32 data, complex64 spectra, NCHW, stride 1; any
padding, dilation by spreading the filter, groups):

* ``"fft"`` (cuDNN's FFT): one transform of size Lh×Lw per image and channel, Lh and Lw the
  smallest 2,3,5,7-smooth lengths >= the padded plane (cuconv.fft_math explains why the padded
  plane, not plane + kernel − 1, suffices for the cropped correlation).
* ``"fft_tiling"`` (cuDNN's FFT_TILING): overlap-save over fixed tiles — 16, 32 or 64 square,
  chosen per problem by the cost model, or ``tile=`` — so that the filter spectra and the
  per-image workspace stay bounded for large images.

Each runs: (filter) pack + R2C into the filter spectra Wf, unless ``transformed_weight=`` is
given; then per chunk of (image, tile) items: clear the chunk's non-finite flags
(fft_flags_init, which first also flags the filters), pack the input tiles, R2C, the channel
reduction as a complex GEMM per frequency (fft_channel_gemm), C2R, crop +
bias/residual/activation, the non-finite fix-up (fft_fixup). The transforms are the backend's
(``Backend.fft``: cuFFT through CuPy on the GPU, NumPy on the emulator), held in the plan as
``FftStep``s between the kernel launches.

Non-finite values (kernels/fft_conv.cu's header): a transform spreads one NaN or ±Inf over its
whole plane, so every item (image for ``fft``, tile for ``fft_tiling``) whose input window holds
one, every item where a transform produced one from finite data (float32 overflow of the
spectra), and every output channel whose filter holds one is flagged, and its outputs are
recomputed by the fix-up exactly as ``algo="direct"`` computes them: NaN and Inf reach exactly
the outputs, with exactly the values (bit for bit), of direct convolution. The weight flags come
from ``w`` itself, so they hold with ``transformed_weight=`` too (``w`` is always an input). The
flags (one per item of a pass, one per channel) are the workspace's first buffer, cleared by
every call and every pass.

Workspace (what the plan reports and ``max_workspace_bytes`` bounds), for the items of one pass
— the whole batch for ``fft``, at most 128 MiB of planes for ``fft_tiling``
(``fft_math.TILING_PASS_BYTES``), fewer when a cap asks: real planes (items·max(C, K)·Lh·Lw
floats: the packed filter planes in passes, then the packed inputs, then the inverse transforms),
input and output spectra (items·(C + K)·Lh·(Lw/2 + 1) complex64), the filter spectra
(K·C/g·Lh·(Lw/2 + 1) complex64) unless ``transformed_weight`` is given, and the non-finite flags
(1 + items + K int32) — without a cap that is
``cost.fft_cost(problem, algo).workspace_bytes`` (plus alignment). cuFFT's own work area is its
plan's, outside this figure.

Extra ``conv2d`` keyword arguments: ``transformed_weight=`` (``fft_filter_transform(w,
x.shape, ...)``), ``multiply="auto" | "simple"`` (the register-tiled channel GEMM or the
one-thread-per-output reference), and for ``fft_tiling`` ``tile=`` (int or (Lh, Lw)).

cupy.matmul instead of fft_channel_gemm: not measured (no GPU run yet). It would run
cublasCgemmStridedBatched over the Lh·(Lw/2+1) frequencies, which needs frequency-major
operands: cuFFT writes plane-major spectra, so X, Wf and Y would each take a transpose pass
(cupy.matmul copies non-unit-stride operands itself), three extra reads and writes of the
spectra against one read in this kernel. Per frequency the GEMM is (items × C/g)·(C/g × K/g):
small, so cuBLAS's batched kernels are far from their large-GEMM rate too. Which wins is for
``cuconv bench algos`` on a device to say.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import fft_math
from ..dtypes import INT32_MAX
from ..fft_math import FftTiling
from ..plan import FftStep, Launch, Output, Plan, PlanError, Ref, WORKSPACE_ALIGN, layout_buffers
from ..problem import Conv2dProblem, shape_arg
from ..registry import KernelEntry, register_kernel
from . import _common
from ._algorithm import ConvAlgorithm, ConvSpec, conv_plan
from ._common import OUT, W, X, f32, i32, i64
from ._frontend import FrontEnd

FILE = "fft_conv.cu"
THREADS = 256
_MAX_BLOCKS = 1 << 20           # the pack and crop kernels are grid-stride loops
_MAX_ELEMENTS = INT32_MAX     # per buffer of a chunk: the FFT batches and kernel counts are int


@dataclass(frozen=True)
class GemmConfig:
    """fft_channel_gemm<TB, TK>: each thread TB items × TK output channels at one frequency;
    a block 32 frequencies × 8·TK channels."""
    tb: int
    tk: int

    @property
    def name(self) -> str:
        return f"fft_conv_channel_gemm_{self.tb}x{self.tk}"

    @property
    def expression(self) -> str:
        return f"fft_channel_gemm<{self.tb}, {self.tk}>"

    def grid(self, items: int, K: int, groups: int, F: int) -> tuple[int, int, int]:
        kg = K // groups
        return (-(-F // 32), groups * -(-kg // (8 * self.tk)), -(-items // self.tb))


GEMM_WIDE = GemmConfig(4, 4)      # K/g >= 32: 16 complex MACs per 8 loads
GEMM_NARROW = GemmConfig(4, 1)    # K/g < 32: a block of 8 channels, fewer idle warps
GEMM_CONFIGS = (GEMM_WIDE, GEMM_NARROW)
GEMM_WIDE_MIN_CHANNELS = 8 * GEMM_WIDE.tk

# The parameterless kernels (extern "C"), by function name; each labelled fft_conv_<name without fft_>.
ENTRIES = {name: register_kernel(KernelEntry(FILE, name, "fft_conv_" + name.removeprefix("fft_"), block_threads=THREADS,
                                             min_blocks_per_sm=2, main=name == "fft_crop_epilogue"))
           for name in ("fft_pack_input", "fft_pack_filter", "fft_channel_gemm_simple", "fft_crop_epilogue",
                        "fft_flags_init", "fft_fixup")}
for _cfg in GEMM_CONFIGS:
    ENTRIES[_cfg] = register_kernel(KernelEntry(FILE, _cfg.expression, _cfg.name, block_threads=THREADS,
                                                min_blocks_per_sm=2, main=True))


# The fix-up's grid: at most this many blocks (about one resident wave on a large GPU), so that
# on finite data it costs a launch of blocks that each read two flags and exit.
FIXUP_BLOCKS = 1024


def _grid(total: int) -> tuple[int, int, int]:
    return (_common.grid_1d(total, THREADS, _MAX_BLOCKS), 1, 1)


def flag_refs(chunk: int) -> tuple[Ref, Ref, Ref]:
    """(item flags, "any item" word, channel flags) in the workspace's ``flags`` buffer, for
    passes of ``chunk`` items (the item flags are indexed within the pass)."""
    return Ref("flags", 1), Ref("flags", 0), Ref("flags", 1 + chunk)


# =========================================================================== launches
def pack_input_launch(x: Ref, real: Ref, p: Conv2dProblem, t: FftTiling, begin: int, count: int,
                      chunk: int | None = None) -> Launch:
    """real[b][c] (Lh×Lw) = the zero-padded input tile of items begin ... begin + count − 1; the
    items whose tile holds a non-finite value flagged (flags of passes of ``chunk`` items)."""
    item_flags, any_item, _ = flag_refs(count if chunk is None else chunk)
    return Launch(ENTRIES["fft_pack_input"], _grid(count * p.C * t.Lh * t.Lw), (THREADS, 1, 1),
                  (x, real, i32(p.C), i32(p.H), i32(p.W), i32(t.Lh), i32(t.Lw), i32(t.tiles_h), i32(t.tiles_w),
                   i32(t.Th), i32(t.Tw), i32(p.pad_h), i32(p.pad_w), i64(begin), i32(count), item_flags, any_item))


def pack_filter_launch(w: Ref, real: Ref, p: Conv2dProblem, t: FftTiling, begin: int, count: int) -> Launch:
    """real[q] (Lh×Lw) = filter plane begin + q (k·C/g + c), dilated and circularly reversed."""
    return Launch(ENTRIES["fft_pack_filter"], _grid(count * t.Lh * t.Lw), (THREADS, 1, 1),
                  (w, real, i32(p.R), i32(p.S), i32(p.dilation_h), i32(p.dilation_w), i32(t.Lh), i32(t.Lw),
                   i64(begin), i32(count)))


def gemm_launch(xf: Ref, wf: Ref, yf: Ref, t: FftTiling, count: int, multiply: str = "auto") -> Launch:
    """Y[b][k][f] = Σ_c X[b][c][f]·Wf[k][c][f] over k's group, for ``count`` items."""
    args = (xf, wf, yf, i32(count), i32(t.C), i32(t.K), i32(t.groups), i32(t.freqs))
    if multiply == "simple":
        return Launch(ENTRIES["fft_channel_gemm_simple"], _grid(count * t.K * t.freqs), (THREADS, 1, 1), args)
    cfg = GEMM_WIDE if t.K_per_group >= GEMM_WIDE_MIN_CHANNELS else GEMM_NARROW
    return Launch(ENTRIES[cfg], cfg.grid(count, t.K, t.groups, t.freqs), (32, 8, 1), args)


def crop_launch(real: Ref, out: Ref, has_bias: bool, act: int, has_residual: bool, p: Conv2dProblem,
                t: FftTiling, begin: int, count: int, chunk: int | None = None) -> Launch:
    """out's outputs of items begin ... begin + count − 1 from their inverse transforms, scaled
    by 1/(Lh·Lw), with the fused epilogue; items where a value came out non-finite flagged."""
    crop_h, crop_w = min(t.Th, p.P), min(t.Tw, p.Q)
    return Launch(ENTRIES["fft_crop_epilogue"], _grid(count * p.K * crop_h * crop_w), (THREADS, 1, 1),
                  (real, out, *_common.epilogue_refs(has_bias, has_residual), i32(act), f32(1.0 / (t.Lh * t.Lw)),
                   i32(p.K), i32(p.P), i32(p.Q), i32(t.Lh), i32(t.Lw), i32(t.tiles_h), i32(t.tiles_w),
                   i32(t.Th), i32(t.Tw), i32(crop_h), i32(crop_w), i64(begin), i32(count),
                   *flag_refs(count if chunk is None else chunk)))


def flags_launch(w: Ref, p: Conv2dProblem, count: int, chunk: int, filters: bool) -> Launch:
    """Clears the flags of a pass of ``count`` items; with ``filters`` (the first pass) also
    marks the output channels whose filter holds a non-finite weight (one block per filter)."""
    item_flags, any_item, k_flags = flag_refs(chunk)
    K = p.K if filters else 0
    blocks = max(1, min(max(K, -(-count // THREADS)), _MAX_BLOCKS))
    return Launch(ENTRIES["fft_flags_init"], (blocks, 1, 1), (THREADS, 1, 1),
                  (w, item_flags, any_item, k_flags, i32(K), i64(p.C_per_group * p.R * p.S), i64(count)))


def fixup_grid(p: Conv2dProblem, t: FftTiling, count: int) -> tuple[int, int, int]:
    """(x over a channel's outputs in the pass's items, y over channels, 1), at most FIXUP_BLOCKS."""
    gy = min(p.K, FIXUP_BLOCKS)
    outputs = count * min(t.Th, p.P) * min(t.Tw, p.Q)
    return (max(1, min(-(-outputs // THREADS), FIXUP_BLOCKS // gy)), gy, 1)


def fixup_launch(x: Ref, w: Ref, out: Ref, has_bias: bool, act: int, has_residual: bool, p: Conv2dProblem,
                 t: FftTiling, begin: int, count: int, chunk: int | None = None) -> Launch:
    """Recomputes the outputs of the pass's flagged items and of flagged channels as direct
    convolution does (exact NaN/Inf semantics); on finite data every block reads two flags and
    exits."""
    item_flags, any_item, k_flags = flag_refs(count if chunk is None else chunk)
    return Launch(ENTRIES["fft_fixup"], fixup_grid(p, t, count), (THREADS, 1, 1),
                  (x, w, out, *_common.epilogue_refs(has_bias, has_residual), i32(act), item_flags, any_item, k_flags,
                   *_common.conv_geometry_args(p), i32(t.tiles_h), i32(t.tiles_w), i32(t.Th), i32(t.Tw),
                   i32(min(t.Th, p.P)), i32(min(t.Tw, p.Q)), i64(begin), i32(count)))


def filter_stage(w: Ref, real: Ref, wf: Ref, p: Conv2dProblem, t: FftTiling, pass_planes: int) -> list:
    """Pack + R2C of every filter plane into ``wf`` (K, C/g, Lh, Lw/2+1), ``pass_planes`` planes a
    pass through the real-planes buffer."""
    steps = []
    total = t.filter_planes
    for begin in range(0, total, pass_planes):
        count = min(pass_planes, total - begin)
        steps.append(pack_filter_launch(w, real, p, t, begin, count))
        steps.append(FftStep("r2c", real, Ref(wf.name, wf.offset + begin * t.freqs), count, (t.Lh, t.Lw)))
    return steps


# =========================================================================== planning
def unsupported_reason(p: Conv2dProblem) -> str | None:
    """Why the FFT algorithms cannot run ``p`` (None when they can)."""
    reason = fft_math.unsupported_reason(p)
    if reason is None and p.dtype != "float32":
        reason = f"the FFT algorithms take float32 (complex64 spectra), got {p.dtype}"
    return reason


def _tile_option(tile):
    if tile is None:
        return None
    if isinstance(tile, (int, np.integer)) and not isinstance(tile, bool):
        tile = (int(tile), int(tile))
    if (not isinstance(tile, tuple) or len(tile) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in tile)):
        raise ValueError(f"tile must be a positive int or a pair (Lh, Lw) of positive ints, got {tile!r}")
    return int(tile[0]), int(tile[1])


def problem_tiling(p: Conv2dProblem, algo: str, tile=None) -> FftTiling:
    """The transform size and tiles ``algo`` uses on ``p`` (PlanError with the reason when none)."""
    reason = unsupported_reason(p)
    if reason is not None:
        raise PlanError(reason)
    tile = _tile_option(tile)
    if tile is not None:
        if algo != "fft_tiling":
            raise PlanError(f"tile= is an option of algo='fft_tiling'; {algo!r} transforms the whole image")
        reason = fft_math.tile_size_reason(p, tile)
        if reason is not None:
            raise PlanError(reason)
    return fft_math.tiling(p, algo, tile)


def chunking(t: FftTiling, max_workspace_bytes: int | None, with_filter: bool) -> tuple[int, int]:
    """(items per pass, filter planes per pass, at least the items' real planes). Without a cap:
    ``pass_items`` (fft: the whole batch; fft_tiling: TILING_PASS_BYTES worth; both within the
    int32 limits) and ``filter_pass_planes`` filter planes a pass.
    Under ``max_workspace_bytes``: the most items whose buffers fit with those filter passes,
    else with the filter packed through the items' real-planes buffer in more passes; when not
    even one item fits, one item with the filter in passes — the least workspace there is, which
    the plan reports and conv2d refuses with the reason."""
    per_item = max(t.real_elements(1), t.input_spectrum_elements(1), t.output_spectrum_elements(1))
    most = max(1, min(t.pass_items, _MAX_ELEMENTS // per_item, 65535 * GEMM_NARROW.tb))
    one_pass = t.filter_pass_planes if with_filter else 0
    if max_workspace_bytes is None:
        return most, max(one_pass, most * max(t.C, t.K))
    fixed = (t.filter_bytes if with_filter else 0) + 4 * WORKSPACE_ALIGN

    def largest(filter_planes: int) -> int:
        lo, hi = 0, most                 # chunk_bytes grows with the items: bisect the largest that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if t.chunk_bytes(mid, filter_planes) + fixed <= max_workspace_bytes:
                lo = mid
            else:
                hi = mid - 1
        return lo

    chunk = largest(one_pass)
    if not chunk:
        chunk, one_pass = max(1, largest(0)), 0
    return chunk, max(one_pass, chunk * max(t.C, t.K))


def _buffers(t: FftTiling, chunk: int, filter_planes: int, with_filter: bool):
    # The flags first: their size is a multiple of 16 bytes, so they add no alignment padding.
    parts = [("flags", "int32", t.flag_elements(chunk)),
             ("real", "float32", t.real_elements(chunk, filter_planes)),
             ("Xf", "complex64", t.input_spectrum_elements(chunk)),
             ("Yf", "complex64", t.output_spectrum_elements(chunk))]
    if with_filter:
        parts.append(("Wf", "complex64", t.filter_spectrum_elements()))
    return layout_buffers(*parts)


def _given_spectrum(spec: ConvSpec, p: Conv2dProblem, t: FftTiling, algo: str):
    """The transformed_weight option checked against this plan's transform size, or None."""
    given = spec.option("transformed_weight")
    if given is None:
        return None
    want = (p.K, p.C_per_group, t.Lh, t.Fw)
    _, shape, dtype = given
    how = (f"fft_filter_transform(w, x.shape, padding=..., dilation=..., algo={algo!r}"
           + (", tile=...)" if algo == "fft_tiling" else ")"))
    if dtype != "complex64":
        raise TypeError(f"transformed_weight must have dtype complex64, got {dtype} (shape {tuple(shape)})")
    if tuple(shape) != want:
        raise ValueError(f"transformed_weight for algo={algo!r} must have shape (K, C/g, Lh, Lw//2+1) = {want} "
                         f"for this problem's {t.Lh}x{t.Lw} transforms ({how} makes it), got {tuple(shape)}")
    return want


def _plan(algo: str):
    def plan(spec: ConvSpec) -> Plan:
        p = spec.problem
        multiply = spec.option("multiply", "auto")
        if multiply not in ("auto", "simple"):
            raise ValueError(f"multiply must be 'auto' or 'simple', got {multiply!r}")
        t = problem_tiling(p, algo, spec.option("tile"))
        per_item = max(t.real_elements(1), t.input_spectrum_elements(1), t.output_spectrum_elements(1))
        if per_item > _MAX_ELEMENTS:
            raise PlanError(f"one item's {t.Lh}x{t.Lw} planes ({per_item} elements a buffer) exceed the 2**31 "
                            f"elements a pass may hold" + ("; fft_tiling bounds them" if algo == "fft" else ""))
        if GEMM_NARROW.grid(1, t.K, t.groups, t.freqs)[1] > 65535:
            raise PlanError(f"the channel GEMM's grid.y = groups·⌈(K/g)/8⌉ must be <= 65535, got K={t.K}, "
                            f"groups={t.groups}")
        given = _given_spectrum(spec, p, t, algo)
        with_filter = given is None
        chunk, filter_planes = chunking(t, spec.max_workspace_bytes, with_filter)
        workspace = _buffers(t, chunk, filter_planes, with_filter)
        real = Ref("real")
        launches = []
        if with_filter:
            wf = Ref("Wf")
            launches += filter_stage(W, real, wf, p, t, filter_planes)
        else:
            wf = Ref("transformed_weight")
        for begin in range(0, t.items, chunk):
            count = min(chunk, t.items - begin)
            launches += [
                flags_launch(W, p, count, chunk, filters=begin == 0),
                pack_input_launch(X, real, p, t, begin, count, chunk),
                FftStep("r2c", real, Ref("Xf"), count * p.C, (t.Lh, t.Lw)),
                gemm_launch(Ref("Xf"), wf, Ref("Yf"), t, count, multiply),
                FftStep("c2r", Ref("Yf"), real, count * p.K, (t.Lh, t.Lw)),
                crop_launch(real, OUT, spec.has_bias, spec.act, spec.has_residual, p, t, begin, count, chunk),
                fixup_launch(X, W, OUT, spec.has_bias, spec.act, spec.has_residual, p, t, begin, count, chunk),
            ]
        extra = () if given is None else (("transformed_weight", given, "complex64"),)
        desc = (f"{algo}: {t.Lh}x{t.Lw} transforms, {t.tiles_h}x{t.tiles_w} tiles of {t.Th}x{t.Tw} outputs "
                f"per image, {-(-t.items // chunk)} pass(es) of {chunk} item(s)")
        return conv_plan(spec, algo, launches, workspace=workspace, extra_inputs=extra, description=desc)

    return plan


FFT = ConvAlgorithm(
    "fft", _plan("fft"), options=("transformed_weight", "multiply"), crops=True,
    description="FFT convolution over the whole (padded) image: R2C transforms, a complex GEMM over "
                "channels per frequency, C2R, crop (cuDNN's FFT)")
FFT_TILING = ConvAlgorithm(
    "fft_tiling", _plan("fft_tiling"), options=("transformed_weight", "multiply", "tile"), crops=True,
    description="FFT convolution by overlap-save over 16/32/64-square tiles: bounded filter spectra "
                "and workspace for large images (cuDNN's FFT_TILING)")
ALGORITHMS = (FFT, FFT_TILING)


# =========================================================================== fft_filter_transform
def _filter_plan(be, env, args, extra, misaligned) -> Plan:
    input_shape, padding, dilation, algo, tile = args
    w, out = env["w"], env["out"]
    w = _common.as_tensor(w, "weight", ndim=4, dtypes=("float32",), be=be)
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be the 4-D NCHW shape of the conv's input, got {input_shape}")
    C, Cg = input_shape[1], int(w.shape[1])
    if Cg <= 0 or C % Cg:
        raise ValueError(f"input_shape {input_shape} has C={C} channels, which weight {tuple(w.shape)} "
                         f"(C/groups={Cg}) does not divide")
    if algo not in fft_math.ALGORITHMS:
        raise ValueError(f"algo must be one of {fft_math.ALGORITHMS}, got {algo!r}")
    p = Conv2dProblem.from_shapes(input_shape, tuple(w.shape), 1, padding, dilation, C // Cg)
    try:
        t = problem_tiling(p, algo, tile)
    except PlanError as exc:
        raise ValueError(f"fft_filter_transform: {exc}: {p.describe()}") from None
    shape = (p.K, Cg, t.Lh, t.Fw)
    if out is not None:
        _common.check_out(out, shape, np.complex64, be)
        _common.same_device(be, weight=w, out=out)
    planes = t.filter_pass_planes
    buffers, nbytes = layout_buffers(("real", "float32", planes * t.Lh * t.Lw))
    return Plan("fft_filter_transform", algo, p, tuple(filter_stage(W, Ref("real"), OUT, p, t, planes)), ("w",),
                (Output("out", shape, np.dtype(np.complex64)),), be.device_key(), workspace_bytes=nbytes,
                buffers=buffers, expected=(("w", tuple(w.shape), "float32"),),
                description=f"{t.Lh}x{t.Lw} filter spectra")


_FILTER = FrontEnd("fft_filter_transform", ("w", "out"), _filter_plan, names={"w": "weight"})


def fft_filter_transform(w, input_shape, *, padding=0, dilation=1, algo: str = "fft", tile=None, out=None):
    """The filter spectra that ``conv2d(x, w, ..., algo=algo, transformed_weight=...)`` multiplies
    by: shape (K, C/groups, Lh, Lw//2 + 1), complex64, on the current backend.

    The transform size depends on the problem, so this takes the conv's ``input_shape`` (x.shape;
    groups = C / w.shape[1]), ``padding``, ``dilation``, ``algo`` ("fft" or "fft_tiling") and
    ``tile`` as conv2d gets them. The filter is spread by the dilation and circularly reversed
    before its R2C transform, so its spectrum is the conjugate of w's (the correlation's).
    """
    return _FILTER({"w": w, "out": out}, (shape_arg(input_shape, "input_shape"), padding, dilation, algo, tile))


def fft_size(problem: Conv2dProblem, algo: str = "fft", tile=None) -> tuple[int, int]:
    """The (Lh, Lw) transform size ``algo`` uses on ``problem``."""
    t = problem_tiling(problem, algo, tile)
    return t.Lh, t.Lw


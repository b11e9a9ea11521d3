"""Algorithm ``"depthwise"`` and ``cuconv.depthwise_conv2d``: kernels/depthwise.cu.

Depthwise convolution: ``groups == C``, weight ``(M·C, 1, R, S)`` (channel multiplier M),
output channel k filters input channel k // M. float32 and float64 (``f64`` in the names),
NCHW and NHWC (weight ``(M·C, R, S, 1)``, the same memory). NCHW kernels, picked per problem:

* ``depthwise_f32_k{3,5,7}_s{1,2}_v{V}`` — square 3/5/7 filter, equal stride 1 or 2,
  dilation 1: input tile + halo staged in shared memory, the filter in registers, V output
  rows per thread sliding down the staged rows (float64: 3x3 only, ``depthwise_f64_k3_*``;
  a 5x5 filter of doubles alone would fill the 64-register budget);
* ``depthwise_f32_generic`` — the same staging for any R, S, stride, dilation;
* ``depthwise_f32_direct`` — one thread per output from global memory: the fallback when no
  tile fits in shared memory (huge filters, huge dilation or multiplier), and the simple
  variant the tests compare the others with.

NHWC (MobileNet-style channels-last nets): ``depthwise_f32_nhwc_k{3,5}_s{1,2}_v4`` (a thread
computes 4 adjacent outputs of one channel, 2 in most float64 configs; channels run fastest
across threads, so loads and stores are coalesced with no shared memory) and
``depthwise_f32_nhwc_direct`` for everything else (variant "generic" is NCHW only).

float16 and bfloat16 (``f16`` / ``bf16`` in the names) run every kernel above with fp32
accumulation (shared-memory tiles hold fp32), one rounding at the store, and in NHWC add
``depthwise_{f16,bf16}_nhwc_vec8_k{3,5}_s{1,2}_v2``, ``..._vec8_k7_s{1,2}_v1`` (and ``vec4`` for
3x3): 8 (4) channels × 2 (7x7: 1) output columns per thread, inputs, residual and outputs moved as 16-byte (8-byte) vectors.
They need channel multiplier 1, C a multiple of 8 (4) and 16-byte aligned arrays (the plan
records that, so a misaligned view is planned again onto the scalar strip kernel, which takes
any C).

Shared memory per block is capped at 15 KiB so that four 256-thread blocks fit on every
target (sm_75 has 64 KiB per SM): 50 % theoretical occupancy on sm_90, which is what
``min_blocks_per_sm=4`` promises to the compile matrix (every depthwise kernel promises 4).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from ..dtypes import DTYPES, FLOAT_DTYPES, INT32_MAX, TENSOR_CORE_DTYPES, ctype, tag
from ..plan import Launch, PlanError
from ..problem import Conv2dProblem
from ..registry import KernelEntry, register_kernel
from . import _common
from ._algorithm import ConvAlgorithm, ConvSpec, conv_plan
from ._common import OUT, W, X, i32
from ._conv_frontend import ConvFrontEnd
from ._frontend import plan_of

FILE = "depthwise.cu"
THREADS = 256
MIN_BLOCKS_PER_SM = 4
VEC_MIN_BLOCKS_PER_SM = 2            # depthwise_nhwc_vec: V·VEC fp32 accumulators, > 64 registers
SMEM_LIMIT_BYTES = 15 * 1024
MAX_BLOCKS_DIRECT = 1 << 16          # the direct kernel's grid-stride loop covers the rest
# Blocks the planner aims for at least (two per SM on a 132-SM H100) before it grows tiles.
TARGET_BLOCKS = 264

VARIANTS = ("auto", "specialized", "generic", "direct")


@dataclass(frozen=True)
class DepthwiseConfig:
    """One instantiation of the tiled kernel (NCHW): ``ks == 0`` is the generic one; with
    ``layout="NHWC"`` one of the NHWC strip kernel (``rows``: outputs per thread along a row)."""
    ks: int = 0          # R = S = ks (0: runtime)
    stride: int = 0      # stride_h = stride_w (0: runtime)
    rows: int = 1        # V: output rows per thread (NHWC: output columns)
    dtype: str = "float32"
    layout: str = "NCHW"
    vec: int = 0         # NHWC 16-bit: channels per thread moved as one 16- (8) or 8-byte (4) vector

    @property
    def name(self) -> str:
        short = tag(self.dtype) + ("_nhwc" if self.layout == "NHWC" else "") + (f"_vec{self.vec}" if self.vec else "")
        if self.ks == 0:
            return f"depthwise_{short}_generic"
        return f"depthwise_{short}_k{self.ks}_s{self.stride}_v{self.rows}"

    @property
    def expression(self) -> str:
        if self.vec:
            return f"depthwise_nhwc_vec<{ctype(self.dtype)}, {self.ks}, {self.stride}, {self.rows}, {self.vec}>"
        kernel = "depthwise_nhwc" if self.layout == "NHWC" else "depthwise_tiled"
        return f"{kernel}<{ctype(self.dtype)}, {self.ks}, {self.stride}, {self.rows}>"

    def matches(self, p: Conv2dProblem) -> str | None:
        """None if this specialized config's compile-time constants fit ``p``, else why not."""
        if self.ks == 0:
            return None
        if (p.R, p.S) != (self.ks, self.ks):
            return f"{self.name} needs a {self.ks}x{self.ks} filter, got {p.R}x{p.S}"
        if (p.stride_h, p.stride_w) != (self.stride, self.stride):
            return f"{self.name} needs stride {self.stride}, got {(p.stride_h, p.stride_w)}"
        if (p.dilation_h, p.dilation_w) != (1, 1):
            return f"{self.name} needs dilation 1, got {(p.dilation_h, p.dilation_w)}"
        return None

    def entry(self) -> KernelEntry:
        nchw = self.layout == "NCHW"
        return KernelEntry(FILE, self.expression, self.name, block_threads=THREADS,
                           min_blocks_per_sm=VEC_MIN_BLOCKS_PER_SM if self.vec else MIN_BLOCKS_PER_SM,
                           dynamic_smem=SMEM_LIMIT_BYTES if nchw else 0, cuda_headers=True,
                           main=self.ks == 3 and self.stride == 1 and nchw and self.dtype == "float32")


# V per (kernel size, stride): as many rows as keep the filter, V accumulators and one staged
# row within 64 registers (the 4-blocks/SM budget) without spilling on any target.
_SPECIALIZED = {"float32": ((3, 1, 4), (3, 2, 4), (5, 1, 3), (5, 2, 2), (7, 1, 2), (7, 2, 2)),
                "float64": ((3, 1, 2), (3, 2, 2))}
# NHWC strips: V adjacent outputs per thread; a double strip of stride 2 or width 5 reads
# ~2x the registers, so float64 takes V = 2 there (V = 4 spills on sm_90 for 5x5 stride 2).
_NHWC = {"float32": ((3, 1, 4), (3, 2, 4), (5, 1, 4), (5, 2, 4)),
         "float64": ((3, 1, 4), (3, 2, 2), (5, 1, 2), (5, 2, 2))}
# The 16-bit types accumulate (and stage) in fp32: float32's register budget, float32's configs.
for _dt in TENSOR_CORE_DTYPES:
    _SPECIALIZED[_dt], _NHWC[_dt] = _SPECIALIZED["float32"], _NHWC["float32"]
# NHWC 16-bit vectors (ks, stride, V, VEC), in the order auto tries them: 16-byte vectors for
# 3/5/7, 8-byte ones for 3x3 (C a multiple of 4, not 8). 7x7 takes one column per thread: two
# (9 packed input vectors a row at stride 2) spill on sm_120 within the 128-register budget.
_NHWC_VEC = tuple((ks, st, 1 if ks == 7 else 2, 8) for ks in (3, 5, 7) for st in (1, 2)) + (
    (3, 1, 2, 4), (3, 2, 2, 4))
GENERICS = {dt: DepthwiseConfig(dtype=dt) for dt in FLOAT_DTYPES}
SPECIALIZEDS = {dt: tuple(DepthwiseConfig(ks, st, v, dt) for ks, st, v in _SPECIALIZED[dt]) for dt in FLOAT_DTYPES}
NHWC_CONFIGS = {dt: tuple(DepthwiseConfig(ks, st, v, dt, "NHWC") for ks, st, v in _NHWC[dt]) for dt in FLOAT_DTYPES}
VEC_CONFIGS = {dt: tuple(DepthwiseConfig(ks, st, v, dt, "NHWC", vec) for ks, st, v, vec in _NHWC_VEC)
               for dt in TENSOR_CORE_DTYPES}
GENERIC, SPECIALIZED = GENERICS["float32"], SPECIALIZEDS["float32"]


def _direct_name(dtype: str, layout: str) -> str:
    return f"depthwise_{tag(dtype)}{'_nhwc' if layout == 'NHWC' else ''}_direct"


ENTRIES = {cfg: register_kernel(cfg.entry())
           for dt in FLOAT_DTYPES
           for cfg in (GENERICS[dt], *SPECIALIZEDS[dt], *NHWC_CONFIGS[dt], *VEC_CONFIGS.get(dt, ()))}
DIRECT_ENTRIES = {(dt, layout): register_kernel(KernelEntry(
    FILE, f"depthwise_direct<{ctype(dt)}, {str(layout == 'NHWC').lower()}>", _direct_name(dt, layout),
    block_threads=THREADS, min_blocks_per_sm=MIN_BLOCKS_PER_SM, cuda_headers=True))
    for dt in FLOAT_DTYPES for layout in ("NCHW", "NHWC")}
DIRECT_ENTRY = DIRECT_ENTRIES[("float32", "NCHW")]
DIRECT_NAME = DIRECT_ENTRY.label


# --------------------------------------------------------------------------- tile planning
@dataclass(frozen=True)
class DepthwiseTile:
    """A block's share: ``tile_c`` input channels (all M outputs of each) × ``tile_p`` output
    rows × ``tile_q`` output columns, and the dynamic shared memory that takes."""
    tile_c: int
    tile_p: int
    tile_q: int
    smem_bytes: int
    blocks: int


def _smem_floats(p: Conv2dProblem, rows: int, tc: int, tp: int, tq: int) -> int:
    M = p.K // p.C
    strips = -(-tp // rows)
    in_rows = (strips * rows - 1) * p.stride_h + (p.R - 1) * p.dilation_h + 1
    in_cols = (tq - 1) * p.stride_w + (p.S - 1) * p.dilation_w + 1
    return tc * in_rows * in_cols + tc * M * p.R * p.S


def stage_bytes(dtype: str) -> int:
    """Bytes of a staged element: the tiles hold the accumulator type (fp32 for 16-bit inputs)."""
    return DTYPES[DTYPES[dtype].accumulator].itemsize


def plan_tile(p: Conv2dProblem, rows: int, smem_limit: int = SMEM_LIMIT_BYTES) -> DepthwiseTile | None:
    """The tile for the tiled kernel with ``rows`` output rows per thread, or None if even the
    smallest tile does not fit in ``smem_limit`` bytes.

    Rule: whole output rows when Q <= 128 (a block's input rows are then contiguous in
    memory), else 64-column tiles; as many rows (a multiple of ``rows``) as give each thread
    one strip, fewer when the problem is small (keep >= TARGET_BLOCKS blocks); when a tile
    covers a whole plane, several channels per block (late MobileNet layers are 7x7).
    """
    floats = smem_limit // stage_bytes(p.dtype)   # staged elements (the accumulator type)
    M = p.K // p.C
    total = p.N * p.K * p.P * p.Q
    target = max(32 * rows, min(THREADS * rows, total // TARGET_BLOCKS))   # outputs per block

    def fits(tc, tp, tq):
        return _smem_floats(p, rows, tc, tp, tq) <= floats

    widths = ([p.Q] if p.Q <= 128 else []) + [w for w in (64, 32, 16, 8, 4, 2, 1) if w < p.Q]
    tq = next((w for w in widths if fits(1, rows, w)), None)
    if tq is None:
        return None
    max_rows = -(-p.P // rows) * rows
    tp = rows
    while (tp + rows <= max_rows and (tp + rows) * tq * M <= max(target, rows * tq * M)
           and fits(1, tp + rows, tq)):
        tp += rows
    tc = 1
    if tp >= p.P and tq >= p.Q:
        per_plane = M * p.P * p.Q
        while tc < p.C and (tc + 1) * per_plane <= target and fits(tc + 1, tp, tq):
            tc += 1
    blocks = p.N * (-(-p.C // tc)) * (-(-p.P // tp)) * (-(-p.Q // tq))
    if blocks > INT32_MAX:
        return None
    return DepthwiseTile(tc, tp, tq, _smem_floats(p, rows, tc, tp, tq) * stage_bytes(p.dtype), blocks)


def int32_reason(p: Conv2dProblem) -> str | None:
    for name in ("N", "C", "H", "W", "K", "R", "S", "P", "Q"):
        if getattr(p, name) > INT32_MAX:
            return f"{name}={getattr(p, name)} does not fit a 32-bit int"
    if p.K * p.R * p.S > INT32_MAX:
        return f"K·R·S={p.K * p.R * p.S} does not fit a 32-bit int"
    return None


def can_implement(p: Conv2dProblem) -> str | None:
    if p.dtype not in FLOAT_DTYPES:
        return f"depthwise takes {', '.join(FLOAT_DTYPES)}, got {p.dtype}"
    if p.groups != p.C:
        return (f"depthwise needs groups == C (one filter group per input channel), got "
                f"groups={p.groups}, C={p.C}")
    return int32_reason(p)


@dataclass(frozen=True)
class DepthwisePlan:
    kernel: str                       # the config's name (pytest id, bench `kernel` column)
    config: DepthwiseConfig | None    # None: the direct kernel
    tile: DepthwiseTile | None


def vec_config(p: Conv2dProblem, aligned: bool) -> DepthwiseConfig | None:
    """The NHWC 16-bit vector config for ``p``: channel multiplier 1, C a multiple of its VEC, the
    arrays 16-byte aligned (``aligned``), a matching filter and stride; else None."""
    if not aligned or p.K != p.C:
        return None
    return next((c for c in VEC_CONFIGS.get(p.dtype, ()) if p.C % c.vec == 0 and c.matches(p) is None), None)


def _plan_nhwc(p: Conv2dProblem, variant: str, aligned: bool) -> DepthwisePlan:
    """NHWC: the 16-bit vector kernel, else the strip kernel when a config matches (and it is not
    "direct"), else direct."""
    if variant == "generic":
        raise ValueError(f"variant='generic' is the NCHW tiled kernel; NHWC {p.describe()} takes 'auto', "
                         "'specialized' or 'direct'")
    if variant in ("auto", "specialized"):
        cfg = vec_config(p, aligned) or next((c for c in NHWC_CONFIGS[p.dtype] if c.matches(p) is None), None)
        if cfg is not None:
            return DepthwisePlan(cfg.name, cfg, None)
        if variant == "specialized":
            raise ValueError(f"variant='specialized' cannot run NHWC {p.describe()}: the NHWC kernels cover "
                             f"3x3 and 5x5 filters, stride 1 or 2, dilation 1")
    return DepthwisePlan(_direct_name(p.dtype, "NHWC"), None, None)


@functools.lru_cache(maxsize=4096)   # problems are frozen (hashable); planning is per shape
def plan(p: Conv2dProblem, variant: str = "auto", layout: str = "NCHW", aligned: bool = True) -> DepthwisePlan:
    """Which kernel runs ``p``: ``variant`` "auto" (specialized, else generic, else direct),
    or force "specialized" / "generic" / "direct" (ValueError when it cannot run ``p``).
    ``layout="NHWC"``: the NHWC 16-bit vector kernel (``aligned``: x, out and residual start
    16-byte aligned), else the NHWC strip kernel, else the NHWC direct kernel."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    reason = can_implement(p)
    if reason is not None:
        raise ValueError(f"depthwise cannot run {p.describe()}: {reason}")
    if layout == "NHWC":
        return _plan_nhwc(p, variant, aligned)
    specialized = SPECIALIZEDS[p.dtype]
    if variant in ("auto", "specialized"):
        reasons = [cfg.matches(p) for cfg in specialized]
        cfg = next((c for c, r in zip(specialized, reasons) if r is None), None)
        tile = plan_tile(p, cfg.rows) if cfg is not None else None
        if tile is not None:
            return DepthwisePlan(cfg.name, cfg, tile)
        if variant == "specialized":
            covers = "3x3 (float64)" if p.dtype == "float64" else "3/5/7"
            why = ("no specialized config for a {}x{} filter, stride {}, dilation {} (they cover "
                   "{} square, stride 1 or 2, dilation 1)".format(
                       p.R, p.S, (p.stride_h, p.stride_w), (p.dilation_h, p.dilation_w), covers)
                   if cfg is None else f"{cfg.name}'s smallest tile needs more than "
                                       f"{SMEM_LIMIT_BYTES} bytes of shared memory")
            raise ValueError(f"variant='specialized' cannot run {p.describe()}: {why}")
    if variant in ("auto", "generic"):
        tile = plan_tile(p, 1)
        if tile is not None:
            return DepthwisePlan(GENERICS[p.dtype].name, GENERICS[p.dtype], tile)
        if variant == "generic":
            raise ValueError(f"variant='generic' cannot run {p.describe()}: its smallest tile "
                             f"({_smem_floats(p, 1, 1, 1, 1) * p.itemsize} bytes) exceeds the "
                             f"{SMEM_LIMIT_BYTES}-byte shared-memory budget")
    return DepthwisePlan(_direct_name(p.dtype, "NCHW"), None, None)


def launches(p: Conv2dProblem, x, w, out, has_bias: bool, has_residual: bool, act_code: int,
             variant: str = "auto", bias=None, residual=None, layout: str = "NCHW", aligned: bool = True
             ) -> tuple[DepthwisePlan, list[Launch]]:
    """The depthwise kernel ``plan(p, variant, layout, aligned)`` picks, as a launch over the array
    slots ``x``, ``w``, ``out`` (and ``bias``/``residual`` slots when given, else the roles)."""
    pl = plan(p, variant, layout, aligned)
    ph = _common.Ref.absent(p.dtype)
    M = p.K // p.C
    bias = (bias or _common.Ref("bias")) if has_bias else ph
    residual = (residual or _common.Ref("residual")) if has_residual else ph
    flags = (i32(has_bias), i32(has_residual), i32(act_code))
    if pl.config is not None and pl.config.vec:
        # Items: N·P·ceil(Q/V)·(C/VEC), grid-stride.
        items = p.N * p.P * (-(-p.Q // pl.config.rows)) * (p.C // pl.config.vec)
        grid = _common.grid_1d(items, THREADS, MAX_BLOCKS_DIRECT)
        return pl, [Launch(ENTRIES[pl.config], (grid, 1, 1), (THREADS, 1, 1), (
            x, w, bias, residual, out, i32(p.N), i32(p.C), i32(p.H), i32(p.W), i32(p.P), i32(p.Q),
            i32(p.pad_h), i32(p.pad_w), *flags))]
    if pl.config is not None and pl.config.layout == "NHWC":
        # Items: N·P·ceil(Q/V)·K, grid-stride.
        items = p.N * p.P * (-(-p.Q // pl.config.rows)) * p.K
        grid = _common.grid_1d(items, THREADS, MAX_BLOCKS_DIRECT)
        return pl, [Launch(ENTRIES[pl.config], (grid, 1, 1), (THREADS, 1, 1), (
            x, w, bias, residual, out, i32(p.N), i32(p.C), i32(p.H), i32(p.W), i32(M), i32(p.P), i32(p.Q),
            i32(p.pad_h), i32(p.pad_w), *flags))]
    common = (x, w, bias, residual, out,
              i32(p.N), i32(p.C), i32(p.H), i32(p.W), i32(M), i32(p.P), i32(p.Q), i32(p.R),
              i32(p.S), i32(p.stride_h), i32(p.stride_w), i32(p.pad_h), i32(p.pad_w),
              i32(p.dilation_h), i32(p.dilation_w))
    if pl.config is None:
        grid = _common.grid_1d(p.N * p.K * p.P * p.Q, THREADS, MAX_BLOCKS_DIRECT)
        return pl, [Launch(DIRECT_ENTRIES[(p.dtype, layout)], (grid, 1, 1), (THREADS, 1, 1), (*common, *flags))]
    t = pl.tile
    return pl, [Launch(ENTRIES[pl.config], (t.blocks, 1, 1), (THREADS, 1, 1),
                       (*common, i32(t.tile_c), i32(t.tile_p), i32(t.tile_q), *flags), t.smem_bytes)]


def traffic_note(p: Conv2dProblem, layout: str = "NCHW", has_bias: bool = False, has_residual: bool = False,
                 variant: str = "auto") -> str:
    """The bench row's statement of what bounds a depthwise kernel: memory. Compulsory DRAM bytes per
    output (x and w read once, y written once, bias and residual read once: R·S FMAs per output
    against a few bytes, so the bandwidth roof binds), the ceiling that gives, and the input element
    loads per output the chosen kernel issues to shared memory / L1 / L2 (its halo and strip overlap:
    re-reads that the caches absorb when they hit, DRAM traffic when they do not)."""
    pl = plan(p, variant, layout)
    outputs = p.N * p.K * p.P * p.Q
    per_out = p.min_bytes(has_bias, has_residual) / outputs if outputs else 0.0
    x_per_out = p.input_bytes() / outputs if outputs else 0.0
    cfg, M = pl.config, p.K // p.C
    if cfg is None:
        loads, how = p.R * p.S, "one load per tap (direct)"
    elif cfg.layout == "NHWC":
        span = (cfg.rows - 1) * cfg.stride + cfg.ks
        loads, how = cfg.ks * span / cfg.rows, f"{cfg.ks} rows x {span} columns per {cfg.rows} outputs"
    else:
        t = pl.tile
        strips = -(-t.tile_p // cfg.rows)
        in_rows = (strips * cfg.rows - 1) * p.stride_h + (p.R - 1) * p.dilation_h + 1
        in_cols = (t.tile_q - 1) * p.stride_w + (p.S - 1) * p.dilation_w + 1
        loads, how = in_rows * in_cols / (M * t.tile_p * t.tile_q), "the staged tile with its halo"
    return (f"memory-bound ({p.R * p.S} FMAs per output): {per_out:.3g} compulsory DRAM bytes per output "
            f"({x_per_out:.3g} of x, {p.itemsize} of y{f', {p.itemsize} of residual' if has_residual else ''}); "
            f"bandwidth ceiling = peak_gbps / {per_out:.3g} B outputs per second (roofline_time_ms); "
            f"{pl.kernel} loads {loads:.3g} input elements per output ({how})")


def conv_plan_depthwise(spec: ConvSpec):
    p = spec.problem
    reason = can_implement(p)
    if reason is not None:
        raise PlanError(reason)
    variant = spec.option("variant", "auto")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    vec_roles = ("x", "out", *(("residual",) if spec.has_residual else ()))
    aligned = all(spec.aligned(r) for r in vec_roles)
    pl, ls = launches(p, X, W, OUT, spec.has_bias, spec.has_residual, spec.act, variant, layout=spec.layout,
                      aligned=aligned)
    return conv_plan(spec, "depthwise", ls, description=pl.kernel,
                     aligned=vec_roles if pl.config is not None and pl.config.vec else ())


ALGORITHM = ConvAlgorithm(
    name="depthwise",
    crops=True,
    plan=conv_plan_depthwise,
    dtypes=FLOAT_DTYPES,
    layouts=("NCHW", "NHWC"),
    options=("variant",),
    description="groups == C (channel multiplier M): shared-memory tiles with halo, 3/5/7 "
                "specialized, generic and direct fallbacks; bias/activation/residual fused",
)


_FRONT = ConvFrontEnd(lambda spec, algo: ALGORITHM.plan_or_raise(spec), "depthwise_conv2d")


def _depthwise_args(x, w, variant: str, layout: str = "NCHW") -> int:
    """The channel count (groups) of a depthwise call; ValueError for a non-depthwise weight."""
    xs, ws = getattr(x, "shape", None), getattr(w, "shape", None)
    C = 1   # without shapes the front end reports the type or rank
    if xs is not None and ws is not None and len(xs) in (3, 4) and len(ws) == 4:
        nhwc = layout == "NHWC"
        C = int(xs[-1] if nhwc else xs[-3])
        one = ws[3] if nhwc else ws[1]
        if one != 1 or ws[0] % C != 0 or ws[0] == 0:
            want = "(M·C, R, S, 1)" if nhwc else "(M·C, 1, R, S)"
            raise ValueError(f"depthwise_conv2d needs a weight of shape {want} with C={C} the "
                             f"input channels (input {tuple(xs)}, layout {layout}), got weight {tuple(ws)}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return C


def depthwise_conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, *, activation=None,
                     residual=None, out=None, variant: str = "auto", layout: str = "NCHW"):
    """Depthwise 2-D convolution (``conv2d`` with ``groups = C``), NCHW or NHWC, float16,
    bfloat16 (fp32 accumulation), float32 or float64.

    ``w`` has shape ``(M·C, 1, R, S)`` (NHWC: ``(M·C, R, S, 1)``): M filters per input channel
    (channel multiplier), output channel k filtering input channel k // M, as in PyTorch.
    ``y = activation(conv + bias + residual)`` with the epilogue fused. ``variant`` ("auto",
    "specialized", "generic", "direct") forces a kernel, for tests and benchmarks.
    """
    C = _depthwise_args(x, w, variant, layout)
    return _FRONT({"x": x, "w": w, "bias": bias, "residual": residual, "out": out},
                  (stride, padding, dilation, C, "depthwise", activation, None, layout, None), {"variant": variant})


plan_depthwise_conv2d = plan_of(depthwise_conv2d)

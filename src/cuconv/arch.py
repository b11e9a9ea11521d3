"""Per-architecture limits and peak rates: the one data table behind occupancy, launch checks
and peaks.

Sources: NVIDIA CUDA C++ Programming Guide, "Compute Capabilities" appendix, table
"Technical Specifications per Compute Capability" (the per-row comments below say which
entries come from it), and the CUDA Occupancy Calculator's allocation rules (register
allocation per warp in units of 256 registers; shared memory allocated in units of
``smem_granularity`` with ``smem_reserved_per_block`` bytes reserved by the system per block on
sm_80+). FP32 lanes per SM from the architecture whitepapers (Turing, Ampere GA100/GA10x,
Ada, Hopper, Blackwell).
"""
from __future__ import annotations

import math

# Each row: threads, warps and blocks per SM, registers per SM and per thread, shared memory per SM
# ("Maximum amount of shared memory per SM") and per block with opt-in ("Maximum amount of shared
# memory per thread block"), all from the Programming Guide's "Technical Specifications per Compute
# Capability" table; reg_alloc_unit, smem_granularity and smem_reserved_per_block from the Occupancy
# Calculator (the Guide's table gives 1 KB "shared memory reserved by CUDA driver per thread block"
# for 8.x and later). fp32 lanes: the whitepapers.
ARCH_LIMITS = {
    # 7.5 (Turing): 1024 threads / 32 warps / 16 blocks per SM; 64 KB shared per SM, 64 KB per block
    # with opt-in. Verified against the Guide's table.
    "sm_75":  dict(max_threads_per_sm=1024, max_warps_per_sm=32, max_blocks_per_sm=16,
                   regs_per_sm=65536, max_regs_per_thread=255, reg_alloc_unit=256,
                   smem_per_sm=65536, max_smem_per_block=65536, smem_granularity=256,
                   smem_reserved_per_block=0, fp32_lanes_per_sm=64, name="Turing"),
    # 8.0 (A100): 2048 / 64 / 32; 164 KB shared per SM, 163 KB per block. Verified.
    "sm_80":  dict(max_threads_per_sm=2048, max_warps_per_sm=64, max_blocks_per_sm=32,
                   regs_per_sm=65536, max_regs_per_thread=255, reg_alloc_unit=256,
                   smem_per_sm=167936, max_smem_per_block=166912, smem_granularity=128,
                   smem_reserved_per_block=1024, fp32_lanes_per_sm=64, name="Ampere (A100)"),
    # 8.6 (GA10x): 1536 / 48 / 16; 100 KB shared per SM, 99 KB per block. Verified.
    "sm_86":  dict(max_threads_per_sm=1536, max_warps_per_sm=48, max_blocks_per_sm=16,
                   regs_per_sm=65536, max_regs_per_thread=255, reg_alloc_unit=256,
                   smem_per_sm=102400, max_smem_per_block=101376, smem_granularity=128,
                   smem_reserved_per_block=1024, fp32_lanes_per_sm=128, name="Ampere (GA10x)"),
    # 8.9 (Ada): 1536 / 48 / 24; 100 KB shared per SM, 99 KB per block. Verified.
    "sm_89":  dict(max_threads_per_sm=1536, max_warps_per_sm=48, max_blocks_per_sm=24,
                   regs_per_sm=65536, max_regs_per_thread=255, reg_alloc_unit=256,
                   smem_per_sm=102400, max_smem_per_block=101376, smem_granularity=128,
                   smem_reserved_per_block=1024, fp32_lanes_per_sm=128, name="Ada"),
    # 9.0 (H100/H200): 2048 / 64 / 32; 228 KB shared per SM, 227 KB per block. Verified.
    "sm_90":  dict(max_threads_per_sm=2048, max_warps_per_sm=64, max_blocks_per_sm=32,
                   regs_per_sm=65536, max_regs_per_thread=255, reg_alloc_unit=256,
                   smem_per_sm=233472, max_smem_per_block=232448, smem_granularity=128,
                   smem_reserved_per_block=1024, fp32_lanes_per_sm=128, name="Hopper"),
    # 10.0 (B200): 2048 / 64 / 32; 228 KB shared per SM, 227 KB per block, as 9.0. From the Guide's
    # table as of CUDA 12.8; the allocation granularity (128 B) is the 8.x/9.0 value, not verified
    # for 10.0 (the Occupancy Calculator spreadsheet predates Blackwell).
    "sm_100": dict(max_threads_per_sm=2048, max_warps_per_sm=64, max_blocks_per_sm=32,
                   regs_per_sm=65536, max_regs_per_thread=255, reg_alloc_unit=256,
                   smem_per_sm=233472, max_smem_per_block=232448, smem_granularity=128,
                   smem_reserved_per_block=1024, fp32_lanes_per_sm=128, name="Blackwell (B200)"),
    # 12.0 (GeForce RTX 50, RTX PRO Blackwell): 1536 / 48 / 32; 128 KB of unified L1/shared memory
    # per SM of which at most 100 KB is shared memory, 99 KB (101376 B) per block with opt-in
    # (the Guide's table; this row said 128 KB per SM before issue 23). The 32 blocks per SM and the
    # 128 B granularity are from the same table / the 8.x rule and could not be checked against a
    # device.
    "sm_120": dict(max_threads_per_sm=1536, max_warps_per_sm=48, max_blocks_per_sm=32,
                   regs_per_sm=65536, max_regs_per_thread=255, reg_alloc_unit=256,
                   smem_per_sm=102400, max_smem_per_block=101376, smem_granularity=128,
                   smem_reserved_per_block=1024, fp32_lanes_per_sm=128, name="Blackwell (GeForce)"),
}

# Without opt-in (cudaFuncAttributeMaxDynamicSharedMemorySize) a block gets at most 48 KiB.
DEFAULT_MAX_SMEM_PER_BLOCK = 49152

# The launch limits every compute capability 7.5 ... 12.0 shares (the Guide's table: "Maximum
# number of threads per block" 1024, "Maximum x-/y-/z-dimension of a block" 1024/1024/64,
# "Maximum x-/y-/z-dimension of a grid" 2**31-1/65535/65535, "Maximum number of 32-bit registers
# per thread block" 64 K; static shared memory at most 48 KB, more only dynamically with opt-in).
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK_DIMS = (1024, 1024, 64)
MAX_GRID_DIMS = (2 ** 31 - 1, 65535, 65535)
MAX_REGS_PER_BLOCK = 65536
MAX_STATIC_SMEM_PER_BLOCK = 49152
# The compute capabilities cuconv builds kernels for (the compile matrix: sm_75 ... sm_120).
MIN_CC = 75

# --------------------------------------------------------------------------- issue model
# The instruction-issue model behind cuconv.analysis's issue-bound ceiling.
#
# * Every SM from Volta on is split into 4 sub-partitions (SMSPs, "processing blocks"),
#   each with one warp scheduler that issues at most one warp instruction per clock
#   (NVIDIA Volta/Turing/Ampere/Ada/Hopper/Blackwell architecture whitepapers, "SM
#   architecture" sections; Nsight Compute's "issue slot" metrics use the same model).
# * fp32 lanes per SM (the table above): 64 on sm_75/sm_80 (16 FP32 lanes per SMSP, so a
#   warp FFMA occupies the pipe 2 clocks and at most every other issue slot can be an FFMA),
#   128 on sm_86 and later (32 per SMSP: one warp FFMA per clock). CUDA C++ Programming
#   Guide, "Arithmetic Instructions" throughput table, 32-bit floating-point add/multiply/
#   multiply-add.
# * fp16_results_per_sm: non-tensor fp16 results per clock per SM (an HFMA2 gives 2 per
#   lane); fp64_results_per_sm: DFMA/DMUL/DADD per clock per SM. Derived from the
#   whitepapers' peak non-tensor TFLOPS ÷ (SMs × boost clock × 2): A100 78/9.7 TFLOPS,
#   H100 SXM 133.8/33.5, GA102/AD102/GB202 GeForce fp16 = fp32 rate, Turing fp16 = 2× fp32.
# * tensor_fp16_fma_per_sm: dense fp16/bf16 tensor-core multiply-adds per clock per SM with
#   fp32 accumulation (whitepapers: TU102 8 tensor cores × 64, A100 4 × 256, GA102/AD102/
#   GB202 4 × 128, H100 2048 "2× A100 clock for clock"). GeForce boards run fp32
#   accumulation at half this rate; on Hopper only warpgroup MMA (HGMMA) reaches it, not
#   mma.sync (HMMA). None where no published figure was found (sm_100). tf32 runs at half
#   and int8 at twice the fp16 rate on every arch here that has them (A100 156/312/624,
#   H100 SXM 495/989/1979 dense TFLOPS/TOPS; Turing has no tf32).
_ISSUE_MODEL = {
    "sm_75": dict(fp16_results_per_sm=128, fp64_results_per_sm=2, tensor_fp16_fma_per_sm=512),
    "sm_80": dict(fp16_results_per_sm=256, fp64_results_per_sm=32, tensor_fp16_fma_per_sm=1024),
    "sm_86": dict(fp16_results_per_sm=128, fp64_results_per_sm=2, tensor_fp16_fma_per_sm=512),
    "sm_89": dict(fp16_results_per_sm=128, fp64_results_per_sm=2, tensor_fp16_fma_per_sm=512),
    "sm_90": dict(fp16_results_per_sm=256, fp64_results_per_sm=64, tensor_fp16_fma_per_sm=2048),
    "sm_100": dict(fp16_results_per_sm=None, fp64_results_per_sm=None, tensor_fp16_fma_per_sm=None),
    "sm_120": dict(fp16_results_per_sm=128, fp64_results_per_sm=2, tensor_fp16_fma_per_sm=512),
}
for _arch, _fields in _ISSUE_MODEL.items():
    ARCH_LIMITS[_arch].update(sub_partitions=4, issue_per_sub_partition_per_clock=1, **_fields)


def issue_model(arch: str) -> dict:
    """Issue slots and per-pipe peak rates of one sub-partition per clock.

    ``issue`` is warp instructions per clock; each pipe's peak is lane results (fp32,
    fp16, fp64) or multiply-adds (tensor_*) per clock, None where unknown.
    """
    lim = arch_limits(arch)
    parts = lim["sub_partitions"]

    def per_part(v, scale=1.0):
        return None if v is None else v * scale / parts

    tensor = lim["tensor_fp16_fma_per_sm"]
    return dict(sub_partitions=parts, issue=lim["issue_per_sub_partition_per_clock"],
                fp32=per_part(lim["fp32_lanes_per_sm"]), fp16=per_part(lim["fp16_results_per_sm"]),
                fp64=per_part(lim["fp64_results_per_sm"]), tensor_fp16=per_part(tensor),
                tensor_tf32=None if normalize_arch(arch) == "sm_75" else per_part(tensor, 0.5),
                tensor_int8=per_part(tensor, 2.0))


def arch_limits(arch: str) -> dict:
    arch = normalize_arch(arch)
    if arch not in ARCH_LIMITS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCH_LIMITS)}")
    return ARCH_LIMITS[arch]


def normalize_arch(arch) -> str:
    """'sm_90', '90', 90, (9, 0), 'sm_90a' -> 'sm_90' (the family the table is keyed on)."""
    if isinstance(arch, tuple):
        arch = f"{arch[0]}{arch[1]}"
    s = str(arch).lower().removeprefix("sm_").removeprefix("compute_").rstrip("af")
    return f"sm_{s}"


def table_arch(cc) -> str:
    """The row of ARCH_LIMITS that describes a device of compute capability ``cc`` (75, 87, 90,
    121, "sm_90a" ...): its own row, else the newest row of the same major version not newer than
    it (8.7 -> sm_86, 10.3 -> sm_100, 12.1 -> sm_120), else, for a device newer than the table,
    its newest row. ValueError below sm_75."""
    arch = normalize_arch(cc)
    if arch in ARCH_LIMITS:
        return arch
    num = int(arch[3:])
    newest = max(ARCH_LIMITS, key=lambda a: int(a[3:]))
    rows = [a for a in ARCH_LIMITS if int(a[3:]) // 10 == num // 10 and int(a[3:]) <= num]
    if num < MIN_CC or (not rows and num < int(newest[3:])):
        raise ValueError(f"no launch limits for {arch}: cuconv knows {', '.join(ARCH_LIMITS)}")
    return max(rows, key=lambda a: int(a[3:])) if rows else newest


def launch_violations(arch, grid, block, dynamic_smem: int = 0, *, opt_in_smem: int = 0,
                      static_smem: int = 0, registers: int | None = None) -> list[str]:
    """Why a kernel launch would fail on a device of ``arch`` (empty when it launches), checked as
    the CUDA driver checks it: block and grid dimensions, threads per block, shared memory and
    registers per block.

    ``dynamic_smem``: the launch's dynamic shared memory; ``opt_in_smem``: the function's
    cudaFuncAttributeMaxDynamicSharedMemorySize when the launcher raised it (cuconv's GPU backend
    sets it to the entry's ``dynamic_smem`` when that exceeds 48 KiB; 0: not raised, so the
    default 48 KiB minus the static shared memory applies); ``static_smem`` and ``registers``
    (per thread) from the compiled function when known (the compile matrix), else unchecked."""
    lim = arch_limits(table_arch(arch))
    out = []
    grid, block = tuple(int(v) for v in grid), tuple(int(v) for v in block)
    if len(block) != 3 or len(grid) != 3:
        return [f"grid {grid} and block {block} must have 3 dimensions"]
    if min(block) < 1 or min(grid) < 1:
        out.append(f"grid {grid} / block {block} has a zero dimension (cudaErrorInvalidConfiguration)")
    for what, dims, top in (("block", block, MAX_BLOCK_DIMS), ("grid", grid, MAX_GRID_DIMS)):
        for axis, v, m in zip("xyz", dims, top):
            if v > m:
                out.append(f"{what}.{axis} = {v} exceeds {m}")
    threads = block[0] * block[1] * block[2]
    if threads > MAX_THREADS_PER_BLOCK:
        out.append(f"{threads} threads per block exceed {MAX_THREADS_PER_BLOCK}")
    if static_smem > MAX_STATIC_SMEM_PER_BLOCK:
        out.append(f"{static_smem} bytes of static shared memory exceed {MAX_STATIC_SMEM_PER_BLOCK}")
    allowed = max(DEFAULT_MAX_SMEM_PER_BLOCK - static_smem, int(opt_in_smem))
    if int(opt_in_smem) + static_smem > lim["max_smem_per_block"]:
        out.append(f"opting in to {opt_in_smem} bytes of dynamic shared memory (+{static_smem} static) exceeds "
                   f"the {lim['max_smem_per_block']} bytes a block may have on {arch}")
    if dynamic_smem > allowed:
        how = (f"the function opted in to {opt_in_smem}" if opt_in_smem else
               f"the default limit is {DEFAULT_MAX_SMEM_PER_BLOCK} bytes less {static_smem} static, no opt-in")
        out.append(f"{dynamic_smem} bytes of dynamic shared memory: {how}")
    if static_smem + dynamic_smem > lim["max_smem_per_block"]:
        out.append(f"{static_smem} + {dynamic_smem} bytes of shared memory exceed {lim['max_smem_per_block']} "
                   f"per block on {arch}")
    if registers is not None:
        if registers > lim["max_regs_per_thread"]:
            out.append(f"{registers} registers per thread exceed {lim['max_regs_per_thread']}")
        unit = lim["reg_alloc_unit"]
        per_block = math.ceil(registers * 32 / unit) * unit * math.ceil(threads / 32)
        if per_block > MAX_REGS_PER_BLOCK:
            out.append(f"{registers} registers x {threads} threads ({per_block} allocated) exceed "
                       f"{MAX_REGS_PER_BLOCK} per block")
    return out


def occupancy(arch: str, block_threads: int, registers: int, smem_per_block: int) -> dict:
    """Theoretical occupancy: resident blocks/warps per SM and the limiting resource."""
    lim = arch_limits(arch)
    if block_threads <= 0 or block_threads > 1024:
        raise ValueError(f"block_threads must be in 1..1024, got {block_threads}")
    warps_per_block = math.ceil(block_threads / 32)
    by_warps = lim["max_warps_per_sm"] // warps_per_block
    by_blocks = lim["max_blocks_per_sm"]
    regs_per_warp = math.ceil(max(registers, 1) * 32 / lim["reg_alloc_unit"]) * lim["reg_alloc_unit"]
    by_regs = (lim["regs_per_sm"] // regs_per_warp) // warps_per_block if registers <= lim["max_regs_per_thread"] else 0
    if smem_per_block > 0:
        need = smem_per_block + lim["smem_reserved_per_block"]
        need = math.ceil(need / lim["smem_granularity"]) * lim["smem_granularity"]
        by_smem = lim["smem_per_sm"] // need if smem_per_block <= lim["max_smem_per_block"] else 0
    else:
        by_smem = by_blocks
    limits = {"warps": by_warps, "blocks": by_blocks, "registers": by_regs, "shared_memory": by_smem}
    blocks = min(limits.values())
    limiter = min(limits, key=lambda k: (limits[k], k != "registers"))
    warps = blocks * warps_per_block
    return dict(blocks_per_sm=blocks, warps_per_sm=warps,
                occupancy=warps / lim["max_warps_per_sm"], limited_by=limiter)


def peak_fp32_flops(arch: str, sm_count: int, clock_hz: float) -> float:
    """fp32 FLOP/s = SMs × FP32 lanes per SM × 2 (an FMA is two FLOPs) × clock."""
    return sm_count * arch_limits(arch)["fp32_lanes_per_sm"] * 2 * clock_hz


def peak_dram_bandwidth(mem_clock_hz: float, bus_width_bits: int) -> float:
    """Bytes/s = 2 (double data rate) × memory clock × bus width / 8."""
    return 2 * mem_clock_hz * bus_width_bits / 8

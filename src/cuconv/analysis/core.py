"""Analysis of one compiled kernel: resources, occupancy, loops, main-loop mix and ceilings.

The issue-bound ceiling of a loop is the fraction of the SM's peak arithmetic rate it can
reach if instruction issue were the only limit. Every warp on a sub-partition runs the same
loop, so one iteration of one warp needs at least ``N`` issue slots (N = its warp
instructions; one issues per clock per sub-partition, cuconv.arch.issue_model). Its math
instructions deliver F lane-FLOPs; the sub-partition's peak is P lane-FLOPs per clock. So

    ceiling = min(1, F / (P × N))          issue ratio = F / (P × N), uncapped


For an fp32 loop of pure FFMA that is min(1, 2·FFMA/N) on sm_75/sm_80 (16 FP32 lanes per
sub-partition: a warp FFMA holds the pipe 2 clocks, so half the issue slots are free for
loads and address math at no cost) and FFMA/N — the math share — on sm_86 and later (32
lanes: one warp FFMA per clock is the peak, so every non-math instruction costs a slot).
Not modelled: latencies, dependency stalls, bank conflicts, memory bandwidth, caches, and
pipes other than the math one saturating first (e.g. the shared-memory/MIO queue).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

from ..arch import arch_limits, issue_model, occupancy
from .mix import CLASSES, Mix
from .sass import Loop, SassFunction, best_loop_path, function_names, parse_function, split_sections
from .tools import disassemble, tool_versions

DEFAULT_BLOCK_THREADS = 256


@dataclass
class LoopAnalysis:
    start: int                  # byte offset of the first instruction of the body
    end: int                    # byte offset of the last one
    depth: int
    innermost: bool
    natural: bool
    instructions: int           # warp instructions (issue slots) of one iteration, full-work path
    mix: Mix                    # every instruction of the body, all paths (classes, widths)
    path_mix: Mix               # the full-work path through the body: what the figures use
    shortest_path_instructions: int
    longest_path_instructions: int
    internal_branches: int      # conditional branches inside the body besides the back edge
    math_share: float
    fma_per_shared_byte: float | None
    ceiling: float | None       # issue-bound fraction of peak of the dominant math pipe
    ceiling_pipe: str | None
    ceilings: dict              # pipe -> ceiling (None where the arch's peak is unknown)
    issue_ratio: float | None = None             # the ceiling before its min(1, ·) cap
    ceiling_shortest_path: float | None = None   # the same on the fewest-instruction path
    ceiling_longest_path: float | None = None    # ... and on the most-instruction path
    shortest_mix: Mix | None = None
    longest_mix: Mix | None = None
    in_call: bool = False       # in a subroutine the kernel CALLs, not in its own body

    @property
    def body_instructions(self) -> int:
        return self.mix.instructions

    def to_dict(self) -> dict:
        """Per-iteration counts are those of the full-work path; ``body_*`` cover every path."""
        m, b = self.path_mix, self.mix
        return dict(
            start=f"0x{self.start:04x}", end=f"0x{self.end:04x}", depth=self.depth,
            innermost=self.innermost, natural=self.natural, instructions=self.instructions,
            shortest_path_instructions=self.shortest_path_instructions,
            longest_path_instructions=self.longest_path_instructions,
            body_instructions=self.body_instructions, internal_branches=self.internal_branches,
            classes={c: m.by_class[c] for c in CLASSES if m.by_class[c]},
            opcodes=dict(m.by_opcode.most_common()),
            math_instructions=m.math, predicated=m.predicated,
            shared_load_bits=_widths(m.shared_load_bits), shared_store_bits=_widths(m.shared_store_bits),
            global_load_bits=_widths(m.global_load_bits), global_store_bits=_widths(m.global_store_bits),
            shared_load_bytes_per_thread=m.shared_load_bytes, fma_per_thread=m.fma_per_thread,
            tensor_macs_per_warp=dict(m.tensor_macs),
            body_classes={c: b.by_class[c] for c in CLASSES if b.by_class[c]},
            body_shared_load_bits=_widths(b.shared_load_bits), body_global_load_bits=_widths(b.global_load_bits),
            body_global_store_bits=_widths(b.global_store_bits),
            math_share=_r(self.math_share), fma_per_shared_byte=_r(self.fma_per_shared_byte),
            issue_ceiling=_r(self.ceiling), issue_ratio=_r(self.issue_ratio), ceiling_pipe=self.ceiling_pipe,
            ceilings={k: _r(v) for k, v in self.ceilings.items()},
            issue_ceiling_shortest_path=_r(self.ceiling_shortest_path),
            issue_ceiling_longest_path=_r(self.ceiling_longest_path),
        )


@dataclass
class Analysis:
    kernel: str                 # the config label (registered kernels) or the name asked for
    arch: str
    function: str               # the mangled name in the cubin
    registers: int
    spill_store_bytes: int
    spill_load_bytes: int
    stack_frame_bytes: int
    static_smem_bytes: int
    dynamic_smem_bytes: int
    block_threads: int
    block_threads_source: str   # "registry", "argument", "__launch_bounds__" or "assumed"
    occupancy: dict
    kernel_mix: Mix
    loops: list[LoopAnalysis]
    main_loop: LoopAnalysis | None
    file: str | None = None
    expression: str | None = None
    main: bool = False
    min_blocks_per_sm: int | None = None
    notes: list[str] = field(default_factory=list)

    # -- headline figures (None without a loop)
    @property
    def math_share(self):
        return self.main_loop.math_share if self.main_loop else None

    @property
    def fma_per_shared_byte(self):
        return self.main_loop.fma_per_shared_byte if self.main_loop else None

    @property
    def ceiling(self):
        return self.main_loop.ceiling if self.main_loop else None

    @property
    def issue_ratio(self):
        return self.main_loop.issue_ratio if self.main_loop else None

    @property
    def spill_bytes(self) -> int:
        return self.spill_store_bytes + self.spill_load_bytes

    @property
    def local_memory_instructions(self) -> int:
        """LDL/STL in the SASS: spills, or arrays the compiler could not keep in registers."""
        return self.kernel_mix.by_class["local"]

    @property
    def widest_global_bits(self) -> int:
        return max([*self.kernel_mix.global_load_bits, *self.kernel_mix.global_store_bits], default=0)

    @property
    def widest_shared_bits(self) -> int:
        return max([*self.kernel_mix.shared_load_bits, *self.kernel_mix.shared_store_bits], default=0)

    @property
    def features(self) -> dict:
        """Hopper's data-movement features, from the SASS: ``tma`` the TMA / bulk-copy
        instructions in the kernel (UTMALDG, UTMASTG, UTMAPF, UBLKCP); ``setmaxnreg`` whether it
        moves registers between warpgroups (USETMAXREG); ``warp_specialized`` whether the main
        loop issues no loads of its own (no async copy, no global load) while another loop, one
        without math, issues async copies: a producer feeding consumers. (Loops are compared by
        content, not address range: ptxas places a loop's rarely taken blocks, such as an
        mbarrier wait's retry, at the end of the function.)"""
        ops = self.kernel_mix.by_opcode
        tma = sum(ops[o] for o in ("UTMALDG", "UTMASTG", "UTMAPF", "UBLKCP"))
        lp = self.main_loop
        ws = bool(lp is not None and not lp.mix.by_class["async_copy"] and not lp.mix.by_class["global_load"]
                  and any(o.mix.by_class["async_copy"] and not o.mix.math for o in self.loops))
        return dict(tma=tma, warp_specialized=ws, setmaxnreg=ops["USETMAXREG"] > 0)

    @property
    def features_text(self) -> str:
        """"TMA+WS+setmaxnreg" (the features present), "-" when none."""
        f = self.features
        parts = [n for n, on in (("TMA", f["tma"]), ("WS", f["warp_specialized"]), ("setmaxnreg", f["setmaxnreg"]))
                 if on]
        return "+".join(parts) or "-"

    def design_problems(self) -> list[str]:
        """What breaks the design's promises: spills, local memory in the main loop, and fewer
        resident blocks than ``min_blocks_per_sm`` ([] when none; the CI check for main kernels)."""
        where = f"{self.kernel} on {self.arch}"
        problems = []
        if self.spill_bytes:
            problems.append(f"{where}: spills ({self.spill_store_bytes} B stored, {self.spill_load_bytes} B "
                            f"loaded per thread; {self.registers} registers)")
        if self.main_loop is not None and self.main_loop.mix.by_class["local"]:
            problems.append(f"{where}: {self.main_loop.mix.by_class['local']} local-memory instructions "
                            "(LDL/STL) in the main loop")
        if self.min_blocks_per_sm and self.occupancy["blocks_per_sm"] < self.min_blocks_per_sm:
            problems.append(f"{where}: {self.occupancy['blocks_per_sm']} blocks/SM fit at {self.block_threads} "
                            f"threads ({self.registers} registers, "
                            f"{self.static_smem_bytes + self.dynamic_smem_bytes} B shared; limited by "
                            f"{self.occupancy['limited_by']}), the design states {self.min_blocks_per_sm}")
        return problems

    def to_dict(self) -> dict:
        km = self.kernel_mix
        return dict(
            kernel=self.kernel, arch=self.arch, file=self.file, expression=self.expression,
            function=self.function, main=self.main, registers=self.registers,
            spill_store_bytes=self.spill_store_bytes, spill_load_bytes=self.spill_load_bytes,
            stack_frame_bytes=self.stack_frame_bytes, static_smem_bytes=self.static_smem_bytes,
            dynamic_smem_bytes=self.dynamic_smem_bytes, block_threads=self.block_threads,
            block_threads_source=self.block_threads_source, min_blocks_per_sm=self.min_blocks_per_sm,
            blocks_per_sm=self.occupancy["blocks_per_sm"], warps_per_sm=self.occupancy["warps_per_sm"],
            occupancy=_r(self.occupancy["occupancy"]), occupancy_limited_by=self.occupancy["limited_by"],
            kernel_instructions=km.instructions, local_memory_instructions=self.local_memory_instructions,
            kernel_classes={c: km.by_class[c] for c in CLASSES if km.by_class[c]},
            global_load_bits=_widths(km.global_load_bits), global_store_bits=_widths(km.global_store_bits),
            shared_load_bits=_widths(km.shared_load_bits), shared_store_bits=_widths(km.shared_store_bits),
            widest_global_bits=self.widest_global_bits, widest_shared_bits=self.widest_shared_bits,
            math_share=_r(self.math_share), fma_per_shared_byte=_r(self.fma_per_shared_byte),
            issue_ceiling=_r(self.ceiling), issue_ratio=_r(self.issue_ratio),
            ceiling_pipe=self.main_loop.ceiling_pipe if self.main_loop else None,
            main_loop=self.main_loop.to_dict() if self.main_loop else None,
            loops=[lp.to_dict() for lp in self.loops],
            issue_model=issue_model(self.arch), notes=list(self.notes),
            design_problems=self.design_problems(), toolchain=tool_versions(), **self.features,
        )


def _r(v, digits=4):
    return None if v is None else round(float(v), digits)


def _widths(counter) -> dict:
    return {str(bits): n for bits, n in sorted(counter.items())}


# --------------------------------------------------------------------------- the model
def issue_ratios(mix: Mix, arch: str) -> tuple[dict, dict]:
    """(pipe -> uncapped issue ratio, pipe -> clocks the pipe is busy per iteration): the
    ratio is math-pipe clocks per warp over issue slots per iteration, the ceiling before its
    min(1, ·) cap (None where the arch's peak is unknown). Above 1 the loop has slack for
    latency hiding; below 1 it cannot keep the pipe fed even in theory."""
    model = issue_model(arch)
    slots = mix.instructions / model["issue"]
    ratios, busy = {}, {}
    for pipe, flops in mix.flops.items():
        if not flops:
            continue
        peak = model.get(pipe)
        if peak is None or slots == 0:
            ratios[pipe] = None
            continue
        busy[pipe] = flops / (2 * peak)                    # clocks the pipe needs per iteration
        ratios[pipe] = busy[pipe] / slots
    return ratios, busy


def loop_ceilings(mix: Mix, arch: str) -> tuple[dict, str | None, float | None]:
    """Issue-bound ceilings per math pipe, the dominant pipe and its ceiling (module docstring)."""
    ratios, busy = issue_ratios(mix, arch)
    ceilings = {p: None if r is None else min(1.0, r) for p, r in ratios.items()}
    if mix.tensor_unknown_shape:
        ceilings["tensor_unknown_shape"] = None            # a tensor opcode without a known shape
    unknown = [p for p, c in ceilings.items() if c is None]
    if unknown or not busy:
        # Math on a pipe without a rate in the table: no honest headline figure.
        return ceilings, (unknown[0] if unknown else None), None
    pipe = max(busy, key=busy.get)
    return ceilings, pipe, ceilings[pipe]


def _moved_bytes(mix: Mix) -> int:
    """Bytes each thread moves through global and shared memory."""
    return sum(bits // 8 * n for counter in (mix.global_load_bits, mix.global_store_bits,
                                             mix.shared_load_bits, mix.shared_store_bits)
               for bits, n in counter.items())


def analyze_loop(fn: SassFunction, loop: Loop, arch: str) -> LoopAnalysis:
    """Counts and figures of one loop.

    When the body branches internally an iteration can take several paths. The figures use
    the *full-work path*: the one with the most math, then the most bytes moved, then the
    fewest instructions (a steady-state iteration does all the work the body can do, on the
    cheapest code for it: e.g. a GEMM's vector-load prefetch rather than its scalar fallback
    or its last tile without prefetch). The shortest and longest paths bound it.
    """
    body = fn.loop_instructions(loop)
    mix = Mix.of(body)
    block_set = set(loop.blocks)
    internal = sum(1 for b in loop.blocks for ins in fn.blocks[b].instructions[-1:]
                   if ins.base in ("BRA", "BRX", "JMP", "JMX") and ins.conditional
                   and b not in loop.latches
                   and all(s in block_set for s in fn.blocks[b].successors))
    typical = longest = shortest = mix
    if internal:
        block_mix = {b: Mix.of(fn.blocks[b].instructions) for b in loop.blocks}
        weights = {
            "typical": lambda b: (block_mix[b].math, _moved_bytes(block_mix[b]), -block_mix[b].instructions),
            "longest": lambda b: (block_mix[b].instructions,),
            "shortest": lambda b: (-block_mix[b].instructions,),
        }
        paths = {k: best_loop_path(fn, loop, w) for k, w in weights.items()}
        if all(p is not None for p in paths.values()):
            typical, longest, shortest = (Mix.of(ins for b in paths[k] for ins in fn.blocks[b].instructions)
                                          for k in ("typical", "longest", "shortest"))
    shared_bytes = typical.shared_load_bytes
    fpb = typical.fma_per_thread / shared_bytes if shared_bytes else None
    ceilings, pipe, ceiling = loop_ceilings(typical, arch)
    ratio = issue_ratios(typical, arch)[0].get(pipe) if ceiling is not None else None
    return LoopAnalysis(
        start=min(fn.blocks[b].start for b in loop.blocks), end=max(fn.blocks[b].end for b in loop.blocks),
        depth=loop.depth, innermost=loop.innermost, natural=loop.natural,
        instructions=typical.instructions, mix=mix, path_mix=typical,
        shortest_path_instructions=shortest.instructions, longest_path_instructions=longest.instructions,
        internal_branches=internal,
        math_share=typical.math / typical.instructions if typical.instructions else 0.0,
        fma_per_shared_byte=fpb, ceiling=ceiling, ceiling_pipe=pipe, ceilings=ceilings, issue_ratio=ratio,
        ceiling_shortest_path=loop_ceilings(shortest, arch)[2],
        ceiling_longest_path=loop_ceilings(longest, arch)[2], shortest_mix=shortest, longest_mix=longest,
        in_call=loop.in_call)


def choose_main_loop(loops: list[LoopAnalysis]) -> LoopAnalysis | None:
    """The loop the kernel spends its time in, statically: one with math if any has math,
    then one in the kernel's own body over one in a subroutine it calls (cuconv's kernels call
    only their cold paths: the data gradient's recompute of a non-finite element, cc_dgrad_sum_call),
    then the deepest (the innermost of a nest repeats most), then the most FLOPs per
    iteration (one HGMMA does the work of thousands of FFMA: an epilogue loop of a few FFMA
    beside a main loop of 4 HGMMA must not win on instruction count), then the most math
    instructions, then the longest body."""
    if not loops:
        return None
    return max(loops, key=lambda lp: (lp.mix.math > 0, not lp.in_call, lp.depth, sum(lp.path_mix.flops.values()),
                                      lp.path_mix.math, lp.instructions, -lp.start))


def analyze_function(fn: SassFunction, arch: str, *, kernel: str, registers: int, spill_store_bytes: int,
                     spill_load_bytes: int, stack_frame_bytes: int, static_smem_bytes: int,
                     dynamic_smem_bytes: int = 0, block_threads: int | None = None,
                     block_threads_source: str | None = None, **extra) -> Analysis:
    arch_limits(arch)            # the tables are per family (sm_90a -> sm_90); the label keeps the target
    notes = []
    if block_threads is None:
        if fn.max_threads:
            block_threads, block_threads_source = fn.max_threads, "__launch_bounds__"
        else:
            block_threads, block_threads_source = DEFAULT_BLOCK_THREADS, "assumed"
            notes.append(f"block size unknown: occupancy assumes {DEFAULT_BLOCK_THREADS} threads "
                         "(pass block_threads / --threads)")
    loops = [analyze_loop(fn, lp, arch) for lp in fn.loops]
    main_loop = choose_main_loop(loops)
    if fn.unresolved_branches:
        notes.append(f"{fn.unresolved_branches} indirect branch(es) with unknown targets: loops through "
                     "them are not found")
    if main_loop is not None and main_loop.internal_branches:
        notes.append(f"the main loop branches internally ({main_loop.internal_branches} conditional "
                     f"branch(es)): one iteration issues {main_loop.shortest_path_instructions} to "
                     f"{main_loop.longest_path_instructions} instructions ({main_loop.body_instructions} in "
                     f"the body); the figures use the full-work path ({main_loop.instructions}: most math, "
                     "most bytes moved, fewest instructions)")
    if main_loop is not None and main_loop.mix.tensor_unknown_shape:
        notes.append("tensor instructions of unknown shape: no tensor ceiling")
    occ = occupancy(arch, block_threads, registers, static_smem_bytes + dynamic_smem_bytes)
    return Analysis(kernel=kernel, arch=arch, function=fn.name, registers=registers,
                    spill_store_bytes=spill_store_bytes, spill_load_bytes=spill_load_bytes,
                    stack_frame_bytes=stack_frame_bytes, static_smem_bytes=static_smem_bytes,
                    dynamic_smem_bytes=dynamic_smem_bytes, block_threads=block_threads,
                    block_threads_source=block_threads_source or "argument", occupancy=occ,
                    kernel_mix=Mix.of(fn.instructions), loops=loops, main_loop=main_loop,
                    notes=notes, **extra)


# --------------------------------------------------------------------------- cubins
@functools.lru_cache(maxsize=16)
def _sections(cubin: bytes) -> dict:
    return split_sections(disassemble(cubin))


@functools.lru_cache(maxsize=512)
def _function(cubin: bytes, name: str) -> SassFunction:
    return parse_function(name, _sections(cubin))


def sass_function(cubin: bytes, name: str) -> SassFunction:
    """The parsed function ``name`` (mangled) of ``cubin`` (disassembled once per cubin)."""
    try:
        return _function(cubin, name)
    except KeyError:
        names = function_names(_sections(cubin))
        raise KeyError(f"no function {name!r} in the cubin; it has: {', '.join(sorted(names)) or 'none'}") from None


__all__ = ["Analysis", "LoopAnalysis", "analyze_function", "analyze_loop", "choose_main_loop",
           "issue_ratios", "loop_ceilings", "sass_function"]

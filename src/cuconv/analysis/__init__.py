"""Static performance analysis of compiled kernels from their SASS; no GPU needed.

NVRTC compiles a kernel to a cubin for the chosen ``sm_XX``; ``nvdisasm`` disassembles it;
cuconv finds the loops (natural loops of the control-flow graph), picks the main loop,
counts its instruction classes per iteration and derives:

* **math share** — math instructions (FFMA/FMUL/FADD, HFMA2, DFMA, HMMA...) / all issued;
* **FMAs per shared byte** — multiply-adds per byte each thread loads from shared memory;
* **issue-bound ceiling** — the fraction of the SM's peak arithmetic rate the loop can reach
  if instruction issue were the only limit (model and sources: cuconv.arch.issue_model and
  cuconv.analysis.core);

plus registers, spills, shared memory and theoretical occupancy from cuconv.arch's limits.

    from cuconv import analysis
    a = analysis.analyze_source(src, "my_kernel", "sm_90", block_threads=256)
    print(analysis.summary(a)); a.to_dict()
    print(analysis.sass(src, "sm_90", kernel="my_kernel"))
    print(analysis.format_table([analysis.analyze_entry(e, "sm_80") for e in registered_kernels()]))
"""
from __future__ import annotations

import functools
from pathlib import Path

from ..arch import issue_model
from ..compile import (
    ALL_ARCHS,
    KernelEntry,
    NVRTCError,
    compile_entry,
    compile_target,
    find_kernel,
    kernel_dir,
    nvrtc_compile,
    parse_ptxas_log,
)
from .core import Analysis, LoopAnalysis, analyze_function, issue_ratios, loop_ceilings, sass_function
from .mix import CLASSES, MATH_CLASSES, Mix, access_bits, classify
from .sass import Instruction, SassFunction, parse_listing
from .tools import ToolError, ToolNotFoundError, complete_elf, disassemble, find_tool, tool_versions

__all__ = ["Analysis", "LoopAnalysis", "Mix", "Instruction", "SassFunction", "CLASSES", "MATH_CLASSES",
           "ToolError", "ToolNotFoundError", "analyze_entry", "analyze_source", "analyze_file", "sass", "bench_columns",
           "format_table", "table_rows", "aligned", "markdown", "TABLE_HEAD", "TABLE_LEGEND", "summary", "classify",
           "access_bits", "parse_listing", "disassemble", "find_tool", "complete_elf", "issue_ratios", "loop_ceilings",
           "issue_model", "tool_versions"]


# --------------------------------------------------------------------------- compiling
@functools.lru_cache(maxsize=128)
def _compile_source(source: str, kernel: str, arch: str, options: tuple, name: str):
    cubin, log, lowered = nvrtc_compile(source, [kernel], arch, options, name)
    mangled = lowered[kernel]
    info = parse_ptxas_log(log).get(mangled)
    if info is None:
        raise NVRTCError(f"ptxas printed no resource usage for {kernel} ({mangled}) on {arch}:\n{log}")
    return cubin, mangled, info


def _check_arch(arch) -> str:
    """The compile target: sm_90a keeps its suffix (its kernels exist only there); the per-arch
    tables are looked up through normalize_arch (sm_90a -> sm_90)."""
    a = compile_target(arch)
    if a not in ALL_ARCHS:
        raise ValueError(f"unknown arch {arch!r}: cuconv analyses {', '.join(ALL_ARCHS)}")
    return a


def analyze_entry(entry, arch) -> Analysis:
    """Analysis of a registered ``KernelEntry`` (cuconv.compile) on ``arch``."""
    arch = _check_arch(arch)
    if arch not in entry.archs:
        raise ValueError(f"{entry.label} is not built for {arch} (its archs: {', '.join(entry.archs)})")
    res = compile_entry(entry, arch)
    fn = sass_function(res.cubin, res.lowered_name)
    return analyze_function(
        fn, arch, kernel=entry.label, registers=res.registers, spill_store_bytes=res.spill_store_bytes,
        spill_load_bytes=res.spill_load_bytes, stack_frame_bytes=res.stack_frame_bytes,
        static_smem_bytes=res.static_smem_bytes, dynamic_smem_bytes=entry.dynamic_smem,
        block_threads=entry.block_threads, block_threads_source="registry", file=entry.file,
        expression=entry.expression, main=entry.main, min_blocks_per_sm=entry.min_blocks(arch))


def analyze_source(source: str, kernel: str, arch, options=(), *, block_threads: int | None = None,
                   dynamic_smem: int = 0, name: str = "kernel.cu") -> Analysis:
    """Analysis of ``kernel`` in CUDA C++ ``source`` on ``arch`` (NVRTC; no GPU needed).

    ``kernel`` is an ``extern "C"`` name or a name expression (``my_gemm<128, 8>``).
    ``block_threads`` defaults to the kernel's ``__launch_bounds__``, else 256 (noted).
    """
    if not isinstance(source, str) or not source.strip():
        raise TypeError("source must be the CUDA C++ text of the kernel(s)")
    if not isinstance(kernel, str) or not kernel.strip():
        raise TypeError("kernel must name a __global__ function (or a template instantiation)")
    if block_threads is not None and not 1 <= int(block_threads) <= 1024:
        raise ValueError(f"block_threads must be in 1..1024, got {block_threads}")
    if dynamic_smem < 0:
        raise ValueError(f"dynamic_smem must be >= 0, got {dynamic_smem}")
    arch = _check_arch(arch)
    cubin, mangled, info = _compile_source(source, kernel.strip(), arch, tuple(options), name)
    fn = sass_function(cubin, mangled)
    return analyze_function(
        fn, arch, kernel=kernel.strip(), registers=info["registers"], spill_store_bytes=info["spill_store"],
        spill_load_bytes=info["spill_load"], stack_frame_bytes=info["stack"], static_smem_bytes=info["smem"],
        dynamic_smem_bytes=dynamic_smem, block_threads=block_threads,
        block_threads_source="argument" if block_threads is not None else None,
        file=name, expression=kernel.strip())


def file_options(path: Path, options) -> tuple:
    # The file's own directory and cuconv's kernels/ (so `#include "common.cuh"` works).
    return (f"--include-path={path.resolve().parent}", f"--include-path={kernel_dir()}", *options)


def analyze_file(path, kernel: str, arch, options=(), **kwargs) -> Analysis:
    """``analyze_source`` on a .cu file; its directory and cuconv's kernels/ are on the include path."""
    path = Path(path)
    return analyze_source(path.read_text(), kernel, arch, file_options(path, options), name=path.name, **kwargs)


def sass(entry_or_source, arch, kernel: str | None = None, options=()) -> str:
    """SASS of one kernel for ``arch``: a registered ``KernelEntry``, or source text with ``kernel``."""
    arch = _check_arch(arch)
    if isinstance(entry_or_source, KernelEntry):
        if arch not in entry_or_source.archs:
            raise ValueError(f"{entry_or_source.label} is not built for {arch} "
                             f"(its archs: {', '.join(entry_or_source.archs)})")
        res = compile_entry(entry_or_source, arch)
        fn = sass_function(res.cubin, res.lowered_name)
        title = f"{entry_or_source.label} ({entry_or_source.file}: {entry_or_source.expression})"
    elif isinstance(entry_or_source, str):
        if kernel is None:
            raise TypeError("sass(source, arch, kernel=...): name the kernel to disassemble")
        cubin, mangled, _ = _compile_source(entry_or_source, kernel, arch, tuple(options), "kernel.cu")
        fn = sass_function(cubin, mangled)
        title = kernel
    else:
        raise TypeError(f"sass() takes a KernelEntry or CUDA source text, not {type(entry_or_source).__name__}")
    return f"// {title} for {arch}, function {fn.name}\n{fn.text}\n"


def bench_columns(kernel, arch) -> dict:
    """The static figures the bench puts next to a measured rate, for a registered kernel
    (label, expression or KernelEntry) on ``arch``; never raises: without nvdisasm or on a
    compile error the values are None and ``static_error`` says why."""
    keys = ("issue_ceiling", "issue_ratio", "ceiling_pipe", "math_share", "fma_per_shared_byte", "registers",
            "spill_bytes", "blocks_per_sm", "occupancy", "features")
    try:
        entry = kernel if isinstance(kernel, KernelEntry) else find_kernel(kernel)
        a = analyze_entry(entry, arch)
    except (KeyError, ValueError, NVRTCError, ToolNotFoundError, ToolError) as exc:
        return {**dict.fromkeys(keys), "static_error": str(exc).splitlines()[0]}
    lp = a.main_loop
    return dict(issue_ceiling=a.ceiling, issue_ratio=a.issue_ratio, ceiling_pipe=lp.ceiling_pipe if lp else None,
                math_share=a.math_share, fma_per_shared_byte=a.fma_per_shared_byte, registers=a.registers,
                spill_bytes=a.spill_bytes, blocks_per_sm=a.occupancy["blocks_per_sm"],
                occupancy=a.occupancy["occupancy"], features=a.features_text, static_error=None)


# --------------------------------------------------------------------------- reports
def _pct(v, digits=0):
    return "-" if v is None else f"{100 * v:.{digits}f}%"


def _widths_text(counter) -> str:
    return "+".join(f"{n}x{bits}" for bits, n in sorted(counter.items(), reverse=True)) or "-"


TABLE_HEAD = ("kernel", "arch", "regs", "spill", "smem", "thr", "blk/SM", "occ", "loop", "math", "LDS/iter",
              "bar", "math%", "FMA/B", "gmem", "smem-w", "ceiling", "ratio", "features")
TABLE_LEGEND = ("loop: warp instructions per main-loop iteration; math: math instructions among them; "
                "LDS/iter: shared loads by width (bits); FMA/B: multiply-adds per shared byte loaded; "
                "gmem/smem-w: widest global / shared access in the kernel (bits); ceiling: issue-bound "
                "fraction of peak of the loop's math pipe; ratio: the same before its min(1, ·) cap, "
                "math-pipe clocks / issue slots (see docs/static_analysis.md); features: TMA loads, "
                "warp specialization (WS: the main loop loads nothing, another loop feeds it), setmaxnreg")


def table_rows(analyses) -> list[tuple[str, ...]]:
    """One row of ``TABLE_HEAD``'s columns per analysis."""
    rows = []
    for a in analyses:
        lp = a.main_loop
        rows.append((
            a.kernel, a.arch, str(a.registers), str(a.spill_bytes),
            str(a.static_smem_bytes + a.dynamic_smem_bytes), str(a.block_threads),
            str(a.occupancy["blocks_per_sm"]), _pct(a.occupancy["occupancy"]),
            str(lp.instructions) if lp else "-", str(lp.path_mix.math) if lp else "-",
            _widths_text(lp.path_mix.shared_load_bits) if lp else "-",
            str(lp.path_mix.by_class["barrier"]) if lp else "-",
            _pct(a.math_share), "-" if a.fma_per_shared_byte is None else f"{a.fma_per_shared_byte:.2f}",
            str(a.widest_global_bits or "-"), str(a.widest_shared_bits or "-"),
            "-" if lp is None or lp.ceiling_pipe is None else f"{_pct(lp.ceiling)} {lp.ceiling_pipe}",
            "-" if lp is None or lp.issue_ratio is None else f"{lp.issue_ratio:.2f}",
            a.features_text))
    return rows


def aligned(head, rows) -> str:
    """A plain-text table: the first column left-aligned, the rest right-aligned."""
    lines = [tuple(head), *rows]
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    out = []
    for i, r in enumerate(lines):
        out.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown(head, rows) -> str:
    """A Markdown table: the first column left-aligned, the rest right-aligned."""
    out = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def format_table(analyses) -> str:
    """One line per kernel and arch: resources, occupancy, main-loop mix and ceiling."""
    return aligned(TABLE_HEAD, table_rows(analyses)) + "\n" + TABLE_LEGEND


def summary(a: Analysis) -> str:
    """A readable multi-line report of one analysis (what `cuconv analyze` prints)."""
    occ = a.occupancy
    lines = [
        f"{a.kernel} on {a.arch}  ({a.function})",
        f"  registers {a.registers}, spills {a.spill_store_bytes} B stored / {a.spill_load_bytes} B loaded, "
        f"stack {a.stack_frame_bytes} B, shared {a.static_smem_bytes} B static + {a.dynamic_smem_bytes} B dynamic",
        f"  occupancy at {a.block_threads} threads/block ({a.block_threads_source}): "
        f"{occ['blocks_per_sm']} blocks, {occ['warps_per_sm']} warps/SM = {_pct(occ['occupancy'])} "
        f"(limited by {occ['limited_by']})"
        + (f"; the design needs {a.min_blocks_per_sm} blocks" if a.min_blocks_per_sm else ""),
        f"  Hopper features: {a.features_text} (TMA instructions {a.features['tma']})",
        f"  kernel: {a.kernel_mix.instructions} instructions, local-memory ops {a.local_memory_instructions}, "
        f"widest global access {a.widest_global_bits or '-'} bits, widest shared access {a.widest_shared_bits or '-'} bits",
        f"  loops: {len(a.loops)}"
        + "".join(f"\n    [{lp.start:04x}..{lp.end:04x}] depth {lp.depth}{' innermost' if lp.innermost else ''}: "
                  f"{lp.instructions} instr, {lp.path_mix.math} math" + ("  <- main loop" if lp is a.main_loop else "")
                  for lp in a.loops),
    ]
    lp = a.main_loop
    if lp is None:
        lines.append("  no loop: nothing repeats, so no per-iteration figures")
    else:
        m, body = lp.path_mix, lp.mix
        classes = ", ".join(f"{c} {m.by_class[c]}" for c in CLASSES if m.by_class[c])
        paths = ("" if lp.shortest_path_instructions == lp.longest_path_instructions else
                 f" (full-work path; other paths {lp.shortest_path_instructions} to "
                 f"{lp.longest_path_instructions})")
        lines += [
            f"  main loop per iteration: {lp.instructions} warp instructions{paths}: {classes}",
            f"    shared loads {_widths_text(m.shared_load_bits)}, shared stores {_widths_text(m.shared_store_bits)}, "
            f"global loads {_widths_text(m.global_load_bits)}, global stores {_widths_text(m.global_store_bits)} "
            "(count x bits)",
        ]
        if lp.shortest_path_instructions != lp.longest_path_instructions:
            for what, pm in (("shortest", lp.shortest_mix), ("longest", lp.longest_mix)):
                lines.append(f"    {what} path: {pm.instructions} instructions, {pm.math} math, global loads "
                             f"{_widths_text(pm.global_load_bits)}, shared stores {_widths_text(pm.shared_store_bits)}")
            lines.append(f"    whole body, every path ({body.instructions} instructions): shared loads "
                         f"{_widths_text(body.shared_load_bits)}, global loads {_widths_text(body.global_load_bits)}")
        lines += [
            f"    math share {_pct(lp.math_share, 1)}; FMAs per shared byte "
            f"{'-' if lp.fma_per_shared_byte is None else f'{lp.fma_per_shared_byte:.2f}'} "
            f"({m.fma_per_thread} FMA / {m.shared_load_bytes} B per thread)",
            "    issue-bound ceiling: " + (", ".join(f"{p} {_pct(c, 1)}" for p, c in lp.ceilings.items()) or "no math")
            + ("" if lp.shortest_path_instructions == lp.longest_path_instructions
               else f" (shortest path {_pct(lp.ceiling_shortest_path, 1)}, "
                    f"longest {_pct(lp.ceiling_longest_path, 1)})")
            + ("" if lp.issue_ratio is None else f"; uncapped issue ratio {lp.issue_ratio:.2f}"),
        ]
        model = issue_model(a.arch)
        pipe = lp.ceiling_pipe or "fp32"
        peak = model.get(pipe)
        lines.append(f"    model ({a.arch}): {model['sub_partitions']} sub-partitions x {model['issue']} warp "
                     f"instruction/clock; {pipe} peak "
                     + (f"{peak:g} FMA/clock per sub-partition" if peak else "unknown for this arch"))
    lines += [f"  note: {n}" for n in a.notes]
    return "\n".join(lines)

"""`cuconv kernels`: every kernel config an op can launch, compiled with NVRTC (no GPU needed).

Columns: registers, spill bytes (stores + loads), static + dynamic shared memory, and the
theoretical occupancy at the config's block size from cuconv.arch's per-arch limits.
``--sass NAME`` prints the disassembly, ``--analyze`` the static hot-loop analysis, and
``--analyze --markdown docs/kernel_figures.md`` writes the figures document: every kernel's
registers and spills on every target and the main-loop analysis on sm_80 / sm_90, the one place
such figures are written down (tests/test_analysis.py regenerates it and compares).
"""
from __future__ import annotations

import json
import sys

from .. import analysis
from ..compile import (ARCH_SPECIFIC, ARCHS, BASE_OPTIONS, NVRTCError, compile_entry, compile_target,
                       device_target, find_kernel, registered_kernels)


def add_arguments(parser) -> None:
    parser.add_argument("--arch", action="append", default=None,
                        help="target arch (sm_75 ... sm_120, sm_90a; sm_90 includes the sm_90a-only kernels); repeatable; "
                             "default: every compile target")
    parser.add_argument("--file", default=None, help="only kernels of this .cu file (e.g. gemm.cu)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--sass", metavar="NAME", default=None,
                        help="print the SASS of kernel NAME (label or name expression)")
    parser.add_argument("--analyze", action="store_true",
                        help="static SASS analysis: main-loop instruction mix, math share, issue ceiling")
    parser.add_argument("--markdown", metavar="PATH", default=None,
                        help="with --analyze: write the figures document (registers/spills of every kernel on "
                             "every target, the analysis on sm_80 and sm_90) to PATH, e.g. docs/kernel_figures.md")


def collect(archs, file=None):
    """[(entry, KernelResources | None, error | None)] for every registered kernel and arch: the
    figures of the build a device of that arch loads (``compile.device_target``), so sm_90 lists
    the kernels built only for sm_90a from their sm_90a build -- once, unless sm_90a is asked for
    as well. An arch-specific target (sm_90a) lists only the kernels built for it."""
    rows = []
    for entry in registered_kernels():
        if file and entry.file != file:
            continue
        for arch in archs:
            if arch in ARCH_SPECIFIC:
                target = arch if arch in entry.archs else None
            else:
                target = device_target(entry, arch)
                if target != arch and target in archs:
                    continue
            if target is None:
                continue
            try:
                rows.append((entry, compile_entry(entry, target), None))
            except NVRTCError as exc:
                rows.append((entry, None, str(exc)))
    return rows


def row_dict(entry, res, err) -> dict:
    d = dict(kernel=entry.label, file=entry.file, expression=entry.expression,
             block_threads=entry.block_threads)
    if res is None:
        d.update(arch=None, error=err)
        return d
    occ = res.occupancy()
    d.update(min_blocks_per_sm=entry.min_blocks(res.arch), arch=res.arch, registers=res.registers, spill_store_bytes=res.spill_store_bytes,
             spill_load_bytes=res.spill_load_bytes, stack_frame_bytes=res.stack_frame_bytes,
             static_smem_bytes=res.static_smem_bytes, dynamic_smem_bytes=res.dynamic_smem,
             blocks_per_sm=occ["blocks_per_sm"], occupancy=round(occ["occupancy"], 4),
             occupancy_limited_by=occ["limited_by"], error=None)
    return d


def format_table(dicts) -> str:
    head = ("kernel", "arch", "regs", "spills", "smem", "threads", "blocks/SM", "occupancy", "limit")
    lines = []
    for d in dicts:
        if d.get("error"):
            lines.append((d["kernel"], "-", "COMPILE ERROR", "", "", "", "", "", ""))
            continue
        lines.append((d["kernel"], d["arch"], str(d["registers"]),
                      str(d["spill_store_bytes"] + d["spill_load_bytes"]),
                      str(d["static_smem_bytes"] + d["dynamic_smem_bytes"]), str(d["block_threads"]),
                      str(d["blocks_per_sm"]), f"{100 * d['occupancy']:.0f}%", d["occupancy_limited_by"]))
    return analysis.aligned(head, lines)


FIGURE_TARGETS = (*ARCHS, *ARCH_SPECIFIC)      # the registers/spills columns of the document
FIGURE_ANALYSIS_ARCHS = ("sm_80", "sm_90")     # the analysis rows (sm_90 brings sm_90a's kernels)


def figures_markdown() -> str:
    """The figures document (``--analyze --markdown``): per kernel file, the registers (and spills,
    when any) of every kernel on every target, then the main-loop analysis on sm_80 and sm_90.
    Every figure comes from the build the GPU loads; its header names the NVRTC and nvdisasm that
    made it, since the SASS, and so every figure, depends on them."""
    versions = analysis.tool_versions()
    built = collect(FIGURE_TARGETS)
    resources = {(e.label, res.arch): res for e, res, err in built if err is None}
    errors = [f"{e.label}: {err.splitlines()[0]}" for e, res, err in built if err]
    if errors:
        raise NVRTCError("cannot write the figures: compile errors\n" + "\n".join(errors))
    analyses = {}
    for e, res, err in collect(FIGURE_ANALYSIS_ARCHS):
        analyses.setdefault(e.file, []).append(analysis.analyze_entry(e, res.arch))
    out = [
        "<!-- Generated by `cuconv kernels --analyze --markdown docs/kernel_figures.md`; do not edit by hand. -->",
        "# Kernel figures",
        "",
        "Registers, spills and the static main-loop analysis of every registered kernel config, read from",
        "the NVRTC build the GPU loads (`cuconv.compile.build_module`) and nvdisasm's SASS. No GPU is",
        "involved: these are figures of the code, not measurements. Prose quotes the command, not the",
        "number: after changing a kernel, regenerate this file with the command above;",
        "`tests/test_analysis.py::test_kernel_figures_are_current` regenerates it and fails on any",
        "difference (and skips, saying so, where the installed NVRTC or nvdisasm is not the one below).",
        "The columns are explained in [static_analysis.md](static_analysis.md).",
        "",
        f"- NVRTC: {versions.get('nvrtc')}",
        f"- nvdisasm: {versions.get('nvdisasm')}",
        f"- options: `{' '.join(BASE_OPTIONS)}` and a kernel's own `-D...` (`cuconv.compile.BASE_OPTIONS`)",
        "- registers per thread on each target; \"/ N B spill\" where ptxas reports spill stores + loads;",
        "  `-`: not built for that target (sm_90a: the kernels that need it; sm_90 devices load them from it)",
    ]
    for file in sorted({e.file for e in registered_kernels()}):
        entries = [e for e in registered_kernels() if e.file == file]
        file_analyses = analyses.get(file, [])
        rows = []
        for e in entries:
            cells = []
            for t in FIGURE_TARGETS:
                r = resources.get((e.label, t))
                cells.append("-" if r is None else
                             str(r.registers) + (f" / {r.spill_bytes} B spill" if r.spill_bytes else ""))
            rows.append((e.label, *cells))
        out += ["", f"## {file}", "", "Registers on every target:", "",
                analysis.markdown(("kernel", *FIGURE_TARGETS), rows), "",
                f"Main loop ({', '.join(FIGURE_ANALYSIS_ARCHS)}; main configs in bold):", "",
                analysis.markdown(analysis.TABLE_HEAD, [(f"**{row[0]}**" if a.main else row[0], *row[1:])
                                                        for a, row in zip(file_analyses, analysis.table_rows(file_analyses))])]
    out += ["", analysis.TABLE_LEGEND.replace("(see docs/static_analysis.md)", "(see static_analysis.md)"), ""]
    return "\n".join(out)


def run(args) -> int:
    # The resource table is cheap per arch once compiled; the SASS analysis defaults to the
    # two archs the designs target (sm_80, sm_90) unless --arch says otherwise.
    if args.markdown:
        if not args.analyze or args.arch or args.file or args.json or args.sass:
            print("cuconv kernels: --markdown writes the whole figures document: use it with --analyze "
                  "and without --arch, --file, --json or --sass", file=sys.stderr)
            return 2
        text = figures_markdown()
        with open(args.markdown, "w") as f:
            f.write(text)
        print(f"wrote {args.markdown} ({text.count(chr(10))} lines)")
        return 0
    default = FIGURE_ANALYSIS_ARCHS if (args.analyze or args.sass) else ARCHS
    archs = [compile_target(a) for a in (args.arch or default)]   # sm_90a stays sm_90a
    if args.sass or args.analyze:
        if args.sass:
            entry = find_kernel(args.sass)
            for arch in archs:
                print(analysis.sass(entry, arch))
            return 0
        results = [analysis.analyze_entry(e, a) for e, res, err in collect(archs, args.file)
                   if err is None for a in [res.arch]]
        if args.json:
            print(json.dumps([r.to_dict() for r in results], indent=2))
        else:
            print(analysis.format_table(results))
        return 0
    rows = [row_dict(*r) for r in collect(archs, args.file)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
        errors = [d for d in rows if d.get("error")]
        for d in errors:
            print(f"\n{d['kernel']}: {d['error']}", file=sys.stderr)
    return 1 if any(d.get("error") for d in rows) else 0

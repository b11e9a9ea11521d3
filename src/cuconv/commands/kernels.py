"""`cuconv kernels`: every kernel config an op can launch, compiled with NVRTC (no GPU needed).

Columns: registers, spill bytes (stores + loads), static + dynamic shared memory, and the
theoretical occupancy at the config's block size from cuconv.arch's per-arch limits.
``--sass NAME`` prints the disassembly, ``--analyze`` the static hot-loop analysis.
"""
from __future__ import annotations

import json
import sys

from .. import analysis
from ..compile import ARCHS, NVRTCError, compile_entry, compile_target, find_kernel, registered_kernels


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


def collect(archs, file=None):
    """[(entry, KernelResources | None, error | None)] for every registered kernel and arch."""
    rows = []
    for entry in registered_kernels():
        if file and entry.file != file:
            continue
        for arch in archs:
            target = arch
            if arch not in entry.archs:
                # sm_90 also lists the kernels built only for its arch-specific target sm_90a
                # (they run on the same devices), once, unless sm_90a is asked for as well.
                target = next((a for a in entry.archs if a != arch and a.rstrip("a") == arch), None)
                if target is None or target in archs:
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
    lines = [head]
    for d in dicts:
        if d.get("error"):
            lines.append((d["kernel"], "-", "COMPILE ERROR", "", "", "", "", "", ""))
            continue
        lines.append((d["kernel"], d["arch"], str(d["registers"]),
                      str(d["spill_store_bytes"] + d["spill_load_bytes"]),
                      str(d["static_smem_bytes"] + d["dynamic_smem_bytes"]), str(d["block_threads"]),
                      str(d["blocks_per_sm"]), f"{100 * d['occupancy']:.0f}%", d["occupancy_limited_by"]))
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    out = []
    for i, r in enumerate(lines):
        out.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def run(args) -> int:
    # The resource table is cheap per arch once compiled; the SASS analysis defaults to the
    # two archs the designs target (sm_80, sm_90) unless --arch says otherwise.
    default = ("sm_80", "sm_90") if (args.analyze or args.sass) else ARCHS
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

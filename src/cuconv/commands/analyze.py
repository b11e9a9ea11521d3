"""`cuconv analyze FILE.cu KERNEL`: static SASS analysis of any kernel, no GPU needed.

Compiles KERNEL (an ``extern "C"`` name or a template instantiation such as
``'my_gemm<128, 8>'``) from FILE.cu with NVRTC for each ``--arch``, disassembles it with
nvdisasm and prints registers, spills, shared memory, occupancy, the loops, the main loop's
instruction mix, math share, FMAs per shared byte and the issue-bound ceiling.
The file's directory and cuconv's kernels/ are on the include path.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .. import analysis
from ..arch import normalize_arch
from ..compile import NVRTCError


def add_arguments(parser) -> None:
    parser.add_argument("file", help="CUDA C++ source file (.cu)")
    parser.add_argument("kernel", help="kernel name: extern \"C\" name or instantiation, e.g. 'gemm<128, 8>'")
    parser.add_argument("--arch", action="append", default=None,
                        help="target arch, repeatable (sm_75 ... sm_120); default: this machine's GPU, else sm_90")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per block for the occupancy (default: __launch_bounds__, else 256)")
    parser.add_argument("--dynamic-smem", type=int, default=0, metavar="BYTES",
                        help="dynamic shared memory per block, for the occupancy")
    parser.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME[=VALUE]",
                        help="preprocessor definition passed to NVRTC")
    parser.add_argument("--option", action="append", default=[], metavar="OPT",
                        help="extra NVRTC option (e.g. --option=--maxrregcount=64)")
    parser.add_argument("--sass", action="store_true", help="also print the kernel's SASS")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _default_arch() -> str:
    try:
        import cupy  # noqa: PLC0415
        cc = cupy.cuda.Device().compute_capability
        return normalize_arch(cc)
    except Exception:  # noqa: BLE001  (no CuPy, no driver, no device: analyse for Hopper)
        return "sm_90"


def run(args) -> int:

    path = Path(args.file)
    if not path.is_file():
        print(f"cuconv analyze: no such file: {path}", file=sys.stderr)
        return 2
    archs = args.arch or [_default_arch()]
    options = (*(f"-D{d}" for d in args.defines), *args.option)
    results, sass_texts = [], []
    try:
        for arch in archs:
            results.append(analysis.analyze_file(path, args.kernel, arch, options, block_threads=args.threads,
                                                 dynamic_smem=args.dynamic_smem))
            if args.sass:
                sass_texts.append(analysis.sass(path.read_text(), arch, kernel=args.kernel,
                                                options=analysis.file_options(path, options)))
    except (NVRTCError, analysis.ToolNotFoundError, analysis.ToolError, KeyError, ValueError, TypeError) as exc:
        print(f"cuconv analyze: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
        return 0
    for text in sass_texts:
        print(text)
    print("\n\n".join(analysis.summary(r) for r in results))
    return 0

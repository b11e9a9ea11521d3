"""The `cuconv` command: info | kernels | cost | bench | analyze | check | profile | coverage.

Each subcommand lives in cuconv/commands/<name>.py with ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so
`cuconv cost` never imports CuPy.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

COMMANDS = {
    "info": "versions, CUDA devices (CuPy + NVML), clocks and derived peaks",
    "kernels": "every kernel config: registers, spills, shared memory, occupancy per arch (no GPU needed)",
    "cost": "theoretical cost of a landmark CNN, layer by layer (textbook §8-§11)",
    "bench": "benchmark kernels against the theoretical costs (GPU), or verify them in emulation",
    "analyze": "static SASS analysis of any kernel in a .cu file (no GPU needed)",
    "check": "run cuconv's kernels against the float64 reference: on the CPU emulator, or every kernel on "
             "the GPU (--gpu)",
    "profile": "one op on one problem with NVTX ranges; the ncu / compute-sanitizer command lines for its launches",
    "coverage": "which layers of the landmark CNNs run natively (float32 NCHW, float16/bfloat16 NHWC; no GPU needed)",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; with ``only``, the other subcommands' modules are not imported."""
    parser = argparse.ArgumentParser(prog="cuconv", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cuconv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is not None and name != only:
            continue
        try:
            mod = importlib.import_module(f"cuconv.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"cuconv.commands.{name}":
                raise
            p.set_defaults(_missing=name)
            continue
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Build only the chosen subcommand's parser in full (keeps `cuconv cost` fast).
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    args._argv = list(argv)         # the command line as given (cuconv profile repeats it for ncu)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "_missing", None):
        print(f"cuconv {args._missing}: not built yet in this version", file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except BrokenPipeError:  # `cuconv ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())

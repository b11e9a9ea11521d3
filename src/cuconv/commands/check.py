"""`cuconv check`: run cuconv's kernels on the CPU emulator against the float64 reference.

The same cases as `cuconv bench` (default: the `algos` suite — every algorithm on every
layer where it applies), verified at a reduced size on the emulator, optionally under the
sanitizers and a race-exposing thread order. Nothing is timed. Exit status 1 when any
case fails verification.

    cuconv check                                    # every algorithm, plain emulation
    cuconv check --sanitize address,undefined --order random --seed 3
    cuconv check seed -k depthwise
"""
from __future__ import annotations

import argparse
import os

from . import bench


def add_arguments(parser) -> None:
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help="bench suites or models to check (default: algos)")
    parser.add_argument("--sanitize", default=None, metavar="KINDS",
                        help='emulator sanitizers, e.g. "address,undefined"')
    parser.add_argument("--order", default=None, choices=("forward", "reverse", "random"),
                        help="order in which the threads of a block run between barriers")
    parser.add_argument("--seed", type=int, default=None, help="seed of --order random")
    parser.add_argument("-k", "--filter", default=None, help="only cases whose name contains TEXT")
    parser.add_argument("--algo", default="all", help="conv2d algorithm(s): all (default), auto or a name")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the rows as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:

    # The emulator reads its checking modes from these when an op does not pass them.
    for var, value in (("CUCONV_EMU_SANITIZE", args.sanitize), ("CUCONV_EMU_ORDER", args.order),
                       ("CUCONV_EMU_SEED", None if args.seed is None else str(args.seed))):
        if value is not None:
            os.environ[var] = value
    parser = argparse.ArgumentParser(prog="cuconv check")
    bench.add_arguments(parser)
    argv = [*(args.targets or ["algos"]), "--emulate", "--no-resources", "--no-baseline", "--algo", args.algo]
    if args.filter:
        argv += ["--filter", args.filter]
    if args.json:
        argv += ["--json", args.json]
    if args.quiet:
        argv.append("--quiet")
    return bench.run(parser.parse_args(argv))

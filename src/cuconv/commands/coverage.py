"""`cuconv coverage`: which layers of the landmark CNNs cuconv runs natively (no GPU needed).

    cuconv coverage                                  # the tables (markdown) on stdout
    cuconv coverage --markdown docs/coverage.md      # write the document (tests/test_coverage.py checks it)
    cuconv coverage --missing                        # each layer that is not native, with the reason
    cuconv coverage --missing --arch sm_90 --model resnet50 --column float16

Every conv and pooling layer of every model in cuconv.models, in float32 NCHW, float16 NHWC and
bfloat16 NHWC, forward and backward, planned on the record backend for an H100 (sm_90) and an
A100 (sm_80): see cuconv.coverage for what counts as native. ``--missing`` exits 1 when a layer is
not native (0 when all are).
"""
from __future__ import annotations

import sys

from .. import coverage, models


def add_arguments(parser) -> None:
    parser.add_argument("--arch", action="append", default=None, choices=sorted(coverage.DEVICES),
                        help=f"device arch to plan for; repeatable; default: {' and '.join(coverage.ARCHS)}")
    parser.add_argument("--markdown", metavar="PATH", default=None,
                        help="write the coverage document to PATH (docs/coverage.md); the whole document only")
    parser.add_argument("--missing", action="store_true",
                        help="list each layer pass that is not native, with the refusal or the conversion steps")
    parser.add_argument("--model", action="append", default=None, help="only this model (repeatable; --missing)")
    parser.add_argument("--column", default=None,
                        help="only the columns with these words (e.g. float16, 'bfloat16 backward'; --missing)")


def run(args) -> int:
    if args.markdown:
        if args.arch or args.model or args.column or args.missing:
            print("cuconv coverage: --markdown writes the whole document: use it without --arch, --model, "
                  "--column or --missing", file=sys.stderr)
            return 2
        text = coverage.markdown()
        with open(args.markdown, "w") as f:
            f.write(text)
        print(f"wrote {args.markdown} ({text.count(chr(10))} lines)")
        return 0
    archs = tuple(args.arch or coverage.ARCHS)
    names = [models.get(m).name for m in args.model] if args.model else None
    if args.missing:
        short = [v for v in coverage.missing(archs, names)
                 if args.column is None
                 or set(args.column.split()) <= set(coverage.column_name(v.dtype, v.layout, v.pass_).split())]
        for v in short:
            col = coverage.column_name(v.dtype, v.layout, v.pass_)
            print(f"{v.arch} {v.model} {v.layer} ({v.kind}) [{col}]: " + "; ".join(v.reasons))
        print(f"{len(short)} layer pass(es) not native", file=sys.stderr)
        return 1 if short else 0
    if args.model or args.column:
        print("cuconv coverage: --model and --column filter --missing", file=sys.stderr)
        return 2
    print(coverage.markdown(archs))
    return 0

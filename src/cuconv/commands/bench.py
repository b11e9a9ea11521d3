"""`cuconv bench`: measured cost against the textbook's theoretical cost.

    cuconv bench                                  # the default suite (seed)
    cuconv bench seed resnet50 gemm               # suites
    cuconv bench conv2d --input 32,64,56,56 --weight 128,64,3,3 --padding 1
    cuconv bench model resnet50 --batch 32        # the whole forward pass, layer by layer
    cuconv bench seed resnet50 --backward         # each layer's dgrad and wgrad (§9.8) after its forward
    cuconv bench train lenet5 --batch 8           # a whole training step: forward, then backward
    cuconv bench host                             # the host cost of a cached op call (no GPU needed)
    cuconv bench resnet50 --graph                 # time CUDA-graph replays of each plan
    cuconv bench seed --devices all               # once per GPU, one process each
    cuconv bench algos --shard 2/4 --json s2.json # the 2nd quarter of a suite (a Slurm array task)
    cuconv bench merge s1.json s2.json s3.json s4.json --json all.json --csv all.csv   # one table

On a GPU each case is verified against the float64 reference, then timed with CUDA events.
Without one it says so, verifies every case on the CPU emulator at a reduced size, fills
the theoretical columns and leaves the measured ones empty; ``--roofline h100`` adds the
roofline lower-bound time on a GPU from published peak figures.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import shlex
import socket
import sys

from .. import models
from ..bench import host, report
from ..bench.cases import ConvCase
from ..bench.measure import TimingOptions
from ..bench.peaks import PUBLISHED, published
from ..bench.runner import BenchOptions, Runner
from ..backend import gpu_available
from ..bench.suites import (
    DEFAULT_MODEL_BATCH,
    DEFAULT_SUITE,
    SUITES,
    build_suite,
    expand_all_algorithms,
    model_cases,
    train_cases,
    with_backward,
)
from ..device import device_report
from ..problem import Conv2dProblem

_DESCRIPTION_TARGETS = ("TARGET: suites ({suites}; or any model name), `conv2d` with --input/--weight, "
                        "`model NAME` (the forward pass), `train NAME` (a forward + backward step), `host` "
                        "(the Python cost of an op call, on the record backend), or `merge A.json B.json ...` "
                        "(the --json files of --shard runs as one table, with --json/--csv). Default: {default}.")


def int_list(text: str, what: str, n: int | None = None) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be comma-separated integers, got {text!r}") from None
    if n is not None and len(vals) != n:
        raise argparse.ArgumentTypeError(f"{what} needs {n} comma-separated integers, got {text!r}")
    return vals


def pair_arg(what: str, allow_words=()):
    def parse(text: str):
        if text in allow_words:
            return text
        vals = int_list(text, what)
        if len(vals) not in (1, 2):
            raise argparse.ArgumentTypeError(f"{what} is one integer or two (h,w), got {text!r}")
        return vals[0] if len(vals) == 1 else vals
    return parse


def positive_int(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return v


def _positive_float(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return v


def add_arguments(parser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n", 1)[1]
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help=_DESCRIPTION_TARGETS.format(suites=", ".join(SUITES), default=DEFAULT_SUITE))
    g = parser.add_argument_group("conv2d problem (cuconv bench conv2d ...)")
    g.add_argument("--input", type=lambda t: int_list(t, "--input", 4), metavar="N,C,H,W")
    g.add_argument("--weight", type=lambda t: int_list(t, "--weight", 4), metavar="K,C,R,S",
                   help="C is the input channels per group")
    g.add_argument("--stride", type=pair_arg("--stride"), default=1, metavar="S|SH,SW")
    g.add_argument("--padding", type=pair_arg("--padding", ("same", "valid")), default=0,
                   metavar="P|PH,PW|same|valid")
    g.add_argument("--dilation", type=pair_arg("--dilation"), default=1, metavar="D|DH,DW")
    g.add_argument("--groups", type=positive_int, default=1)
    g = parser.add_argument_group("what to run")
    g.add_argument("--algo", default="auto",
                   help="conv2d algorithm for every conv case: auto (default), a name from "
                        "cuconv.algorithms(problem), or all (every algorithm that can run it)")
    g.add_argument("--backward", action="store_true",
                   help="after each conv and pooling case its gradients (cuconv.grad, §9.8): a conv's dgrad "
                        "(conv2d_input) and wgrad (conv2d_weight, db fused; a model layer's bias decides), a pool's "
                        "dx; a model's FC layers as GEMMs. The first layer of a model gets no dgrad. Gradients run "
                        "algo auto unless --algo all")
    g.add_argument("--dtype", default="float32", help="element type (default float32)")
    g.add_argument("--batch", type=positive_int, default=None,
                   help="batch size (models: default 32; seed: the textbook's, 32 for §9.1 and 1 elsewhere)")
    g.add_argument("-k", "--filter", default=None, metavar="TEXT",
                   help="only cases whose name or layer contains TEXT")
    g.add_argument("--list", action="store_true", help="list the cases and exit")
    g.add_argument("--shard", default=None, metavar="I/N",
                   help="only every N-th case starting at the I-th (1-based): split a long suite into runs")
    g = parser.add_argument_group("measuring (GPU)")
    g.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    g.add_argument("--devices", default=None, metavar="all|I,J,...",
                   help="run the cases once per device, one process per device; every row names its device")
    g.add_argument("--graph", action="store_true",
                   help="time replays of each plan captured once in a CUDA graph (no launch overhead "
                        "between a plan's kernels: small layers show the GPU time alone)")
    g.add_argument("--repeats", type=positive_int, default=None,
                   help="exactly this many timed runs per case (default: until the noise target or budget)")
    g.add_argument("--budget", type=_positive_float, default=2.0, metavar="SECONDS",
                   help="time budget per timed function (default 2)")
    g.add_argument("--noise", type=_positive_float, default=0.5, metavar="PCT",
                   help="stop once the relative standard deviation is below PCT %% (default 0.5)")
    g.add_argument("--no-baseline", action="store_true", help="skip cuBLAS/cuDNN baselines")
    g.add_argument("--verify-gflop", type=_positive_float, default=None, metavar="G",
                   help="GPU verification: the float64 reference checks all images when it costs at most G "
                        "GFLOP, else the first and last, else the first (default 2)")
    g.add_argument("--emulate", action="store_true",
                   help="verify on the CPU emulator and time nothing, even when a GPU is present")
    g = parser.add_argument_group("theory and output")
    g.add_argument("--roofline", default=None, metavar="GPU",
                   help=f"roofline from published peaks of GPU ({', '.join(PUBLISHED)}); "
                        "default: the measured device, none without a GPU")
    g.add_argument("--arch", default=None, help="arch for the registers/spills columns without a GPU "
                                                "(default: the --roofline GPU's, else sm_90)")
    g.add_argument("--no-resources", action="store_true",
                   help="skip the NVRTC compile behind the registers/spills columns (faster)")
    g.add_argument("--json", metavar="FILE", help="write header and rows as JSON")
    g.add_argument("--csv", metavar="FILE", help="write the rows as CSV ('# key: value' header lines first)")
    g.add_argument("--plot", metavar="FILE.png", help="write a roofline plot (needs matplotlib)")
    g.add_argument("--quiet", action="store_true", help="no progress bar on stderr")


class UsageError(ValueError):
    pass


def _build_cases(args):
    """(cases, title, model or None) for the command line; UsageError for bad usage. A model
    with the ``train`` target is a training step's (``_is_train``)."""
    targets = args.targets or [DEFAULT_SUITE]
    conv_opts = [o for o in ("input", "weight") if getattr(args, o) is not None]
    if conv_opts and targets[0] != "conv2d":
        raise UsageError(f"--{conv_opts[0]} belongs to `cuconv bench conv2d --input ... --weight ...`")
    if targets[0] == "conv2d":
        if len(targets) > 1:
            raise UsageError(f"`cuconv bench conv2d` takes options, not more targets (got {targets[1:]})")
        if args.input is None or args.weight is None:
            raise UsageError("`cuconv bench conv2d` needs --input N,C,H,W and --weight K,C,R,S")
        x = list(args.input)
        if args.batch:
            x[0] = args.batch
        try:
            p = Conv2dProblem.from_shapes(x, args.weight, args.stride, args.padding, args.dilation,
                                          args.groups, args.dtype)
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from None
        cases = [ConvCase("conv2d", p.describe(), problem=p, algo="auto" if args.algo == "all" else args.algo)]
        if args.backward:
            cases = with_backward(cases)
        if args.algo == "all":
            cases = expand_all_algorithms(cases)
        return cases, f"conv2d {p.describe()} {p.dtype}", None
    if targets[0] == "train":
        if len(targets) != 2:
            raise UsageError("usage: cuconv bench train NAME [--batch B] (e.g. cuconv bench train lenet5)")
        batch = args.batch or DEFAULT_MODEL_BATCH
        try:
            model = models.get(targets[1], batch=batch, dtype=args.dtype)
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from None
        if args.algo != "auto":
            raise UsageError("`cuconv bench train` runs every layer with algo auto (--algo is for suites, "
                             "`model` and `conv2d`)")
        cases = train_cases(model.name, batch, args.dtype)
        return cases, f"training step of {model.name}, batch {batch}, {args.dtype}", model
    if targets[0] == "model":
        if len(targets) != 2:
            raise UsageError("usage: cuconv bench model NAME [--batch B] (e.g. cuconv bench model resnet50)")
        if args.backward:
            raise UsageError("`cuconv bench model` is the forward pass; `cuconv bench train NAME` runs a whole "
                             "forward + backward step")
        batch = args.batch or DEFAULT_MODEL_BATCH
        try:
            model = models.get(targets[1], batch=batch, dtype=args.dtype)
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from None
        cases = model_cases(model.name, batch, args.dtype, "auto" if args.algo == "all" else args.algo,
                            distinct=False)
        if args.algo == "all":
            cases = expand_all_algorithms(cases)
        return cases, f"model {model.name}, batch {batch}, {args.dtype}", model
    cases = []
    for t in targets:
        try:
            cases += build_suite(t, args.batch, args.dtype, args.algo, backward=args.backward)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return cases, "suite " + " ".join(targets) + (" with the backward passes" if args.backward else ""), None


def _run_host(args) -> int:
    """`cuconv bench host`: the host-overhead table (bench/host.py), optionally as JSON."""
    result = host.run(repeats=args.repeats or 15)
    print(host.markdown(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(header=Runner(BenchOptions(emulate=True, progress=False)).header(
                command="cuconv bench host"), **result), f, indent=1)
    return 0


def _options(args, device: int) -> BenchOptions:
    return BenchOptions(
        timing=TimingOptions(repeats=args.repeats, budget_s=args.budget, noise_target=args.noise / 100),
        emulate=args.emulate, device=device, roofline=args.roofline, arch=args.arch,
        baseline=not args.no_baseline, resources=not args.no_resources, progress=not args.quiet,
        graph=args.graph,
        **({} if args.verify_gflop is None else dict(max_reference_flops=args.verify_gflop * 1e9)))


def _command_line(args) -> str:
    argv = ["cuconv", *getattr(args, "_argv", None)] if getattr(args, "_argv", None) else list(sys.argv)
    if argv and (argv[0].endswith("__main__.py") or argv[0].endswith("/cuconv") or argv[0] == "cuconv"):
        argv[0] = "cuconv"
    return " ".join(shlex.quote(a) for a in argv)


def _measure_on(args, cases, device: int, queue=None):
    """(header, rows, peaks) of the cases on ``device`` (in a child process: put on ``queue``)."""
    try:
        runner = Runner(_options(args, device))
        header = runner.header(command=_command_line(args))
        result = (header, runner.run(cases), runner.peaks, None)
    except Exception as exc:
        result = (None, None, None, f"device {device}: {type(exc).__name__}: {exc}")
    if queue is None:
        return result
    queue.put((device, result))
    return None


def _per_device(args, cases, devices: list[int]):
    """One process per device ("spawn": a CUDA context does not survive fork); results by device."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_measure_on, args=(args, cases, d, queue)) for d in devices]
    for p in procs:
        p.start()
    results = dict(queue.get() for _ in procs)
    for p in procs:
        p.join()
    return [results[d] for d in devices]


def device_indices(text: str, count: int) -> list[int]:
    """``all`` or ``0,2`` -> device indices (ValueError naming the bad one)."""
    if text.strip().lower() == "all":
        if count == 0:
            raise ValueError("--devices all: no CUDA device was found")
        return list(range(count))
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            i = int(part)
        except ValueError:
            raise ValueError(f"--devices takes 'all' or comma-separated device indices, got {text!r}") from None
        if not 0 <= i < count:
            raise ValueError(f"--devices {text}: device {i} does not exist (this machine has {count} CUDA "
                             f"device(s))")
        if i not in out:
            out.append(i)
    if not out:
        raise ValueError(f"--devices {text!r} names no device")
    return out


def _is_train(args) -> bool:
    return bool(args.targets) and args.targets[0] == "train"


def _totals(model, train: bool, cases, rows):
    if model is None:
        return None
    return report.train_totals(model, cases, rows) if train else report.model_totals(model, rows)


def _selection(args) -> dict:
    """What a run's cases are, canonically (the --json header's ``selection``): two shards merge
    only when theirs are equal."""
    keys = ("targets", "algo", "backward", "dtype", "batch", "filter", "input", "weight", "stride", "padding",
            "dilation", "groups")
    return {k: (list(v) if isinstance(v, tuple) else v) for k in keys for v in [getattr(args, k, None)]}


_MERGE_ONLY = ("json", "csv", "quiet")


def _run_merge(args) -> int:
    """`cuconv bench merge A.json B.json ... [--json OUT] [--csv OUT]`: one table from the shards."""
    files = args.targets[1:]
    defaults = vars(build_defaults())
    extra = sorted(k for k, v in vars(args).items() if k not in ("targets", "_argv", *_MERGE_ONLY)
                   and k in defaults and v != defaults[k])
    if extra:
        print(f"cuconv bench merge: takes the shards' JSON files, --json, --csv and --quiet; got --{extra[0]}",
              file=sys.stderr)
        return 2
    docs = []
    for f in files:
        try:
            with open(f) as fh:
                docs.append(json.load(fh))
        except (OSError, ValueError) as exc:
            print(f"cuconv bench merge: cannot read {f}: {exc}", file=sys.stderr)
            return 2
    try:
        header, rows, several = report.merge_shards(docs, files)
    except report.MergeError as exc:
        print(f"cuconv bench merge: {exc}", file=sys.stderr)
        return 2
    n = len(files)
    print(report.header_text(header, f"{' '.join(header['selection']['targets'] or [DEFAULT_SUITE])}, "
                                      f"{n} shards merged"))
    if several:
        print("Devices: " + "; ".join(f"shard {s['shard']} on {s['device']} #{s['device_index']}"
                                      + (f" ({s['host']})" if s["host"] else "") for s in header["shards"]))
    print()
    print(report.markdown_table(rows, device_column=several))
    text = report.notes_text(rows)
    if text:
        print(text)
    if args.json:
        report.write_json(args.json, header, rows)
    if args.csv:
        report.write_csv(args.csv, {k: v for k, v in header.items() if k != "shards"}, rows)
    bad = [r for r in rows if r["status"] in ("verify-failed", "error")]
    return 1 if bad else 0


def build_defaults():
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return parser.parse_args([])


def run(args) -> int:
    if args.targets == ["host"]:
        return _run_host(args)
    if args.targets and args.targets[0] == "merge":
        return _run_merge(args)

    try:
        if args.roofline:
            published(args.roofline)
        if args.plot:
            report.require_matplotlib()
        cases, title, model = _build_cases(args)
        train = _is_train(args)
    except (UsageError, ValueError, ImportError) as exc:
        print(f"cuconv bench: {exc}", file=sys.stderr)
        return 2
    if args.filter:
        cases = [c for c in cases if args.filter in c.name or args.filter in (c.layer or "")]
        if not cases:
            print(f"cuconv bench: no case matches --filter {args.filter!r}", file=sys.stderr)
            return 2
    cases_in_suite = len(cases)
    if args.shard:
        try:
            i, n = (int(v) for v in args.shard.split("/"))
            if not 1 <= i <= n:
                raise ValueError
        except ValueError:
            print(f"cuconv bench: --shard takes I/N with 1 <= I <= N, got {args.shard!r}", file=sys.stderr)
            return 2
        args.shard = f"{i}/{n}"
        cases = cases[i - 1::n]
        if not cases:
            print(f"cuconv bench: --shard {args.shard} leaves no case", file=sys.stderr)
            return 2
    if args.list:
        for c in cases:
            print(f"{c.suite:<14} {c.name:<40} {c.op:<10} {c.algo:<12} {c.args()}")
        return 0

    devices = [args.device]
    if args.devices:
        count = len(device_report().devices) if not args.emulate and gpu_available() else 0
        if count == 0:
            print("cuconv bench: --devices: no GPU here (or --emulate); one emulated run instead", file=sys.stderr)
        else:
            try:
                devices = device_indices(args.devices, count)
            except ValueError as exc:
                print(f"cuconv bench: {exc}", file=sys.stderr)
                return 2
    if len(devices) == 1:
        results = [_measure_on(args, cases, devices[0])]
    else:
        if not args.quiet:
            print(f"cuconv bench: {len(cases)} case(s) on devices {', '.join(map(str, devices))}, one process "
                  "each", file=sys.stderr)
        results = _per_device(args, cases, devices)
    errors = [r[3] for r in results if r[3]]
    if errors:
        text = "; ".join(errors)
        print("cuconv bench: " + (text.split(": ", 2)[-1] if len(results) == 1 else text), file=sys.stderr)
        return 2

    all_rows, bad = [], []
    for header, rows, peaks, _ in results:
        if header["mode"] != "gpu" and not args.quiet:
            print(f"cuconv bench: no GPU ({header['no_gpu_reason']}); verified {len(cases)} case(s) on the CPU "
                  "emulator at a reduced size, nothing is timed", file=sys.stderr)
        totals = _totals(model, train, cases, rows)
        print(report.header_text(header, title))
        print()
        print(report.markdown_table(rows))
        text = report.notes_text(rows)
        if text:
            print(text)
        if totals and train:
            print()
            print(report.train_layer_table(totals))
            print(report.train_text(totals))
        elif totals:
            print(report.totals_text(totals))
        print()
        all_rows += rows
        bad += [r for r in rows if r["status"] in ("verify-failed", "error")]
    header, _, peaks, _ = results[0]
    if len(results) > 1:     # one file for every device: each row names its device
        header = dict(header, device=" | ".join(str(r[0]["device"]) for r in results),
                      device_index=[r[0]["device_index"] for r in results],
                      devices=[r[0] for r in results])
    totals = _totals(model, train, cases, all_rows) if len(results) == 1 else None
    # What `cuconv bench merge` checks: shards of one selection and revision, each once.
    header = dict(header, selection=_selection(args), shard=args.shard, cases_in_suite=cases_in_suite,
                  host=socket.gethostname())
    if args.json:
        report.write_json(args.json, header, all_rows, totals)
    if args.csv:
        report.write_csv(args.csv, {k: v for k, v in header.items() if k != "devices"}, all_rows)
    if args.plot:
        n = report.plot_roofline(args.plot, header, all_rows, peaks)
        if n == 0:
            print("cuconv bench: the roofline plot has no points (nothing measured and no --roofline)",
                  file=sys.stderr)
    if bad:
        print(f"\ncuconv bench: {len(bad)} case(s) failed verification or raised an error", file=sys.stderr)
    return 1 if bad else 0

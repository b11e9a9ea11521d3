"""`cuconv profile`: one op on one problem, laid out for Nsight Systems / Nsight Compute / compute-sanitizer.

    cuconv profile --input 32,64,56,56 --weight 128,64,3,3 --padding 1            # conv2d, algo auto
    cuconv profile --input 32,64,56,56 --weight 128,64,3,3 --padding 1 --ncu      # + the ncu command line
    cuconv profile --input 32,64,56,56 --weight 128,64,3,3 --padding 1 --ncu --run
    cuconv profile --op gemm --mnk 1024,1024,1024 --sanitize racecheck
    cuconv profile --op max_pool2d --input 32,64,112,112 --kernel-size 3 --stride 2 --padding 1
    nsys profile -t cuda,nvtx cuconv profile --input ... --repeat 10             # a named timeline

What it does, each step in its own NVTX range (``cupy.cuda.nvtx``) so a timeline reads as the
op's story: ``cuconv:plan`` (validation and planning, once), ``cuconv:warmup`` (``--warmup``
runs of the plan: compiles the kernels), ``cuconv:profile`` (``--repeat`` runs: the launches
to look at), ``cuconv:epilogue`` (synchronise, check the output against the float64
reference). Inside each run, Plan.execute's own ranges (the ones ``CUCONV_NVTX=1`` turns on
for any program): ``cuconv:<op>:<algo>`` around the run and one range per launch named by
the kernel's label (its config: ``gemm_f32_128x128x8_8x8``).

``--ncu`` prints the ``ncu`` command line that profiles exactly the ``--repeat`` runs'
launches: ``--kernel-name-base mangled --kernel-name regex:^(...)$`` over the plan's kernels'
mangled names (from NVRTC), ``--launch-skip`` = warm-up runs x launches per run,
``--launch-count`` = repeats x launches per run. ``--sanitize TOOL`` prints the
compute-sanitizer line (the plan's kernels only, every launch of one run). ``--run`` runs the
printed command (exit status: the tool's).

Without a GPU (or CuPy) it runs on the record backend: the op's real host path and plan,
nothing computed; it prints the plan and the command lines to use on a GPU machine.
"""
from __future__ import annotations

import argparse
import contextlib
import shlex
import shutil
import subprocess
import sys

import numpy as np

from .. import plan as plan_mod
from ..backend import backend, gpu_available
from ..bench.cases import ConvCase, GemmCase, Im2colCase, PoolCase
from ..bench.cases import numpy_dtype as _np_dtype
from ..bench.runner import scaled_tolerance
from ..compile import compile_entry, device_target
from ..problem import Conv2dProblem
from ..testing import poison, random_array, rel_error
from .bench import int_list, pair_arg, positive_int

OPS = ("conv2d", "gemm", "max_pool2d", "avg_pool2d", "global_avg_pool2d", "im2col")
SANITIZER_TOOLS = ("memcheck", "racecheck", "initcheck", "synccheck")
# `--set basic` (launch stats, occupancy, speed of light) is ncu's quick set: seconds per kernel,
# against minutes for `--set full`'s dozens of replay passes.
DEFAULT_NCU_SET = "basic"
# Exit status when the tool asked for with --run is not on the PATH.
EXIT_NO_TOOL = 3


def add_arguments(parser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n", 1)[1]
    parser.add_argument("--op", choices=OPS, default="conv2d", help="the op (default conv2d)")
    g = parser.add_argument_group("problem")
    g.add_argument("--input", type=lambda t: int_list(t, "--input", 4), metavar="N,C,H,W",
                   help="input shape (conv2d, pools, im2col)")
    g.add_argument("--weight", type=lambda t: int_list(t, "--weight", 4), metavar="K,C,R,S",
                   help="conv2d weight shape (C: input channels per group)")
    g.add_argument("--mnk", type=lambda t: int_list(t, "--mnk", 3), metavar="M,N,K", help="gemm: (M x K) @ (K x N)")
    g.add_argument("--kernel-size", type=pair_arg("--kernel-size"), default=None, metavar="K|KH,KW",
                   help="pools and im2col: the window")
    g.add_argument("--stride", type=pair_arg("--stride"), default=None, metavar="S|SH,SW",
                   help="default 1 (pools: the window)")
    g.add_argument("--padding", type=pair_arg("--padding", ("same", "valid")), default=0,
                   metavar="P|PH,PW|same|valid")
    g.add_argument("--dilation", type=pair_arg("--dilation"), default=1, metavar="D|DH,DW")
    g.add_argument("--groups", type=positive_int, default=1)
    g.add_argument("--algo", default="auto", help="conv2d algorithm (default auto)")
    g.add_argument("--dtype", default="float32", help="element type (default float32)")
    g = parser.add_argument_group("running")
    g.add_argument("--backend", choices=("auto", "cupy", "emulator", "record"), default="auto",
                   help="auto (default): the GPU when one is found, else the record backend (nothing computed)")
    g.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    g.add_argument("--warmup", type=int, default=1, metavar="N",
                   help="runs of the plan before the profiled ones (default 1; they compile the kernels)")
    g.add_argument("--repeat", type=positive_int, default=1, metavar="N", help="profiled runs (default 1)")
    g.add_argument("--no-verify", action="store_true", help="skip the check against the float64 reference")
    g = parser.add_argument_group("profilers")
    g.add_argument("--ncu", action="store_true",
                   help="print the ncu command line that profiles exactly the --repeat runs' launches")
    g.add_argument("--ncu-set", default=DEFAULT_NCU_SET, metavar="SET",
                   help=f"ncu --set (default {DEFAULT_NCU_SET}: the quick one)")
    g.add_argument("--ncu-section", action="append", default=[], metavar="SECTION",
                   help="ncu --section (repeatable; added to --ncu-set)")
    g.add_argument("--ncu-output", default="cuconv_profile", metavar="FILE",
                   help="ncu -o (default cuconv_profile, which writes cuconv_profile.ncu-rep); '-' prints instead")
    g.add_argument("--ncu-extra", default="", metavar="ARGS",
                   help='more ncu options, one string (e.g. "--csv --page details --log-file k.csv")')
    g.add_argument("--sanitize", nargs="?", const="memcheck", default=None, choices=SANITIZER_TOOLS,
                   metavar="TOOL", help=f"print the compute-sanitizer command line ({', '.join(SANITIZER_TOOLS)}; "
                                        "default memcheck)")
    g.add_argument("--run", action="store_true", help="run the printed ncu / compute-sanitizer command")
    g.add_argument("--arch", default=None, help="arch whose mangled names the command lines use without a GPU "
                                                "(default sm_90; names do not depend on it)")


class UsageError(ValueError):
    pass


def build_case(args):
    """The bench case of the command line (UsageError for bad usage)."""
    op = args.op
    stride = 1 if args.stride is None else args.stride
    try:
        if op == "conv2d":
            if args.input is None or args.weight is None:
                raise UsageError("conv2d needs --input N,C,H,W and --weight K,C,R,S")
            p = Conv2dProblem.from_shapes(args.input, args.weight, stride, args.padding, args.dilation,
                                          args.groups, args.dtype)
            return ConvCase("profile", p.describe(), problem=p, algo=args.algo)
        if op == "gemm":
            if args.mnk is None:
                raise UsageError("gemm needs --mnk M,N,K")
            m, n, k = args.mnk
            return GemmCase("profile", f"gemm {m}x{n}x{k}", algo="gemm", M=m, N=n, K=k, gemm_dtype=args.dtype)
        if args.input is None:
            raise UsageError(f"{op} needs --input N,C,H,W")
        if op == "global_avg_pool2d":
            return PoolCase("profile", op, algo="pool", kind="global_avg", x_shape=tuple(args.input),
                            pool_dtype=args.dtype)
        if args.kernel_size is None:
            raise UsageError(f"{op} needs --kernel-size")
        ks = _pair(args.kernel_size)
        if op == "im2col":
            c = args.input[1]
            p = Conv2dProblem.from_shapes(args.input, (1, c, *ks), stride, args.padding, args.dilation, 1,
                                          args.dtype)
            return Im2colCase("profile", f"im2col {p.describe()}", algo="im2col", problem=p)
        kind = op.split("_")[0]
        pool_stride = ks if args.stride is None else _pair(args.stride)
        if isinstance(args.padding, str):
            raise UsageError(f"{op} takes an integer --padding")
        return PoolCase("profile", op, algo="pool", kind=kind, x_shape=tuple(args.input), kernel=ks,
                        stride=pool_stride, padding=_pair(args.padding),
                        dilation=_pair(args.dilation) if kind == "max" else (1, 1), pool_dtype=args.dtype)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(str(exc)) from None


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _target_argv(argv: list[str], *, warmup: int | None = None, repeat: int | None = None) -> list[str]:
    """This command line without the profiler options (what ncu / compute-sanitizer run)."""
    drop_flag = {"--ncu", "--run"}
    drop_value = {"--ncu-set", "--ncu-section", "--ncu-output", "--ncu-extra", "--arch", "--backend"}
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        name = a.split("=", 1)[0]
        if name in drop_flag:
            i += 1
            continue
        if name in drop_value:
            i += 1 if "=" in a else 2
            continue
        if name == "--sanitize":        # an optional value
            i += 1
            if "=" not in a and i < len(argv) and argv[i] in SANITIZER_TOOLS:
                i += 1
            continue
        if name in ("--warmup", "--repeat") and (warmup is not None or repeat is not None):
            i += 1 if "=" in a else 2
            continue
        out.append(a)
        i += 1
    if warmup is not None:
        out += ["--warmup", str(warmup)]
    if repeat is not None:
        out += ["--repeat", str(repeat)]
    # The profilers watch GPU launches: the target runs on the GPU whatever this run used.
    return [sys.executable, "-m", "cuconv", "profile", *out, "--backend", "cupy"]


def mangled_names(plan, arch: str) -> tuple[list[str], str | None]:
    """The distinct mangled names of the plan's kernels, in launch order, and a note when NVRTC
    could not give them (then the names are the template names, matched as substrings)."""
    names, note = [], None
    for ln in kernel_launches(plan):
        try:
            # The build a device of ``arch`` loads (sm_90 devices run the wgmma kernels' sm_90a build).
            name = compile_entry(ln.entry, device_target(ln.entry, arch) or arch).lowered_name
        except Exception as exc:
            note = f"NVRTC gave no mangled names ({type(exc).__name__}: {str(exc).splitlines()[0]})"
            name = ln.entry.expression.split("<", 1)[0]
        if name not in names:
            names.append(name)
    return names, note


def kernel_launches(plan) -> list:
    """The plan's own kernel launches, in order: its library steps (an FFT plan's FftSteps, whose
    kernels are cuFFT's) have no entry, and no name of ours to filter on."""
    return [ln for ln in plan.launches if ln.entry is not None]


def ncu_command(plan, names, warmup: int, repeat: int, target: list[str], ncu_set: str, sections,
                output: str | None, exact: bool = True, extra=()) -> list[str]:
    """ncu over exactly the profiled runs' launches of ``plan``: ``--launch-skip`` and
    ``--launch-count`` count the launches that pass the ``--kernel-name`` filter (ncu applies them
    after it), i.e. the plan's own kernels: cuFFT's kernels inside an FFT step match no name of
    ours and are not counted (the warm-up runs' launches first, then the profiled ones)."""
    per_run = len(kernel_launches(plan))
    regex = "|".join(names)
    cmd = ["ncu"]
    if exact:
        cmd += ["--kernel-name-base", "mangled", "--kernel-name", f"regex:^({regex})$"]
    else:
        cmd += ["--kernel-name", f"regex:{regex}"]
    cmd += ["--launch-skip", str(warmup * per_run), "--launch-count", str(repeat * per_run),
            "--set", ncu_set]
    for s in sections:
        cmd += ["--section", s]
    # Leave the clocks as they are (ncu locks them to base by default): the figures then match
    # what the bench measures.
    cmd += ["--clock-control", "none"]
    if output:
        cmd += ["-f", "-o", output]
    return cmd + list(extra) + target


def sanitizer_command(names, tool: str, target: list[str]) -> list[str]:
    cmd = ["compute-sanitizer", "--tool", tool, "--error-exitcode", "99"]
    for n in names:
        cmd += ["--kernel-name", f"kns={n}"]
    return cmd + target


@contextlib.contextmanager
def _range(name: str):
    push, pop = plan_mod.nvtx_functions()
    push(name)
    try:
        yield
    finally:
        pop()


def _choose_backend(args) -> tuple[str, str | None]:
    if args.backend != "auto":
        return args.backend, None
    if gpu_available():
        return "cupy", None
    return "record", "no GPU (or no CuPy) here: the record backend runs the op's host path, nothing is computed"


def _inputs(be_name: str, case, seed: int = 0):
    shapes = case.input_shapes()
    dt = _np_dtype(case.dtype)
    if be_name == "cupy":
        import cupy  # noqa: PLC0415  (optional: only with a GPU)
        gen = cupy.random.default_rng(seed)
        return {k: (gen.random(s, dtype=cupy.float32) * 2 - 1).astype(dt) for k, s in shapes.items()}
    if be_name == "record":
        return {k: np.empty(s, dt) for k, s in shapes.items()}
    rng = np.random.default_rng(seed)
    return {k: random_array(rng, s, dt) for k, s in shapes.items()}


def profile(case, algo: str, be_name: str, warmup: int, repeat: int, verify: bool = True, device: int = 0) -> dict:
    """Plan, warm up, run ``repeat`` times and check, in NVTX ranges; returns the plan and what
    was checked. ``algo``: the algorithm that runs (conv2d: what ``auto`` resolved to; the plan
    itself is made with the case's own ``algo``, exactly what the op call would run)."""
    previous = plan_mod.nvtx_ranges()
    plan_mod.nvtx_ranges(True)
    stack = contextlib.ExitStack()
    try:
        if be_name == "cupy":
            import cupy  # noqa: PLC0415
            stack.enter_context(cupy.cuda.Device(device))
        be = stack.enter_context(backend(be_name))
        inputs = _inputs(be_name, case)
        out = be.empty(case.output_shape(), _np_dtype(case.dtype))
        with _range("cuconv:plan"):
            plan, env = case.plan(inputs, case.algo if case.op == "conv2d" else algo, out)
        # The caller's own workspace: every run launches with the same pointers.
        workspace = be.empty((plan.workspace_bytes,), np.uint8) if plan.workspace_bytes else None
        if be_name != "record":
            poison(out)
        with _range("cuconv:warmup"):
            for _ in range(warmup):
                plan.execute(be, env, workspace)
        with _range("cuconv:profile"):
            for _ in range(repeat):
                plan.execute(be, env, workspace)
        result = dict(plan=plan, error=None, tolerance=None, verified=None)
        with _range("cuconv:epilogue"):
            if be_name == "cupy":
                cupy.cuda.get_current_stream().synchronize()
            if verify and be_name != "record":
                subset, scope = case.verify_subsets(2e9)
                ref = case.reference(inputs, subset)
                err = rel_error(out if subset is None else out[subset], ref)
                tol = scaled_tolerance(case, algo)
                scope = f"{be_name}, " + scope.split(", ", 1)[-1]
                result.update(error=err, tolerance=tol, verified=bool(err <= tol), scope=scope)
        return result
    finally:
        stack.close()
        plan_mod.nvtx_ranges(previous)


def run(args) -> int:
    try:
        case = build_case(args)
    except UsageError as exc:
        print(f"cuconv profile: {exc}", file=sys.stderr)
        return 2
    if args.warmup < 0:
        print("cuconv profile: --warmup must be >= 0", file=sys.stderr)
        return 2
    algo, reason = case.resolve_algo()
    if reason is not None:
        print(f"cuconv profile: {case.name}: {reason}", file=sys.stderr)
        return 2
    be_name, note = _choose_backend(args)
    if note:
        print(f"cuconv profile: {note}", file=sys.stderr)
    try:
        result = profile(case, algo, be_name, args.warmup, args.repeat, not args.no_verify, args.device)
    except (ValueError, TypeError) as exc:
        print(f"cuconv profile: {exc}", file=sys.stderr)
        return 2
    plan = result["plan"]
    print(f"cuconv profile: {case.op} {case.args()} {case.dtype} on the {be_name} backend")
    print(plan.describe())
    steps = len(plan.launches) - len(kernel_launches(plan))
    print(f"runs: {args.warmup} warm-up + {args.repeat} profiled, {len(kernel_launches(plan))} kernel launch(es) each"
          + (f" and {steps} cuFFT step(s)" if steps else "") + " "
          f"(NVTX: cuconv:plan, cuconv:warmup, cuconv:profile, cuconv:epilogue; per run "
          f"cuconv:{plan.op}:{plan.algo} and one range per kernel label)")
    status = 0
    if result["verified"] is not None:
        word = "verified" if result["verified"] else "WRONG"
        print(f"output {word}: max relative error {result['error']:.3g} (tolerance {result['tolerance']:.3g}, "
              f"{result.get('scope', '')})")
        status = 0 if result["verified"] else 1
    elif be_name == "record":
        print("output not checked (the record backend computes nothing)")

    if not (args.ncu or args.sanitize):
        return status
    arch = args.arch or (_device_arch(args.device) if be_name == "cupy" else "sm_90")
    names, name_note = mangled_names(plan, arch)
    if name_note:
        print(f"note: {name_note}; the kernel-name filter matches the template names as substrings", file=sys.stderr)
    argv = list(getattr(args, "_argv", None) or sys.argv[1:])[1:]      # without "profile"
    commands = []
    if args.ncu:
        target = _target_argv(argv)
        out = None if args.ncu_output == "-" else args.ncu_output
        commands.append(("ncu", ncu_command(plan, names, args.warmup, args.repeat, target, args.ncu_set,
                                            args.ncu_section, out, exact=name_note is None,
                                            extra=shlex.split(args.ncu_extra))))
    if args.sanitize:
        commands.append(("compute-sanitizer", sanitizer_command(names, args.sanitize,
                                                                _target_argv(argv, warmup=0, repeat=1))))
    for tool, cmd in commands:
        print(f"\n{tool}:\n  {shlex.join(cmd)}")
    if not args.run:
        return status
    for tool, cmd in commands:
        if shutil.which(tool) is None:
            print(f"cuconv profile: --run: {tool} is not on the PATH", file=sys.stderr)
            return EXIT_NO_TOOL
        sys.stdout.flush()
        rc = subprocess.run(cmd).returncode
        if rc:
            return rc
    return status


def _device_arch(index: int) -> str:
    import cupy  # noqa: PLC0415
    return f"sm_{cupy.cuda.Device(index).compute_capability}"

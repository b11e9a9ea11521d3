#!/usr/bin/env bash
# bench/gpu_session.sh OUTDIR [--resume]  —  everything cuconv wants to know from a GPU, in one command.
#
# For a short-lived GPU machine (an H100/H200 lent for minutes: one command of at most 10 minutes,
# results copied off before it goes away) and for a user's first run on their own machine. Steps,
# most important first (each a separate process under `timeout`, so a hung step costs its cap and no
# more):
#
#   step               cap (s)  what
#   info                  20    cuconv info --json (versions, device, clocks, memory, derived peaks)
#   launchability         40    cuconv check --launchability device: every landmark model's conv/pool
#                               layers planned for this GPU (its arch, SMs and memory), every launch
#                               checked against its limits, auto's workspaces against the cap
#   first_contact         60    pytest -m gpu on tests/test_first_contact.py: arch/memory caps read from
#                               the device, cuFFT plans per stream, cuconv.torch's stream, allocator
#                               and DLPack handshake (issue 23)
#   prewarm               75    NVRTC-compiles every kernel file for the device, one process per file
#                               (CuPy's and cuconv's disk caches: later steps only load; ~90 s of
#                               serial NVRTC on 2 cores, the longest file ~30 s)
#   check                 60    cuconv check --gpu: every kernel vs the float64 reference (270 cases:
#                               forward, float64/NHWC, wgmma on sm_90, every backward kernel)
#   pytest                90    pytest -m gpu -n 4: the GPU half of the suite (~345 tests)
#   bench_seed            25    cuconv bench seed (cuDNN/cuBLAS baselines, registers/spills)
#   bench_resnet50        35    cuconv bench resnet50, fp32 (26 cases)
#   bench_gemm            25    cuconv bench gemm, against cuBLAS (10 cases)
#   bench_resnet50_fp16   30    cuconv bench resnet50 --dtype float16 (26 cases)
#   wgmma_vs_cudnn        40    sm_90 only: bench/wgmma_vs_mma.py --quick --convs-only --cudnn, every
#                               wgmma config (the warp-specialized TMA kernel included) against
#                               cuDNN through PyTorch on ResNet-50 3x3 layers (the table is in the log)
#   bench_mobilenet_v2    30    cuconv bench mobilenet_v2 (32 cases)
#   bench_resnet50_bwd    30    cuconv bench resnet50 --backward (dgrad + wgrad rows per layer)
#   bench_train_lenet5    15    cuconv bench train lenet5 (a whole forward + backward step)
#   host                  20    cuconv bench host (the Python cost of a cached op call)
#   ncu_*              3 x 25   ncu --set basic over the three main kernels (implicit GEMM fp32,
#                               register-blocked GEMM, tensor-core conv fp16), via cuconv profile
#   memcheck, racecheck 2 x 25  compute-sanitizer over `cuconv check --gpu --one-per-file`
#   bench_algos_1..3   3 x 25   cuconv bench algos (195 cases), in three shards, no baseline
#   finalize              20    merge into OUTDIR, draw the roofline
#
# Sizing: the bench steps time each function for at most 0.1 s (--budget 0.1 --noise 1) and verify
# against a reference of at most 0.25 GFLOP (float64 NumPy runs ~1 GFLOP/s), so a case costs about
# 0.3-0.8 s; NVRTC is paid once, in parallel, by prewarm (serially ~90 s on the 2-core development
# machine, gemm.cu alone 30 s). The caps add up to 775 s (815 s on sm_90, with wgmma_vs_cudnn); the
# session also has a deadline (CUCONV_SESSION_DEADLINE, default 440 s): each step gets min(its cap, the time left), a step cut
# off by either is recorded as "timeout", a step never reached as "not-run", and finalize always
# gets its 20 s. Worst case about 7.8 minutes; `--resume` re-runs only the steps that did not end
# "ok", each with twice its cap (set CUCONV_SESSION_DEADLINE to what is left of the lease).
#
# OUTDIR gets at most 8 files, each well under 16 MiB (what comes back from a lent machine):
#   session.md    the report: device, step table, check --gpu, tests, every bench table, host
#                 overhead, ncu summary, sanitizer summaries
#   session.json  the store behind it: per step status, rc, seconds, cap, log tail, info
#   bench.json    every bench step's header and rows (schema cuconv-bench/1)
#   bench.csv     all bench rows (suite, dtype and device columns tell them apart)
#   roofline.png  every bench row on the device's roofline
#   host.json     cuconv bench host
#   ncu.csv       ncu's details page of the three kernels
#   logs.md       the tail of every step's output
#
# Without a GPU it says so, runs the emulated bench (verification on the CPU emulator, nothing timed),
# the launchability sweep for every arch and the host benchmark instead, writes the same files and
# exits 0. A GPU older than sm_75 (V100, P100), which cuconv builds nothing for, is said once and
# treated the same way. CUCONV_SESSION_QUICK=1 shrinks
# every step to a token case (the test suite runs the script that way).
#
# On a lent H200 (the device tool), from the repository root, with timeout_s=540. $OUT is emptied
# before each command, so keep OUTDIR outside it and copy the files over at the end:
#     bash bench/gpu_session.sh /tmp/s; cp /tmp/s/* "$OUT"/
# and, while the machine is still warm, if steps were cut off (session.md's table says which):
#     CUCONV_SESSION_DEADLINE=180 bash bench/gpu_session.sh /tmp/s --resume; cp /tmp/s/* "$OUT"/
set -u

usage() { echo "usage: bash bench/gpu_session.sh OUTDIR [--resume]" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT="$1"; shift
RESUME=0
for a in "$@"; do
    case "$a" in
        --resume) RESUME=1 ;;
        *) usage ;;
    esac
done
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 CI="${CI:-1}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
if [ -n "${CUCONV_SESSION_WORK:-}" ]; then
    WORK="$CUCONV_SESSION_WORK"; mkdir -p "$WORK"
else   # the steps' raw outputs: merged into OUTDIR as each step ends, removed at exit
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/cuconv_session.XXXXXX")"
    trap 'rm -rf "$WORK"' EXIT
fi
DEADLINE="${CUCONV_SESSION_DEADLINE:-440}"
QUICK="${CUCONV_SESSION_QUICK:-0}"
HELPER="$WORK/session_helper.py"
CUCONV=("$PY" -m cuconv)

cat > "$HELPER" <<'PY'
"""gpu_session.sh's bookkeeping: the status store, merging step outputs, the final report."""
import csv, io, json, os, sys, time

OUT, WORK = sys.argv[1], sys.argv[2]
STORE = os.path.join(OUT, "session.json")


def load():
    if os.path.exists(STORE):
        with open(STORE) as f:
            return json.load(f)
    return {"steps": {}, "order": []}


def save(doc):
    tmp = STORE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, STORE)


def tail(path, lines=200, chars=60000):
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    text = "\n".join(text.splitlines()[-lines:])
    return text[-chars:]


def cmd_init(mode, reason, resume):
    doc = load() if resume == "1" else {"steps": {}, "order": []}
    doc.update(mode=mode, no_gpu_reason=reason or None, started=doc.get("started") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    doc.setdefault("runs", []).append(dict(started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                           resume=resume == "1"))
    save(doc)


def cmd_should_run(name):
    st = load()["steps"].get(name)
    sys.exit(0 if st is None or st["status"] != "ok" else 1)


def cmd_cap(name, cap):
    st = load()["steps"].get(name)
    print(int(cap) * (2 if st is not None and st["status"] in ("timeout", "not-run") else 1))


def cmd_record(name, status, rc, seconds, cap, log):
    doc = load()
    if name not in doc["order"]:
        doc["order"].append(name)
    doc["steps"][name] = dict(status=status, rc=int(rc), seconds=float(seconds), cap=int(cap),
                              finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), log=tail(log))
    if name == "info" and status == "ok":
        try:
            with open(os.path.join(WORK, "info.json")) as f:
                doc["info"] = json.load(f)
        except (OSError, ValueError):
            pass
    save(doc)


def cmd_merge_bench(name, path):
    target = os.path.join(OUT, "bench.json")
    doc = {"schema": "cuconv-gpu-session/1", "steps": {}}
    if os.path.exists(target):
        with open(target) as f:
            doc = json.load(f)
    with open(path) as f:
        doc["steps"][name] = json.load(f)
    with open(target, "w") as f:
        json.dump(doc, f, indent=1)


def cmd_merge_ncu(name, path):
    store = load()
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return
    store.setdefault("ncu", {})[name] = text[-4_000_000:]
    save(store)


def _bench_rows():
    path = os.path.join(OUT, "bench.json")
    if not os.path.exists(path):
        return {}, []
    with open(path) as f:
        doc = json.load(f)
    rows = []
    for step, d in doc["steps"].items():
        rows += d["rows"]
    return doc["steps"], rows


def _ncu_table(text):
    """Key metrics per kernel from ncu's --csv details page."""
    want = ("Duration", "Compute (SM) Throughput", "Memory Throughput", "DRAM Throughput", "Registers Per Thread",
            "Achieved Occupancy", "Theoretical Occupancy")
    lines = [ln for ln in text.splitlines() if ln.startswith('"')]
    if not lines:
        return []
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    out = {}
    for r in rows:
        m = r.get("Metric Name")
        if m in want:
            key = (r.get("ID"), r.get("Kernel Name", "")[:60])
            out.setdefault(key, {})[m] = f"{r.get('Metric Value')} {r.get('Metric Unit') or ''}".strip()
    return [(k, v) for k, v in out.items()]


def cmd_finalize():
    from cuconv.bench import report
    store = load()
    steps, rows = _bench_rows()
    md = ["# cuconv GPU session", ""]
    info = store.get("info") or {}
    devs = info.get("devices") or []
    if store.get("mode") == "gpu":
        for d in devs:
            mem = d.get('total_memory_bytes') or 0
            md.append(f"Device {d.get('index')}: **{d.get('name')}** ({d.get('arch')}, {d.get('sm_count')} SMs, "
                      f"{mem / 2**30:.3g} GiB), driver {info.get('cuda_driver')}, CUDA runtime "
                      f"{info.get('cuda_runtime')}, CuPy {info.get('cupy')}")
    else:
        md.append(f"**NO GPU**: {store.get('no_gpu_reason')}. The bench ran on the CPU emulator (verification "
                  "at a reduced size); nothing was timed.")
    md += ["", f"Started {store.get('started')}; runs: {len(store.get('runs', []))} "
           f"({sum(1 for r in store.get('runs', []) if r['resume'])} with --resume).", "",
           "| step | status | seconds | cap | rc |", "|---|---|---:|---:|---:|"]
    for name in store["order"]:
        s = store["steps"][name]
        md.append(f"| {name} | {s['status']} | {s['seconds']:.0f} | {s['cap']} | {s['rc']} |")
    for name, title in (("launchability", "cuconv check --launchability"),
                        ("first_contact", "pytest -m gpu tests/test_first_contact.py"),
                        ("check", "cuconv check --gpu"), ("pytest", "pytest -m gpu")):
        s = store["steps"].get(name)
        if s:
            body = s["log"].splitlines()
            md += ["", f"## {title} ({s['status']})", "", "```", *body[-60:], "```"]
    for step, d in steps.items():
        md += ["", f"## {step}: `{d['header'].get('command')}`", "", report.markdown_table(d["rows"])]
        notes = report.notes_text(d["rows"])
        if notes:
            md += ["", notes]
    host_path = os.path.join(OUT, "host.json")
    if os.path.exists(host_path):
        from cuconv.bench import host
        with open(host_path) as f:
            md += ["", "## cuconv bench host", "", host.markdown(json.load(f))]
    ncu = store.get("ncu") or {}
    if ncu:
        md += ["", "## ncu (--set basic; full details in ncu.csv)", ""]
        for name, text in ncu.items():
            table = _ncu_table(text)
            md.append(f"### {name}")
            if not table:
                md += ["", "```", *text.splitlines()[-15:], "```"]
            for (kid, kname), metrics in table:
                md.append(f"- launch {kid} `{kname}`: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
        with open(os.path.join(OUT, "ncu.csv"), "w") as f:
            for name, text in ncu.items():
                f.write(f"# step: {name}\n")
                f.write("\n".join(ln for ln in text.splitlines() if ln.startswith('"')) + "\n")
    for name in ("memcheck", "racecheck"):
        s = store["steps"].get(name)
        if s:
            summary = [ln for ln in s["log"].splitlines() if "ERROR SUMMARY" in ln or "RACECHECK SUMMARY" in ln
                       or "error" in ln.lower()][-10:]
            md += ["", f"## compute-sanitizer {name} ({s['status']})", "", "```", *(summary or s["log"].splitlines()[-15:]),
                   "```"]
    with open(os.path.join(OUT, "session.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(OUT, "logs.md"), "w") as f:
        for name in store["order"]:
            s = store["steps"][name]
            f.write(f"## {name} ({s['status']}, rc {s['rc']}, {s['seconds']:.0f} s)\n\n```\n{s['log']}\n```\n\n")
    if rows:
        first = next(iter(steps.values()))["header"]
        report.write_csv(os.path.join(OUT, "bench.csv"), first, rows)
        peaks = None
        try:
            if store.get("mode") == "gpu":
                from cuconv.bench.runner import BenchOptions, Runner
                peaks = Runner(BenchOptions(progress=False)).peaks
            else:
                from cuconv.bench.peaks import published
                peaks = published("h100")
            report.plot_roofline(os.path.join(OUT, "roofline.png"), first, rows, peaks)
        except Exception as exc:  # matplotlib missing: say so in the report
            with open(os.path.join(OUT, "session.md"), "a") as f:
                f.write(f"\nroofline.png not drawn: {type(exc).__name__}: {exc}\n")
    bad = [n for n in store["order"] if store["steps"][n]["status"] != "ok"]
    print(f"gpu_session: {len(store['order']) - len(bad)} step(s) ok" + (f", not ok: {', '.join(bad)}" if bad else ""))


if __name__ == "__main__":
    cmd, args = sys.argv[3], sys.argv[4:]
    globals()["cmd_" + cmd.replace("-", "_")](*args)
PY

helper() { "$PY" "$HELPER" "$OUT" "$WORK" "$@"; }

# --- GPU or not ---------------------------------------------------------------------------------
if "$PY" -c "import sys; from cuconv.backend import gpu_available; sys.exit(0 if gpu_available() else 1)" 2>/dev/null; then
    MODE=gpu; REASON=""
    # A GPU cuconv builds nothing for (below sm_75): said once, then the no-GPU session.
    UNSUPPORTED="$("$PY" -c "from cuconv.backend import gpu_unsupported_reason as r; print(r(0) or '')" 2>&1 | tail -1)"
    if [ -n "$UNSUPPORTED" ]; then
        MODE=no-gpu; REASON="$UNSUPPORTED"
        echo "gpu_session: the GPU here is NOT SUPPORTED ($REASON): running the emulated bench instead"
    fi
else
    MODE=no-gpu
    REASON="$("$PY" -c "from cuconv.device import device_report; print(device_report().errors.get('devices', 'no CUDA device was found'))" 2>&1 | tail -1)"
    echo "gpu_session: NO GPU here ($REASON): running the emulated bench instead (nothing is timed)"
fi
helper init "$MODE" "$REASON" "$RESUME"

# run_step NAME CAP CMD...: run CMD under `timeout` with min(CAP, time left), record the outcome.
run_step() {
    local name="$1" cap="$2"; shift 2
    if [ "$RESUME" = 1 ] && [ "$name" != finalize ] && ! helper should-run "$name"; then
        echo "gpu_session: $name: ok in an earlier run, skipped"
        return 0
    fi
    [ "$RESUME" = 1 ] && cap="$(helper cap "$name" "$cap")"
    local left=$((DEADLINE - SECONDS))
    if [ "$left" -lt 5 ]; then
        echo "gpu_session: $name: not run (session deadline of ${DEADLINE}s reached; use --resume)"
        : > "$WORK/$name.log"
        helper record "$name" not-run -1 0 "$cap" "$WORK/$name.log"
        return 0
    fi
    [ "$cap" -gt "$left" ] && cap="$left"
    echo "gpu_session: $name (cap ${cap}s): $*"
    local t0=$SECONDS rc status
    timeout -k 10 "$cap" "$@" > "$WORK/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status=timeout ;;
        *) status=failed ;;
    esac
    echo "gpu_session: $name: $status (rc $rc, $((SECONDS - t0)) s)"
    helper record "$name" "$status" "$rc" "$((SECONDS - t0))" "$cap" "$WORK/$name.log"
    return 0
}

# bench_step NAME CAP BENCH-ARGS...: a `cuconv bench` step whose JSON is merged into OUTDIR/bench.json.
bench_step() {
    local name="$1" cap="$2"; shift 2
    rm -f "$WORK/$name.json"
    run_step "$name" "$cap" "${CUCONV[@]}" bench "$@" --quiet --json "$WORK/$name.json"
    [ -s "$WORK/$name.json" ] && helper merge-bench "$name" "$WORK/$name.json"
    return 0
}

run_step info 20 sh -c "\"$PY\" -m cuconv info --json > \"$WORK/info.json\" && cat \"$WORK/info.json\""

if [ "$MODE" = no-gpu ]; then
    if [ "$QUICK" = 1 ]; then
        bench_step bench_seed 120 seed -k "§9.5 depthwise 3x3" --roofline h100 --no-resources
    else
        run_step launchability 300 "${CUCONV[@]}" check --launchability all
        bench_step bench_seed 600 seed --roofline h100
        bench_step bench_gemm 600 gemm --roofline h100
        bench_step bench_resnet50 900 resnet50 --roofline h100 --no-resources
        run_step host 120 "${CUCONV[@]}" bench host --json "$OUT/host.json"
    fi
    DEADLINE=$((SECONDS + 120))        # finalize always gets its time
    run_step finalize 120 "$PY" "$HELPER" "$OUT" "$WORK" finalize
    echo "gpu_session: no GPU: emulated results in $OUT (session.md)"
    exit 0
fi

# --- on a GPU ------------------------------------------------------------------------------------
FAST=(--budget 0.1 --noise 1 --verify-gflop 0.25)
SMALL=()
[ "$QUICK" = 1 ] && SMALL=(-k "§9.5 depthwise 3x3")
# An empty array expands as ${A[@]+"${A[@]}"}: plain "${A[@]}" of an empty array is an unbound
# variable under `set -u` on bash < 4.4 (tests/test_gpu_session.py checks every expansion).

# First contact (issue 23): will cuconv's plans launch on this device (its arch, SMs and memory),
# and do the GPU-only paths (caps, cuFFT per stream, cuconv.torch's stream/allocator/DLPack) work?
run_step launchability 40 "${CUCONV[@]}" check --launchability device
FIRST=("$PY" -m pytest "$REPO/tests/test_first_contact.py" -m gpu -q -rfEs -p no:cacheprovider -p no:benchmark)
run_step first_contact 60 "${FIRST[@]}"

cat > "$WORK/prewarm.py" <<'PY'
# Compile every kernel file for device 0, one process per file: CuPy's cache (the launches) and
# cuconv's (the registers/spills columns) are on disk afterwards, so no later step waits on NVRTC.
import concurrent.futures as cf, multiprocessing as mp, time


def one(group):
    import cupy
    from cuconv import compile as c
    from cuconv.registry import file_group
    file, options = group
    t = time.perf_counter()
    cc = int(cupy.cuda.Device(0).compute_capability)
    entries = [e for e in file_group(file, options) if c.runs_on(e, cc)]
    if not entries:
        return file, 0.0, "nothing for this arch"
    e = entries[0]
    c.cupy_function(e, 0, cc)   # the whole file's module (the figures' build), loaded on the device
    return file, time.perf_counter() - t, "ok"


if __name__ == "__main__":
    import cuconv  # noqa: F401  (registers every kernel)
    from cuconv.registry import registered_kernels
    groups = sorted({(e.file, e.options) for e in registered_kernels()})
    with cf.ProcessPoolExecutor(max_workers=min(len(groups), 16), mp_context=mp.get_context("spawn")) as ex:
        for file, dt, what in ex.map(one, groups):
            print(f"{file:<20} {dt:6.1f} s  {what}", flush=True)
PY
run_step prewarm 75 "$PY" "$WORK/prewarm.py"

run_step check 60 "${CUCONV[@]}" check --gpu ${SMALL:+-k gemm_f32_naive}

PYTEST=("$PY" -m pytest "$REPO/tests" -m gpu -q -rfE -p no:cacheprovider -p no:benchmark)
"$PY" -c "import xdist" 2>/dev/null && PYTEST+=(-n 4)
"$PY" -c "import pytest_timeout" 2>/dev/null && PYTEST+=(--timeout 60)
[ "$QUICK" = 1 ] && PYTEST+=(-k "test_timed_gemm_row_against_cublas")
run_step pytest 90 "${PYTEST[@]}"

bench_step bench_seed 25 seed "${FAST[@]}" ${SMALL[@]+"${SMALL[@]}"}
if [ "$QUICK" != 1 ]; then
    bench_step bench_resnet50 35 resnet50 "${FAST[@]}"
    bench_step bench_gemm 25 gemm "${FAST[@]}"
    bench_step bench_resnet50_fp16 30 resnet50 --dtype float16 "${FAST[@]}"
    if "$PY" -c "import cupy, sys; sys.exit(0 if cupy.cuda.Device().compute_capability == '90' else 1)" 2>/dev/null; then
        run_step wgmma_vs_cudnn 40 "$PY" "$REPO/bench/wgmma_vs_mma.py" --quick --convs-only --cudnn --budget 0.5
    fi
    bench_step bench_mobilenet_v2 30 mobilenet_v2 "${FAST[@]}"
    bench_step bench_resnet50_bwd 30 resnet50 --backward "${FAST[@]}"
    bench_step bench_train_lenet5 15 train lenet5 "${FAST[@]}"
    run_step host 20 "${CUCONV[@]}" bench host --json "$OUT/host.json"
fi

if command -v ncu > /dev/null; then
    ncu_step() {
        local name="$1"; shift
        rm -f "$WORK/$name.csv"
        run_step "$name" 25 "${CUCONV[@]}" profile "$@" --no-verify --ncu --run --ncu-output - \
            --ncu-extra "--csv --page details --log-file $WORK/$name.csv"
        helper merge-ncu "$name" "$WORK/$name.csv"
    }
    ncu_step ncu_implicit_gemm --input 32,64,56,56 --weight 128,64,3,3 --padding 1 --algo implicit_gemm
    [ "$QUICK" != 1 ] && ncu_step ncu_gemm --op gemm --mnk 2048,2048,2048
    [ "$QUICK" != 1 ] && ncu_step ncu_tc_conv --input 32,64,56,56 --weight 128,64,3,3 --padding 1 \
        --dtype float16 --algo implicit_gemm_tc
else
    echo "gpu_session: ncu is not on the PATH: no ncu pass"
fi

if command -v compute-sanitizer > /dev/null; then
    for tool in memcheck racecheck; do
        run_step "$tool" 25 compute-sanitizer --tool "$tool" --error-exitcode 99 \
            "${CUCONV[@]}" check --gpu --one-per-file --quiet ${SMALL:+-k gemm_f32_naive}
    done
else
    echo "gpu_session: compute-sanitizer is not on the PATH: no memcheck/racecheck pass"
fi

if [ "$QUICK" != 1 ]; then
    for i in 1 2 3; do
        bench_step "bench_algos_$i" 25 algos --shard "$i/3" --no-baseline --no-resources "${FAST[@]}"
    done
fi

DEADLINE=$((SECONDS + 30))         # finalize always gets its time
run_step finalize 20 "$PY" "$HELPER" "$OUT" "$WORK" finalize
echo "gpu_session: results in $OUT (session.md; session.json says which steps to --resume)"
exit 0

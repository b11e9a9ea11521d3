"""Reports: the header block and a Markdown table for the terminal, JSON and CSV files with
the full schema, model totals, and the roofline plot (PNG, through matplotlib if installed).
"""
from __future__ import annotations

import csv
import json
import math

from .rows import FIELDS, SCHEMA
from .runner import NOT_TIMED, SAME_AS


# ----------------------------------------------------------------- formatting helpers
def si(value, unit: str = "", digits: int = 3) -> str:
    """14.8e9 -> '14.8 G' (decimal prefixes, as the textbook writes MB and GFLOPs)."""
    if value is None:
        return "-"
    if value == 0:
        return f"0 {unit}".strip()
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g} {prefix}{unit}".strip()
    return f"{value:.{digits}g} {unit}".strip()


def _num(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def _verified(row) -> str:
    if row["verified"] is None:
        return "-"
    err = "-" if row["max_rel_error"] is None else f"{row['max_rel_error']:.1e}"
    return ("ok " if row["verified"] else "FAIL ") + err


def _time(row) -> str:
    if row["time_ms"] is None:
        return "-"
    return f"{row['time_ms']:.4g} ({row['time_p20_ms']:.4g}-{row['time_p80_ms']:.4g})"


def _mem(row) -> str:
    theory = si(row["mem_theory_bytes"], "B")
    if row["mem_measured_bytes"] is None:
        return theory
    return f"{theory} / {si(row['mem_measured_bytes'], 'B')}"


def _regs(row) -> str:
    if row["registers"] is None:
        return "-"
    return f"{row['registers']}/{row['spill_bytes']}"


def _pct(row) -> str:
    c, b = row["pct_peak_compute"], row["pct_peak_bandwidth"]
    if c is None and b is None:
        return "-"
    return f"{_num(c, 2)}/{_num(b, 2)}"


# (title, formatter). A column every row leaves empty is dropped from the terminal table.
COLUMNS = (
    ("case", lambda r: r["case"] + (f" x{r['count']}" if (r["count"] or 1) > 1 else "")),
    ("algo", lambda r: r["algo_used"] or r["algo"] or "-"),
    ("kernel", lambda r: r["kernel"] or "-"),
    ("status", lambda r: r["status"] or "-"),
    ("verified (rel err)", _verified),
    ("ms median (p20-p80)", _time),
    ("eff TFLOP/s", lambda r: _num(r["effective_tflops"])),
    ("GB/s", lambda r: _num(r["achieved_gbps"])),
    ("%peak C/BW", _pct),
    ("FLOPs (algo)", lambda r: si(r["flops"]) + ("" if r["algo_flops"] in (None, r["flops"])
                                                  else f" ({si(r['algo_flops'])})")),
    ("bytes min (algo)", lambda r: si(r["min_bytes"], "B") + ("" if r["algo_bytes"] in (None, r["min_bytes"])
                                                               else f" ({si(r['algo_bytes'], 'B')})")),
    ("bound", lambda r: r["bound"] or "-"),
    ("roofline ms", lambda r: _num(r["roofline_time_ms"], 3)),
    ("%roof", lambda r: _num(r["pct_of_roofline"], 3)),
    ("mem theory/meas", _mem),
    ("regs/spill", _regs),
    ("issue ceiling", lambda r: "-" if r["issue_ceiling"] is None else f"{100 * r['issue_ceiling']:.0f}%"),
    ("features", lambda r: r.get("features") or "-"),
    ("vs baseline", lambda r: "-" if r["baseline_ratio"] is None else f"{r['baseline_ratio']:.2f}x"),
    ("throttled", lambda r: "YES" if r["throttled"] else "-"),
)


def _device(row) -> str:
    if row.get("device_name") is None:
        return "-" if row.get("device") is None else str(row["device"])
    return row["device_name"] + ("" if row.get("device") is None else f" #{row['device']}")


def markdown_table(rows: list[dict], device_column: bool = False) -> str:
    """The terminal table; ``device_column``: a first column naming each row's device (merged shards
    from several devices)."""
    columns = ((("device", _device),) if device_column else ()) + COLUMNS
    cells = [[fmt(r) for _, fmt in columns] for r in rows]
    keep = [i for i, (title, _) in enumerate(columns)
            if title in ("case", "status") or any(c[i] != "-" for c in cells)]
    head = [columns[i][0] for i in keep]
    body = [[c[i].replace("|", "/") for i in keep] for c in cells]
    widths = [max(len(h), *(len(b[j]) for b in body)) if body else len(h) for j, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(b, widths)) + " |" for b in body]
    return "\n".join(lines)


def header_text(h: dict, title: str) -> str:
    lines = [f"# cuconv bench: {title}", ""]
    rev = h.get("git_revision") or "not a git checkout"
    lines.append(f"cuconv {h['cuconv']} (git {rev}), Python {h['python']}, NumPy {h['numpy']}, "
                 f"CuPy {h['cupy'] or 'not installed'}, CUDA runtime {h['cuda_runtime'] or 'n/a'}, "
                 f"driver {h['cuda_driver'] or 'n/a'} ({h['nvml_driver'] or 'no NVML'}), NVRTC {h['nvrtc'] or 'n/a'}")
    if h["mode"] == "gpu":
        lines.append(f"Device {h['device_index']}: {h['device']} ({h['arch']}, {h['sm_count']} SMs, "
                     f"L2 {si(h['l2_cache_bytes'], 'B')}), SM clock {h['sm_clock_mhz']} MHz "
                     f"(max {h['sm_clock_max_mhz']}), memory clock {h['mem_clock_mhz']} MHz "
                     f"(max {h['mem_clock_max_mhz']}), power limit {h['power_limit_w']} W")
        t = h["timing"]
        lines.append(f"Timing: CUDA events around the kernels, {t['warmup_runs']}+ warm-up runs, L2 flushed "
                     f"before each run ({'on' if t['flush_l2'] else 'off'}), "
                     + (f"{t['repeats']} runs" if t["repeats"] else
                        f"until {t['noise_target_pct']:.2g}% noise (>= {t['min_repeats']}, <= {t['max_repeats']} "
                        f"runs) or {t['budget_s']:g} s")
                     + "; median with p20-p80.")
    else:
        if str(h["no_gpu_reason"]).startswith("--emulate"):
            lines.append(f"EMULATION ONLY ({h['no_gpu_reason']}).")
        else:
            lines.append(f"NO GPU: {h['no_gpu_reason']}.")
        lines.append("Nothing was timed: every measured column is empty (null in JSON). "
                     f"Each case was {h['verification']}. Theoretical columns are for the full size.")
    if h.get("roofline_device"):
        lines.append(f"Roofline: {h['roofline_device']}: fp32 {h['peak_fp32_tflops']:.4g} TFLOP/s, "
                     f"DRAM {h['peak_dram_gbps']:.4g} GB/s ({h['roofline_source']}).")
    elif h["mode"] != "gpu":
        lines.append("Roofline: none (pass --roofline h100|a100|... for the lower-bound time on a GPU).")
    lines.append(f"Registers and spills: compiled for {h['resource_arch']}." if h["resource_arch"] else
                 "Registers and spills: not compiled (--no-resources).")
    return "\n".join(lines)


def notes_text(rows: list[dict]) -> str:
    """Each distinct note once, with the cases it applies to (the header already says "no GPU";
    a repeated layer's "run once" note stays in the JSON/CSV)."""
    by_note: dict[str, list[str]] = {}
    for r in rows:
        for part in (r["note"] or "").split("; "):
            if part and part != NOT_TIMED and not part.startswith(SAME_AS):
                by_note.setdefault(part, []).append(r["case"])
    if not by_note:
        return ""
    lines = ["", "Notes:"]
    for note, cases in by_note.items():
        who = ", ".join(cases[:4]) + (f" and {len(cases) - 4} more" if len(cases) > 4 else "")
        lines.append(f"- {note} ({who})")
    return "\n".join(lines)


def totals_text(totals: dict) -> str:
    t = totals
    lines = ["", f"Totals for {t['model']} (batch {t['batch']}, {t['layers']} layers, {t['params']:,} parameters):",
             f"- cost model: {si(t['flops'])}FLOPs forward ({si(t['macs'])} MACs); layers with a cuconv kernel "
             f"cover {si(t['kernel_flops'])}FLOPs = {t['kernel_flops_pct']:.4g}% of them",
             f"- verified: {t['verified_layers']} of {t['kernel_layers']} kernel layers"
             + (f", {t['failed_layers']} FAILED" if t["failed_layers"] else "")]
    if t["time_ms"] is not None:
        lines.append(f"- measured: {t['time_ms']:.4g} ms for the kernel layers (sum of medians) = "
                     f"{t['achieved_tflops']:.4g} TFLOP/s effective"
                     + (f"; {t['untimed_kernel_layers']} kernel layers not timed" if t["untimed_kernel_layers"] else ""))
    else:
        lines.append("- measured: nothing (no GPU)")
    if t["roofline_time_ms"] is not None:
        lines.append(f"- roofline lower bound of the kernel layers on {t['roofline_device']}: "
                     f"{t['roofline_time_ms']:.4g} ms")
    return "\n".join(lines)


def model_totals(model, rows: list[dict]) -> dict:
    """Whole-network figures: the cost model's totals against what was measured layer by layer."""
    tot = model.totals()
    kernel_rows = [r for r in rows if r["status"] not in ("no-kernel", "not-built")]
    timed = [r for r in kernel_rows if r["time_ms"] is not None]
    kernel_flops = sum(r["flops"] or 0 for r in kernel_rows)
    time_ms = sum(r["time_ms"] for r in timed) if timed else None
    roof = [r["roofline_time_ms"] for r in kernel_rows]
    return dict(
        model=model.name, batch=model.batch, layers=len(model.layers), params=tot.params, macs=tot.macs,
        flops=tot.flops, kernel_layers=len(kernel_rows), kernel_flops=kernel_flops,
        kernel_flops_pct=100 * kernel_flops / tot.flops if tot.flops else 0.0,
        verified_layers=sum(1 for r in kernel_rows if r["verified"]),
        failed_layers=sum(1 for r in kernel_rows if r["verified"] is False),
        time_ms=time_ms, untimed_kernel_layers=len(kernel_rows) - len(timed),
        achieved_tflops=(sum(r["flops"] for r in timed) / (time_ms * 1e-3) / 1e12) if time_ms else None,
        roofline_time_ms=sum(roof) if roof and all(v is not None for v in roof) else None,
        roofline_device=next((r["roofline_device"] for r in kernel_rows if r["roofline_device"]), None),
        activation_bytes=tot.activation_bytes, param_bytes=tot.param_bytes)


def train_totals(model, cases, rows: list[dict]) -> dict:
    """A training step (``cuconv bench train``): the cost model's forward and §9.8 backward
    totals against the rows' sums by pass (``case.grad_pass``), per layer and for the step.
    The layers that read only the network input have no dx row (nothing upstream takes it),
    so the step is the cost model's training FLOPs less their ``backward_data_flops``."""
    tot = model.totals()
    first = [lay for lay in model.layers if tuple(lay.inputs) == ("input",)]
    layers = {lay.name: dict(layer=lay.name, type=lay.type, forward=0, data=0, weight=0, rows=0,
                             kernel_rows=0, verified=0, failed=0, time_ms=0.0, untimed=0) for lay in model.layers}
    step = {"forward": 0, "data": 0, "weight": 0}
    for case, r in zip(cases, rows):
        flops = r["flops"] or 0
        step[case.grad_pass] += flops
        per = layers[case.layer]
        per[case.grad_pass] += flops
        per["rows"] += 1
        if r["status"] in ("no-kernel", "not-built"):
            continue
        per["kernel_rows"] += 1
        per["verified"] += bool(r["verified"])
        per["failed"] += r["verified"] is False or r["status"] in ("verify-failed", "error")
        if r["time_ms"] is None:
            per["untimed"] += 1
        else:
            per["time_ms"] += r["time_ms"]
    for per in layers.values():
        per["total"] = per["forward"] + per["data"] + per["weight"]
        if per["untimed"] or not per["kernel_rows"]:
            per["time_ms"] = None
    kernel = [r for r in rows if r["status"] not in ("no-kernel", "not-built")]
    timed = [r for r in kernel if r["time_ms"] is not None]
    total = sum(step.values())
    kernel_flops = sum(r["flops"] or 0 for r in kernel)
    time_ms = sum(r["time_ms"] for r in timed) if timed else None
    return dict(
        model=model.name, batch=model.batch, layers=len(model.layers), params=tot.params, rows=len(rows),
        cost_model=dict(forward=tot.flops, backward_data=tot.backward_data_flops,
                        backward_weight=tot.backward_weight_flops, training=tot.training_flops),
        no_data_gradient=dict(layers=[lay.name for lay in first],
                              flops=sum(lay.cost.backward_data_flops for lay in first)),
        step=dict(forward=step["forward"], backward_data=step["data"], backward_weight=step["weight"], total=total),
        kernel_rows=len(kernel), kernel_flops=kernel_flops, kernel_flops_pct=100 * kernel_flops / total if total else 0.0,
        verified_rows=sum(1 for r in kernel if r["verified"]),
        failed_rows=sum(1 for r in kernel if r["verified"] is False or r["status"] in ("verify-failed", "error")),
        time_ms=time_ms, untimed_kernel_rows=len(kernel) - len(timed),
        achieved_tflops=(sum(r["flops"] for r in timed) / (time_ms * 1e-3) / 1e12) if time_ms else None,
        per_layer=list(layers.values()))


def train_layer_table(totals: dict) -> str:
    """One line per layer: its forward, dx and dW FLOPs (cost model), kernel rows verified, time."""
    head = ["layer", "type", "forward FLOPs", "dX FLOPs", "dW+db FLOPs", "step FLOPs", "verified", "ms (sum)"]
    body = []
    for per in totals["per_layer"]:
        verified = (f"{per['verified']}/{per['kernel_rows']}" + (f" ({per['failed']} FAILED)" if per["failed"] else "")
                    if per["kernel_rows"] else "no kernel")
        body.append([per["layer"], per["type"], si(per["forward"]), si(per["data"]), si(per["weight"]),
                     si(per["total"]), verified, "-" if per["time_ms"] is None else f"{per['time_ms']:.4g}"])
    widths = [max(len(h), *(len(b[j]) for b in body)) if body else len(h) for j, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(b, widths)) + " |" for b in body]
    return "\n".join(lines)


def train_text(totals: dict) -> str:
    t, c, s, skip = totals, totals["cost_model"], totals["step"], totals["no_data_gradient"]
    lines = ["", f"Training step of {t['model']} (batch {t['batch']}, {t['layers']} layers, {t['params']:,} parameters, "
                 f"{t['rows']} rows):",
             f"- cost model: {si(c['forward'])}FLOPs forward + {si(c['backward_data'])}FLOPs backward data (§9.8 dX, "
             f"2·MACs for conv and FC) + {si(c['backward_weight'])}FLOPs backward weight (dW, db) = "
             f"{si(c['training'])}FLOPs",
             f"- not computed: the data gradient of {', '.join(skip['layers']) or 'no layer'} (reads only the network "
             f"input), {si(skip['flops'])}FLOPs",
             f"- this step: {si(s['forward'])}FLOPs forward + {si(s['backward_data'])}FLOPs dX + "
             f"{si(s['backward_weight'])}FLOPs dW/db = {si(s['total'])}FLOPs ({s['total']:,}); cuconv kernels run "
             f"{si(t['kernel_flops'])}FLOPs = {t['kernel_flops_pct']:.4g}% of it (the rest: layers without a kernel, "
             "theory rows)",
             f"- verified: {t['verified_rows']} of {t['kernel_rows']} kernel rows"
             + (f", {t['failed_rows']} FAILED" if t["failed_rows"] else "")]
    if t["time_ms"] is not None:
        lines.append(f"- measured: {t['time_ms']:.4g} ms for the kernel rows (sum of medians) = "
                     f"{t['achieved_tflops']:.4g} TFLOP/s effective"
                     + (f"; {t['untimed_kernel_rows']} kernel rows not timed" if t["untimed_kernel_rows"] else ""))
    else:
        lines.append("- measured: nothing (no GPU)")
    return "\n".join(lines)


# ----------------------------------------------------------------- files
def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def to_json(header: dict, rows: list[dict], totals: dict | None = None) -> dict:
    return {"schema": SCHEMA, "header": header,
            "rows": [{k: _jsonable(r[k]) for k in FIELDS} for r in rows],
            "totals": totals}


def write_json(path, header: dict, rows: list[dict], totals: dict | None = None) -> None:
    with open(path, "w") as f:
        json.dump(to_json(header, rows, totals), f, indent=1, allow_nan=False)
        f.write("\n")


def csv_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def write_csv(path, header: dict, rows: list[dict]) -> None:
    """``# key: value`` header lines (pandas: ``read_csv(path, comment='#')``), then the rows."""
    with open(path, "w", newline="") as f:
        for k, v in header.items():
            f.write(f"# {k}: {csv_cell(v)}".replace("\n", " ") + "\n")
        w = csv.writer(f)
        w.writerow(FIELDS)
        for r in rows:
            w.writerow([csv_cell(r[k]) for k in FIELDS])


# ----------------------------------------------------------------- merging shards
class MergeError(ValueError):
    """Shards that cannot be merged into one table (the message says why)."""


def merge_shards(docs: list[dict], names: list[str]) -> tuple[dict, list[dict], bool]:
    """(header, rows, several_devices) of the JSON files of ``cuconv bench ... --shard I/N`` runs
    (``docs``, read from the files ``names``): MergeError unless every shard of 1..N is there once
    and all come from the same suite selection, case count and cuconv revision. The rows come back
    in the suite's order (shard I holds cases I-1, I-1+N, ...); each names its device
    (``device_name``, with the host when the shards come from several machines)."""
    if len(docs) < 2:
        raise MergeError("merge takes the JSON files of at least two shards")
    heads = []
    for doc, name in zip(docs, names):
        h = doc.get("header") or {}
        if doc.get("schema") != SCHEMA or not h.get("shard") or h.get("selection") is None:
            raise MergeError(f"{name} is not the --json of a `cuconv bench ... --shard I/N` run (schema {SCHEMA} with "
                             f"header.shard and header.selection)")
        if h.get("devices"):
            raise MergeError(f"{name} ran several devices (--devices); merge takes one device per shard: run each "
                             f"shard on its own GPU with --device")
        heads.append(h)
    first, name0 = heads[0], names[0]
    for h, name in zip(heads[1:], names[1:]):
        for key, what in (("selection", "suite selection (targets and options)"), ("cases_in_suite", "case count"),
                          ("cuconv", "cuconv version"), ("git_revision", "cuconv revision")):
            if h.get(key) != first.get(key):
                raise MergeError(f"{name} and {name0} differ in their {what}: {h.get(key)!r} vs {first.get(key)!r}")
    parts = [tuple(int(v) for v in h["shard"].split("/")) for h in heads]
    n = parts[0][1]
    if any(p[1] != n for p in parts):
        raise MergeError(f"the shards split the suite differently: {', '.join(h['shard'] for h in heads)}")
    index = sorted(p[0] for p in parts)
    if index != list(range(1, n + 1)):
        missing = sorted(set(range(1, n + 1)) - set(index))
        twice = sorted({i for i in index if index.count(i) > 1})
        raise MergeError(f"shards of {n}: " + "; ".join(filter(None, [
            f"missing {', '.join(f'{i}/{n}' for i in missing)}" if missing else "",
            f"given twice {', '.join(f'{i}/{n}' for i in twice)}" if twice else ""])))
    total = int(first["cases_in_suite"])
    by_shard = {}
    for (i, _), doc, h, name in zip(parts, docs, heads, names):
        want = len(range(i - 1, total, n))
        if len(doc["rows"]) != want:
            raise MergeError(f"{name} (shard {i}/{n}) has {len(doc['rows'])} rows, its share of the {total} cases is "
                             f"{want}")
        by_shard[i] = (doc["rows"], h)
    hosts = {h.get("host") for h in heads}
    devices = {(h.get("host"), h.get("device_index"), h.get("device")) for h in heads}
    rows = []
    for k in range(-(-total // n)):
        for i in range(1, n + 1):
            shard_rows, h = by_shard[i]
            if k < len(shard_rows):
                r = dict(shard_rows[k])
                name = r.get("device_name") or h.get("device")
                if name and len(hosts) > 1:
                    name = f"{name} @{h.get('host')}"
                r["device_name"] = name
                rows.append(r)
    header = dict(first, shard=None, started=min(h.get("started") or "" for h in heads),
                  shards=[dict(file=nm, shard=h["shard"], host=h.get("host"), device=h.get("device"),
                               device_index=h.get("device_index"), command=h.get("command"))
                          for nm, h in zip(names, heads)])
    if len(devices) > 1:
        header["device"] = " | ".join(sorted({str(h.get("device")) for h in heads}))
    return header, rows, len(devices) > 1


# ----------------------------------------------------------------- roofline plot
def require_matplotlib():
    """matplotlib's pyplot with the file-only backend, or ImportError saying how to install it."""
    try:
        import matplotlib  # noqa: PLC0415
    except ImportError:
        raise ImportError("--plot needs matplotlib, which is not installed: pip install 'cuconv[plot]' "
                          "(or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    return plt


def plot_roofline(path, header: dict, rows: list[dict], peaks=None) -> int:
    """Each row a point (measured FLOP/s, or the roofline bound when nothing was measured) at its
    arithmetic intensity, the device's roofs drawn and labelled. Returns the points drawn."""
    plt = require_matplotlib()
    points = []
    for r in rows:
        if not r["intensity"] or not r["algo_flops"]:
            continue
        if r["time_ms"]:
            points.append((r["intensity"], r["algo_flops"] / (r["time_ms"] * 1e-3), r["case"], "measured"))
        elif r["roofline_time_ms"]:
            points.append((r["intensity"], r["algo_flops"] / (r["roofline_time_ms"] * 1e-3), r["case"], "bound"))
    fig, ax = plt.subplots(figsize=(10, 6.5))
    xs = [p[0] for p in points] or [1.0]
    lo, hi = min(xs) / 4, max(xs) * 4
    if peaks is not None:
        bw = peaks.dram_bytes_per_s
        roofs = [(name, peak) for name, peak in (("fp32", peaks.fp32_flops), ("tf32 tensor", peaks.tf32_tensor_flops),
                                                  ("fp16 tensor", peaks.fp16_tensor_flops)) if peak]
        lo = min(lo, peaks.ridge_flops_per_byte / 8)
        hi = max(hi, 2 * max(peak for _, peak in roofs) / bw)
        for i, (name, peak) in enumerate(roofs):
            ridge = peak / bw
            ax.plot([lo, ridge, hi], [bw * lo, peak, peak], color="black" if i == 0 else "grey",
                    linestyle="-" if i == 0 else "--", linewidth=1.2)
            ax.annotate(f"{name} {peak / 1e12:.4g} TFLOP/s", (hi, peak), ha="right", va="bottom", fontsize=8)
        ax.annotate(f"DRAM {bw / 1e9:.4g} GB/s", (lo, bw * lo), ha="left", va="bottom", fontsize=8, rotation=30)
    for kind, marker, color in (("measured", "o", "tab:blue"), ("bound", "x", "tab:orange")):
        sel = [p for p in points if p[3] == kind]
        if sel:
            ax.scatter([p[0] for p in sel], [p[1] for p in sel], marker=marker, color=color, zorder=3,
                       label="measured (algorithm FLOPs / median time)" if kind == "measured"
                       else "roofline bound (not measured)")
            for x, y, name, _ in sel:
                ax.annotate(name, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("arithmetic intensity (algorithm FLOPs / algorithm bytes)")
    ax.set_ylabel("FLOP/s")
    title = header.get("device") or "no GPU"
    ax.set_title(f"cuconv roofline: {title}" + (f" (roofs: {peaks.name})" if peaks else ""), fontsize=10)
    if points:
        ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return len(points)

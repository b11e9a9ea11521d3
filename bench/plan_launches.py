"""Dump what every op call launches, for a broad set of problems, on the record backend.

    PYTHONPATH=src python3 bench/plan_launches.py dump launches.json
    PYTHONPATH=src python3 bench/plan_launches.py compare old.json new.json [--renames docs/label_renames.md]

``dump`` runs the public ops (``cuconv.conv2d`` with every algorithm that can run each problem,
``depthwise_conv2d``, ``separable_conv2d``, ``conv_transpose2d``, the pools, ``gemm``, ``im2col``
and every ``cuconv.grad`` function with each gradient algorithm) on the record backend and
writes, per call, each launch's kernel label, grid, block, dynamic shared memory and arguments
(arrays as their shape and dtype — a workspace view's length shows its offset —, scalars as
values); a call that raises is recorded with its exception type. ``compare`` reports every call
whose launches differ, after renaming the old labels by the table in ``--renames`` (a markdown
table whose first two columns are the old and the new label): "every plan's launches unchanged
except where a name changed".
"""
from __future__ import annotations

import itertools
import json
import re
import sys

import numpy as np

import cuconv
from cuconv import grad as G

# (x NCHW, w KCRS, stride, padding, dilation, groups)
CONV = [
    ((2, 3, 9, 7), (10, 3, 3, 3), 2, 1, 1, 1),
    ((1, 13, 11, 10), (9, 13, 3, 3), 3, 1, 1, 1),
    ((1, 16, 9, 9), (6, 8, 3, 3), 1, 2, 2, 2),
    ((1, 3, 13, 11), (8, 3, 7, 7), 2, 3, 1, 1),
    ((2, 20, 7, 6), (9, 20, 1, 1), 1, 0, 1, 1),
    ((1, 12, 9, 9), (5, 12, 1, 1), 2, 0, 1, 1),
    ((1, 9, 7, 7), (5, 9, 3, 3), 1, 3, 1, 1),
    ((1, 70, 5, 5), (12, 70, 3, 3), 1, 1, 1, 1),
    ((2, 6, 9, 7), (12, 1, 3, 3), 2, 1, 1, 6),
    ((1, 4, 11, 9), (4, 1, 5, 5), 1, 2, 2, 4),
    ((1, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1),
    ((8, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1),
    ((1, 64, 56, 56), (256, 64, 1, 1), 1, 0, 1, 1),
    ((1, 128, 56, 56), (128, 128, 3, 3), 2, 1, 1, 1),
    ((1, 144, 56, 56), (144, 1, 3, 3), 1, 1, 1, 144),
    ((1, 144, 56, 56), (144, 1, 5, 5), 2, 2, 1, 144),
    ((4, 8, 16, 16), (8, 8, 3, 3), 1, 1, 1, 1),
    ((2, 16, 9, 8), (24, 16, 3, 3), 1, 1, 1, 1),
    ((1, 64, 56, 56), (64, 64, 7, 7), 1, 3, 1, 1),
    ((1, 128, 56, 56), (128, 4, 3, 3), 1, 1, 1, 32),
    ((1, 3, 224, 224), (64, 3, 7, 7), 2, 3, 1, 1),
    ((1, 4, 8, 9), (6, 4, 4, 2), 1, "same", 1, 1),
]
DTYPES = ("float32", "float64", "float16", "bfloat16")
FORWARD_ALGOS = ("auto", "direct", "im2col_gemm", "pointwise", "implicit_gemm", "winograd_f2x2_3x3",
                 "winograd_f4x4_3x3", "winograd_fused_f2x2_3x3", "fft", "fft_tiling", "depthwise",
                 "implicit_gemm_tc", "implicit_gemm_tc_simple", "implicit_gemm_tf32", "implicit_gemm_wgmma")
GRAD_ALGOS = ("auto", "direct", "implicit_gemm", "depthwise", "implicit_gemm_tc", "implicit_gemm_tc_simple")
TRANSPOSED = [((2, 4, 5, 7), (4, 3, 3, 3), 2, 1, 1, 1, 1), ((1, 6, 4, 5), (6, 2, 4, 4), 3, 1, 2, 3, 1),
              ((2, 3, 5, 5), (3, 4, 3, 3), 1, 2, 0, 1, 2), ((1, 16, 9, 9), (16, 8, 3, 3), 2, 1, 1, 1, 1)]
POOLS = [((2, 3, 7, 9), 3, 2, 1, 1, False), ((1, 3, 9, 7), 3, 1, 1, 1, True),
         ((1, 2, 7, 9), (3, 2), (2, 1), (1, 0), (2, 1), True), ((1, 64, 112, 112), 3, 2, 1, 1, False)]


def _arg(a):
    if isinstance(a, np.ndarray):
        return ["array", list(a.shape), a.dtype.name]
    if isinstance(a, np.generic):
        return [a.dtype.name, a.item()]
    return repr(a)


def _record(rec, fn):
    rec.clear()
    try:
        fn()
    except Exception as exc:    # noqa: BLE001 - a refusal is part of what is compared
        return {"error": type(exc).__name__}
    return {"launches": [[r.kernel, list(r.grid), list(r.block), int(r.shared_mem), [_arg(a) for a in r.args]]
                         for r in rec.launches]}


def _arrays(rng, *shapes, dtype):
    dt = cuconv.problem.numpy_dtype(dtype)
    return [rng.uniform(-1, 1, s).astype(dt) for s in shapes]


def dump(path: str) -> None:
    rng = np.random.default_rng(0)
    out = {}
    with cuconv.backend("record") as rec:
        for (xs, ws, st, pd, dl, g), dtype in itertools.product(CONV, DTYPES):
            x, w = _arrays(rng, xs, ws, dtype=dtype)
            b = _arrays(rng, (ws[0],), dtype=dtype)[0]
            try:
                y = cuconv.plan_conv2d(x, w, None, st, pd, dl, g, algo="direct").outputs[0].shape
            except Exception:   # noqa: BLE001
                y = cuconv.plan_conv2d(x, w, None, st, pd, dl, g).outputs[0].shape
            dy = _arrays(rng, y, dtype=dtype)[0]
            tag = f"{xs}{ws} s{st} p{pd} d{dl} g{g} {dtype}"
            for algo in FORWARD_ALGOS:
                out[f"conv2d {tag} {algo}"] = _record(rec, lambda: cuconv.conv2d(
                    x, w, b, st, pd, dl, g, algo=algo, activation="relu"))
                out[f"conv2d nhwc {tag} {algo}"] = _record(rec, lambda: cuconv.conv2d(
                    np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.ascontiguousarray(w.transpose(0, 2, 3, 1)),
                    None, st, pd, dl, g, algo=algo, layout="NHWC"))
            out[f"conv2d allow_tf32 {tag}"] = _record(rec, lambda: cuconv.conv2d(x, w, None, st, pd, dl, g,
                                                                                  allow_tf32=True))
            out[f"conv2d ws0 {tag}"] = _record(rec, lambda: cuconv.conv2d(x, w, None, st, pd, dl, g,
                                                                           max_workspace_bytes=0))
            if g == xs[1] and g > 1:
                out[f"depthwise_conv2d {tag}"] = _record(rec, lambda: cuconv.depthwise_conv2d(x, w, b, st, pd, dl))
            for algo in GRAD_ALGOS:
                out[f"conv2d_input {tag} {algo}"] = _record(rec, lambda: G.conv2d_input(xs, w, dy, st, pd, dl, g,
                                                                                        algo=algo))
                out[f"conv2d_weight {tag} {algo}"] = _record(rec, lambda: G.conv2d_weight(x, ws, dy, st, pd, dl, g,
                                                                                          algo=algo))
                out[f"conv2d_weight nondet {tag} {algo}"] = _record(rec, lambda: G.conv2d_weight(
                    x, ws, dy, st, pd, dl, g, algo=algo, deterministic=False))
                out[f"conv2d_backward {tag} {algo}"] = _record(rec, lambda: G.conv2d_backward(
                    x, w, dy, st, pd, dl, g, algo=algo, weight_algo=algo))
            out[f"conv2d_weight ws1k {tag}"] = _record(rec, lambda: G.conv2d_weight(
                x, ws, dy, st, pd, dl, g, max_workspace_bytes=1024))
            for mask in ((True, False, False), (False, True, False), (False, False, True), (True, False, True)):
                out[f"conv2d_backward {mask} {tag}"] = _record(rec, lambda: G.conv2d_backward(
                    x, w, dy, st, pd, dl, g, output_mask=mask))
            out[f"conv2d_bias {tag}"] = _record(rec, lambda: G.conv2d_bias(dy))
            out[f"conv2d_backward unbatched {tag}"] = _record(rec, lambda: G.conv2d_backward(
                x[0], w, dy[0], st, pd, dl, g))
        for (xs, ws, st, pd, op, g, dl), dtype in itertools.product(TRANSPOSED, ("float32", "float64", "float16")):
            x, w = _arrays(rng, xs, ws, dtype=dtype)
            tag = f"{xs}{ws} s{st} p{pd} op{op} g{g} d{dl} {dtype}"
            out[f"conv_transpose2d {tag}"] = _record(rec, lambda: cuconv.conv_transpose2d(x, w, None, st, pd, op, g, dl))
            tp = cuconv.ConvTransposeProblem.from_shapes(xs, ws, st, pd, op, g, dl, dtype)
            dy = _arrays(rng, tp.output_shape, dtype=dtype)[0]
            for algo in ("auto", "direct", "implicit_gemm"):
                out[f"conv_transpose2d_input {tag} {algo}"] = _record(rec, lambda: G.conv_transpose2d_input(
                    xs, w, dy, st, pd, op, g, dl, algo=algo))
                out[f"conv_transpose2d_weight {tag} {algo}"] = _record(rec, lambda: G.conv_transpose2d_weight(
                    x, ws, dy, st, pd, op, g, dl, algo=algo))
        for (xs, k, st, pd, dl, ceil), dtype in itertools.product(POOLS, ("float32", "float64")):
            x = _arrays(rng, xs, dtype=dtype)[0]
            tag = f"{xs} k{k} s{st} p{pd} d{dl} ceil{ceil} {dtype}"
            out[f"max_pool2d {tag}"] = _record(rec, lambda: cuconv.max_pool2d(x, k, st, pd, dl, ceil))
            y, idx = cuconv.max_pool2d(x, k, st, pd, dl, ceil, return_indices=True)
            out[f"max_pool2d indices {tag}"] = _record(rec, lambda: cuconv.max_pool2d(x, k, st, pd, dl, ceil,
                                                                                      return_indices=True))
            out[f"grad.max_pool2d gather {tag}"] = _record(rec, lambda: G.max_pool2d(y, idx, xs, k, st, pd, dl, ceil))
            out[f"grad.max_pool2d scatter {tag}"] = _record(rec, lambda: G.max_pool2d(y, idx, xs))
            if dl == 1:
                ya = cuconv.avg_pool2d(x, k, st, pd, ceil)
                out[f"avg_pool2d {tag}"] = _record(rec, lambda: cuconv.avg_pool2d(x, k, st, pd, ceil, False))
                out[f"grad.avg_pool2d {tag}"] = _record(rec, lambda: G.avg_pool2d(ya, xs, k, st, pd, ceil, False))
            out[f"global_avg_pool2d {tag}"] = _record(rec, lambda: cuconv.global_avg_pool2d(x))
            out[f"grad.global_avg_pool2d {tag}"] = _record(rec, lambda: G.global_avg_pool2d(
                x[:, :, :1, :1].copy(), xs))
            out[f"im2col {tag}"] = _record(rec, lambda: cuconv.im2col(x, 3, 1, 1))
        for (m, n, k), dtype in itertools.product(((64, 3136, 576), (1000, 1, 2048), (33, 17, 9)),
                                                  ("float32", "float64", "float16")):
            a, bb = _arrays(rng, (m, k), (k, n), dtype=dtype)
            out[f"gemm {m}x{n}x{k} {dtype}"] = _record(rec, lambda: cuconv.gemm(a, bb))
        separables = (((2, 8, 9, 9), 8, 16, 3, 1), ((1, 32, 28, 28), 32, 64, 3, 2), ((1, 6, 7, 7), 6, 5, 5, 1))
        for xs, C, K, k, st in separables:
            x, wd, wp = _arrays(rng, xs, (C, 1, k, k), (K, C, 1, 1), dtype="float32")
            for fused in (None, False):
                out[f"separable_conv2d {xs} {K} k{k} s{st} fused={fused}"] = _record(
                    rec, lambda: cuconv.separable_conv2d(x, wd, wp, None, None, st, k // 2, fused=fused))
    with open(path, "w") as f:
        json.dump(out, f, indent=0, sort_keys=True)
    print(f"{len(out)} calls, {sum(len(v.get('launches', ())) for v in out.values())} launches, "
          f"{sum('error' in v for v in out.values())} refused -> {path}")


def renames(path: str | None) -> dict:
    """Old label -> new label from the first two columns of a markdown table (`code` allowed)."""
    table = {}
    if path:
        for line in open(path):
            cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
            if len(cells) >= 2 and re.fullmatch(r"[A-Za-z0-9_]+", cells[0]) and re.fullmatch(r"[A-Za-z0-9_]+", cells[1]):
                table[cells[0]] = cells[1]
    return table


def _renamed(label: str, table: dict) -> str:
    if label in table:
        return table[label]
    # a label pattern row: "fft_*" -> "fft_conv_*" style prefixes
    for old, new in table.items():
        if old.endswith("_") and label.startswith(old):
            return new + label[len(old):]
    return label


def compare(old_path: str, new_path: str, renames_path: str | None = None) -> int:
    """Print every call whose launches differ (old labels renamed first) or that ran on one side
    and was refused on the other; refusals on both sides are equal when their exception types
    are (PlanError counts as the ValueError it is), else counted by (old, new) type. Returns 1
    when any launches differ or a call changed between running and refused."""
    old, new = json.load(open(old_path)), json.load(open(new_path))
    table = renames(renames_path)
    differ, retyped = [], {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a is None or b is None:
            differ.append(f"{key}: only in {'new' if a is None else 'old'}")
            continue
        if "error" in a and "error" in b:
            types = tuple("ValueError" if t == "PlanError" else t for t in (a["error"], b["error"]))
            if types[0] != types[1]:
                retyped[types] = retyped.get(types, 0) + 1
            continue
        if "launches" in a:
            a = {"launches": [[_renamed(ln[0], table), *ln[1:]] for ln in a["launches"]]}
        if a != b:
            differ.append(f"{key}:\n  old {json.dumps(a)[:600]}\n  new {json.dumps(b)[:600]}")
    used = {ln[0] for v in old.values() for ln in v.get("launches", ())}
    ran = sum("launches" in v for v in old.values())
    print(f"{len(old)} old calls ({ran} ran, {len(old) - ran} refused), {len(new)} new; {len(differ)} differ "
          f"in their launches or in running at all ({len(used & set(table))} of the {len(used)} labels launched "
          f"were renamed)")
    for (t0, t1), n in sorted(retyped.items()):
        print(f"{n} calls refused on both sides with another exception type: {t0} -> {t1}")
    for d in differ:
        print(d)
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "dump":
        dump(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "compare":
        r = sys.argv[sys.argv.index("--renames") + 1] if "--renames" in sys.argv else None
        sys.exit(compare(sys.argv[2], sys.argv[3], r))
    else:
        print(__doc__)
        sys.exit(2)

"""`cuconv cost`: the theoretical cost of a landmark CNN, layer by layer (textbook §8–§11).

    cuconv cost resnet50 [--batch N] [--resolution R|HxW] [--dtype fp32|fp16|bf16] [--json]
    cuconv cost mobilenet_v1 -o alpha=0.75 -o rho=0.857
    cuconv cost --compare        # the §11.7 grand comparison, computed, next to the book's figures
    cuconv cost --list

Pure Python on the layer lists of cuconv.models: no GPU and no CuPy on this path.
"""
from __future__ import annotations

import json
import sys
from fractions import Fraction

from .. import models

CONVENTIONS = {
    "params": "learnable parameters: weights, biases, BatchNorm gamma/beta (running statistics excluded)",
    "macs": "multiply-accumulates of conv and linear layers, bias excluded "
            "(torchvision's and fvcore's 'GFLOPS', what most papers call FLOPs)",
    "flops": "every layer by the textbook's §9 formulas: conv/linear 2*MACs, max pool k^2-1 and avg pool k^2 "
             "per output, global avg pool H*W per channel, batch norm 5 and add 1 per element, "
             "activations per cuconv.cost.ACTIVATION_FLOPS",
    "activation_bytes": "each layer's output at the model dtype (views such as flatten count 0); "
                        "their sum is the book's training activation memory",
    "rf": "theoretical receptive field on the input, §10.1 (max over branches)",
    "training_memory_bytes": "params + grads + Adam m and v (all at the model dtype: the book's 16P at fp32) "
                             "+ activations + max-pool indices (4 bytes each)",
}

# §11.7 as printed: label, model, options, book params, book FLOPs, book top-1 %, book FLOPs/param.
BOOK_TABLE = [
    ("LeNet-5", "lenet5", {}, 61e3, 0.7e6, None, 11.5),
    ("AlexNet", "alexnet_227", {}, 62.4e6, 2.27e9, 63.3, 36.4),
    ("VGG-16", "vgg16", {}, 138.4e6, 15.5e9, 74.4, 112),
    ("GoogLeNet", "googlenet", {}, 6.8e6, 1.5e9, 74.8, 221),
    ("ResNet-50", "resnet50", {}, 25.6e6, 3.8e9, 76.1, 148),
    ("ResNet-50 (paper v1)", "resnet50", {"variant": "v1"}, 25.6e6, 3.8e9, 76.1, 148),
    ("MobileNetV2", "mobilenet_v2", {}, 3.4e6, 300e6, 72.0, 88),
    ("EfficientNet-B0", "efficientnet_b0", {}, 5.3e6, 390e6, 77.1, 74),
    ("EfficientNet-B7", "efficientnet_b7", {}, 66e6, 37e9, 84.3, 561),
]
# A printed figure "matches" one of ours when within this relative distance (it is rounded).
BOOK_MATCH_TOLERANCE = 0.05

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "float32": "float32",
          "float16": "float16", "bfloat16": "bfloat16"}


def add_arguments(parser) -> None:
    parser.add_argument("model", nargs="?", help="model name (see --list)")
    parser.add_argument("--batch", type=int, default=1, help="images per batch (default 1)")
    parser.add_argument("--resolution", default=None,
                        help="input size R or HxW (default: the model's own, e.g. 224)")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="element type for bytes")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                        help="model option, e.g. alpha=0.75, rho=0.714, width_mult=1.4, variant=v1")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--compare", action="store_true", help="the §11.7 grand comparison table, computed")
    parser.add_argument("--list", action="store_true", help="list the models")


# ------------------------------------------------------------------ formatting
def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}{unit}"
    return f"{n:g}{unit}" if isinstance(n, float) else f"{n}{unit}"


def _human_bytes(n: int) -> str:
    return _human(n, "B")


def _num(v) -> int | float:
    """JSON-safe number (receptive-field jumps of transposed convs are fractions)."""
    f = Fraction(v)
    return int(f) if f.denominator == 1 else float(f)


def _shape_text(shape) -> str:
    return "x".join(str(d) for d in shape[1:]) or "1"


def _parse_resolution(text):
    if text is None:
        return None
    t = str(text).lower().replace("×", "x")
    try:
        parts = [int(p) for p in t.split("x")]
    except ValueError:
        raise ValueError(f"--resolution must be R or HxW, got {text!r}") from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return tuple(parts)
    raise ValueError(f"--resolution must be R or HxW, got {text!r}")


def _parse_options(items) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option must be KEY=VALUE, got {item!r}")
        for conv in (int, float):
            try:
                out[key] = conv(value)
                break
            except ValueError:
                continue
        else:
            out[key] = value
    return out


def _table(headers, rows, align) -> list[str]:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(str(c).rjust(w) if a == ">" else str(c).ljust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()
    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


# ------------------------------------------------------------------ model report
def model_report(model) -> dict:
    """The JSON document of ``cuconv cost MODEL --json``."""
    totals = model.totals()
    layers = []
    for lay in model.layers:
        c = lay.cost
        entry = {
            "name": lay.name, "type": lay.type, "inputs": list(lay.inputs),
            "input_shapes": [list(s) for s in c.input_shapes], "output_shape": list(c.output_shape),
            "params": c.params, "macs": c.macs, "flops": c.flops,
            "backward_data_flops": c.backward_data_flops, "backward_weight_flops": c.backward_weight_flops,
            "activation_bytes": c.activation_bytes, "input_cache_bytes": c.input_cache_bytes,
            "im2col_bytes": c.im2col_bytes, "index_bytes": c.index_bytes,
            "rf": [_num(v) for v in lay.rf], "jump": [_num(v) for v in lay.jump],
        }
        if c.problem is not None:
            p = c.problem
            entry["problem"] = {
                "N": p.N, "C": p.C, "H": p.H, "W": p.W, "K": p.K, "R": p.R, "S": p.S, "P": p.P, "Q": p.Q,
                "stride": [p.stride_h, p.stride_w], "padding": [p.pad_h, p.pad_w, p.pad_bottom, p.pad_right],
                "dilation": [p.dilation_h, p.dilation_w], "groups": p.groups, "dtype": p.dtype}
        if c.winograd:
            entry["winograd"] = [{"algo": w.name, "tiles": w.tiles, "multiplications": w.multiplications,
                                  "direct_multiplications": w.direct_multiplications,
                                  "transform_flops": w.transform_flops, "workspace_bytes": w.workspace_bytes,
                                  "filter_bytes": w.filter_bytes} for w in c.winograd]
        if c.fft:
            entry["fft"] = [{"algo": f.algo, "fft_size": [f.Lh, f.Lw], "tiles": f.tiles, "flops": f.flops,
                             "transform_flops": f.transform_flops, "product_flops": f.product_flops,
                             "workspace_bytes": f.workspace_bytes, "filter_bytes": f.filter_bytes} for f in c.fft]
        layers.append(entry)
    return {"model": model.name, "source": model.source, "batch": model.batch,
            "input_shape": list(model.input_shape), "dtype": model.dtype,
            "conventions": CONVENTIONS, "totals": totals.as_dict(), "layers": layers}


def print_model(model) -> None:
    t = model.totals()
    n, c, h, w = model.input_shape
    print(f"{model.name} [{model.source}]: batch {n}, input {c}x{h}x{w}, {model.dtype}; "
          f"{len(model.layers)} layers, shapes below are per image (CxHxW)")
    print("  MACs:   multiply-accumulates of conv and linear layers, bias excluded "
          "(torchvision/fvcore 'GFLOPS')")
    print("  FLOPs:  every layer by the textbook's §9 formulas (conv/linear = 2*MACs; pools, BN 5/elem, "
          "add 1/elem; activations per cuconv.cost.ACTIVATION_FLOPS)")
    print(f"  act B:  the layer's output at {model.dtype} for the whole batch (views 0)   "
          "RF: theoretical receptive field (§10.1)")
    print()
    rows = []
    for lay in model.layers:
        ins = " + ".join(_shape_text(s) for s in lay.input_shapes)
        rows.append((lay.name, lay.type, f"{ins} -> {_shape_text(lay.output_shape)}", f"{lay.params:,}",
                     f"{lay.macs:,}", f"{lay.flops:,}", f"{lay.cost.activation_bytes:,}", lay.rf_text()))
    rows.append(("total", "", "", f"{t.params:,}", f"{t.macs:,}", f"{t.flops:,}", f"{t.activation_bytes:,}", ""))
    for line in _table(("layer", "type", "shape in -> out", "params", "MACs", "FLOPs", "act B", "RF"),
                       rows, "<<<>>>>>"):
        print(line)
    m = t.memory
    print()
    print(f"params           {t.params:>18,}  ({_human(t.params)}; {_human_bytes(t.param_bytes)} at {t.dtype})")
    print(f"MACs             {t.macs:>18,}  ({_human(t.macs)}; conv {t.conv_macs:,}, linear {t.linear_macs:,})")
    print(f"FLOPs forward    {t.flops:>18,}  ({_human(t.flops)}, §9 formulas, all layers)")
    print(f"FLOPs backward   {t.backward_flops:>18,}  (data {t.backward_data_flops:,}, "
          f"weight {t.backward_weight_flops:,})")
    print(f"FLOPs training   {t.training_flops:>18,}  ({_human(t.training_flops)}, forward + backward)")
    print(f"activations      {t.activation_bytes:>18,}  ({_human_bytes(t.activation_bytes)}, sum of layer outputs)")
    print(f"max-pool indices {t.index_bytes:>18,}  ({_human_bytes(t.index_bytes)})")
    print(f"largest im2col   {t.im2col_bytes_max:>18,}  ({_human_bytes(t.im2col_bytes_max)}, §8.3 column buffer)")
    print(f"training memory  {m.total:>18,}  ({_human_bytes(m.total)} = params {_human_bytes(m.param_bytes)} "
          f"+ grads {_human_bytes(m.grad_bytes)} + Adam {_human_bytes(m.optimizer_bytes)} "
          f"+ activations {_human_bytes(m.activation_bytes)} + indices {_human_bytes(m.index_bytes)})")


# ------------------------------------------------------------------ §11.7
def _book_match(book: float, macs: int, flops: int) -> str:
    hits = [name for name, ours in (("MACs", macs), ("FLOPs", flops))
            if abs(book - ours) <= BOOK_MATCH_TOLERANCE * ours]
    return hits[0] if hits else "neither"


def compare_rows(dtype: str = "float32") -> list[dict]:

    rows = []
    for label, name, options, b_params, b_flops, b_top1, b_ratio in BOOK_TABLE:
        model = models.get(name, dtype=dtype, **options)
        t = model.totals()
        info = models.info(name)
        rows.append({
            "architecture": label, "model": name, "options": options, "year": info.year,
            "resolution": list(model.resolution), "params": t.params, "macs": t.macs, "flops": t.flops,
            "macs_per_param": t.macs / t.params, "flops_per_param": t.flops / t.params,
            "book": {"params": b_params, "flops": b_flops, "top1": b_top1, "flops_per_param": b_ratio},
            "book_params_within_5pct": abs(b_params - t.params) <= BOOK_MATCH_TOLERANCE * t.params,
            "book_flops_is": _book_match(b_flops, t.macs, t.flops),
        })
    return rows


def print_compare(rows) -> None:
    print("§11.7 grand comparison, computed from the layer lists (batch 1, each model's own resolution)")
    print("  MACs: conv+linear multiply-accumulates, bias excluded.  FLOPs: all layers, §9 formulas.")
    print("  'book' columns are the textbook's printed figures; 'book FLOPs is' says which of our exact")
    print(f"  counts the printed FLOPs figure rounds to (within {BOOK_MATCH_TOLERANCE:.0%}), or 'neither'.")
    print()
    table = []
    for r in rows:
        b = r["book"]
        table.append((r["architecture"], r["model"] + ("" if not r["options"] else
                                                       " " + ",".join(f"{k}={v}" for k, v in r["options"].items())),
                      "x".join(map(str, r["resolution"])), f"{r['params']:,}", f"{r['macs']:,}", f"{r['flops']:,}",
                      f"{r['macs_per_param']:.1f}", f"{r['flops_per_param']:.1f}",
                      _human(b["params"]), _human(b["flops"]), f"{b['flops_per_param']:g}",
                      "" if b["top1"] is None else f"{b['top1']:.1f}", r["book_flops_is"]))
    for line in _table(("architecture", "model", "input", "params", "MACs", "FLOPs", "MACs/param", "FLOPs/param",
                        "book params", "book FLOPs", "book FLOPs/param", "book top-1", "book FLOPs is"),
                       table, "<<<>>>>>>>>><"):
        print(line)
    print()
    print("Top-1 accuracies are the book's, quoted, not computed. See docs/cost_model.md for every disagreement.")


def print_list() -> None:

    rows = []
    for name in models.names():
        e = models.info(name)
        rows.append((name, e.title, e.year, f"{e.resolution}", e.source, ", ".join(e.options)))
    for line in _table(("model", "title", "year", "input", "definition", "options"), rows, "<<><<<"):
        print(line)


# ------------------------------------------------------------------ entry point
def run(args) -> int:


    dtype = DTYPES[args.dtype]
    if args.list:
        print_list()
        return 0
    if args.compare:
        rows = compare_rows(dtype)
        if args.json:
            print(json.dumps({"conventions": CONVENTIONS, "rows": rows}, indent=2))
        else:
            print_compare(rows)
        return 0
    if not args.model:
        print("cuconv cost: give a MODEL, --compare or --list", file=sys.stderr)
        return 2
    try:
        model = models.get(args.model, batch=args.batch, resolution=_parse_resolution(args.resolution),
                           dtype=dtype, **_parse_options(args.option))
    except (ValueError, TypeError) as exc:
        print(f"cuconv cost: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(model_report(model), indent=1))
    else:
        print_model(model)
    return 0


if __name__ == "__main__":
    import argparse
    import sys

    _parser = argparse.ArgumentParser(prog="cuconv cost", description=__doc__.splitlines()[0])
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))

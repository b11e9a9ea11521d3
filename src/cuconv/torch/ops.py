"""``torch.ops.cuconv``: cuconv's convolutions and pools as PyTorch custom operators.

Forward operators — what ``cuconv.torch``'s functions, modules and ``convert()`` call, so what
``torch.compile`` sees (an opaque call with a fake implementation, never cuconv's Python)::

    cuconv::conv2d(input, weight, bias, stride, padding, dilation, groups, same, activation, algo)
    cuconv::conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)
    cuconv::max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)
    cuconv::max_pool2d_with_indices(...)            -> (output, int64 indices)
    cuconv::avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    cuconv::adaptive_avg_pool2d(input, output_size)  (output size 1 × 1)

and their backward operators (``conv2d_backward``, ``conv_transpose2d_backward``,
``max_pool2d_backward``, ``avg_pool2d_backward``, ``adaptive_avg_pool2d_backward``), which the
autograd formulas call. Every operator takes N, C, H, W tensors (the functional forms add the
batch axis of unbatched inputs) and is registered

* for CPU tensors (cuconv's emulator) and CUDA tensors (cuconv's GPU backend through DLPack, on
  torch's current stream; ``_bridge.running_on``), through the route of routes.py: the layout
  and dtype cuconv runs the call in, asked of cuconv, with the copies that adds made explicitly.
  The checks, the route and how each tensor is converted are decided on the first call of each
  signature (shapes, strides, dtypes, devices, arguments; ``_call``); a later call converts,
  runs cuconv's op and returns;
* with a fake implementation: the exact output shapes (SymInt-friendly formulas shared with
  ``cuconv.problem``), dtypes and strides (channels_last in → channels_last out, else
  contiguous);
* with ``register_autograd``: ``setup_context`` saves only what the backward needs (a
  convolution's input only when its weight needs a gradient, its weight only when the input or
  the weight does, the output only for a fused relu/relu6) and the backward computes only the
  gradients autograd asks for (``output_mask``). The backward operators' own formula refuses:
  double backward raises ``RuntimeError`` (DOUBLE_BACKWARD);
* with an autocast rule (``AutocastCPU``, ``AutocastCUDA``) for the convolutions: under
  ``torch.autocast`` their floating-point inputs other than float64 are cast to the autocast
  dtype, as PyTorch's own ``conv2d`` is (``lower_precision_fp``); the pools have none, so they
  run in their input's dtype, as PyTorch's do.

Semantics, dtypes and errors are cuconv's (``cuconv.conv2d`` ...): its ValueError/TypeError
before any launch. The fused ``activation`` of conv2d (None, "relu", "relu6", "silu") is
differentiated as torch's (threshold_backward / hardtanh_backward on the output, silu_backward
on the pre-activation, which the backward recomputes with one more forward convolution).
"""
from __future__ import annotations

import torch

from .. import grad as G
from ..ops.conv2d import conv2d as cuconv_conv2d
from ..ops.conv2d import plan_conv2d as cuconv_plan_conv2d
from ..ops.conv_transpose import conv_transpose2d as cuconv_conv_transpose2d
from ..ops.conv_transpose import plan_conv_transpose2d as cuconv_plan_conv_transpose2d
from ..ops.pool import avg_pool2d as cuconv_avg_pool2d
from ..ops.pool import global_avg_pool2d as cuconv_global_avg_pool2d
from ..ops.pool import max_pool2d as cuconv_max_pool2d
from ..ops.pool import plan_avg_pool2d as cuconv_plan_avg_pool2d
from ..ops.pool import plan_global_avg_pool2d as cuconv_plan_global_avg_pool2d
from ..ops.pool import plan_max_pool2d as cuconv_plan_max_pool2d
from ..plan import PlanCache
from ..problem import Conv2dProblem, ConvTransposeProblem, PoolProblem, conv_out_size, pool_out_size
from . import routes as R
from ._bridge import check, from_array, placement, run_on

NAMESPACE = "cuconv"
DOUBLE_BACKWARD = ("cuconv.torch: double backward (differentiating a gradient computed by cuconv's backward "
                   "pass, e.g. with create_graph=True) is not supported")
ACTIVATIONS = (None, "relu", "relu6", "silu")


def _tuple(v):
    """A schema's int[] (a list) as the tuple cuconv memoizes its plans under."""
    return tuple(v) if isinstance(v, list) else v


def _padding(padding, same: bool):
    return "same" if same else _tuple(padding)


def _four_d(op: str, **tensors) -> None:
    for name, t in tensors.items():
        if t is not None and t.dim() != 4:
            raise ValueError(f"{op}: {name} must be 4-D (N, C, H, W; the functional forms take unbatched 3-D "
                             f"inputs), got shape {tuple(t.shape)}")


# =========================================================================== the hot path
_RUNNERS = PlanCache()          # bounded; cuconv.clear_plan_caches() clears it too
_RUN = _RUNNERS.dict_view()


def _meta(t):
    return None if t is None else (t.shape, t.stride(), t.dtype, t.device)


def _call(what: str, names: tuple, tensors: tuple, args: tuple, make):
    """One operator call on cuconv's kernels. Its signature — where it runs (``placement``), each
    tensor's shape, strides, dtype and device, ``what`` and the other arguments ``args`` — keys
    the runner ``make()`` returns on the first call: there the tensors are checked (``check``,
    ``names`` naming them) before anything else, and ``make`` checks the arguments and finds the
    route, on the call's backend. A later call with the same signature runs the runner only: the
    tensors' conversions (decided once: ``routes.reader``/``writer``), cuconv's op (its own
    memoized plan) and the output's; no check, route or plan work is repeated."""
    device = tensors[0].device
    be, place = placement(device)
    key = (what, place, *[_meta(t) for t in tensors], *args)
    run = _RUN.get(key)
    if run is None:
        check(what, **dict(zip(names, tensors)))
        run = _RUNNERS.put(key, run_on(be, device, make))
    return run_on(be, device, run, *tensors)


# =========================================================================== registration
_LIB = torch.library.Library(NAMESPACE, "FRAGMENT")
_IMPLS: dict = {}               # name -> its CPU and CUDA implementation


def _define(name: str, schema: str, impl, fake):
    """One operator (``torch.library.define`` + ``impl``): its schema, tagged pt2_compliant as
    ``torch.library.custom_op`` tags it; ``impl`` the CPU and CUDA kernel, behind
    ``torch._disable_dynamo`` as custom_op puts it (dynamo never traces cuconv's Python); the
    fake implementation. (custom_op would add, on every call, a Python wrapper and an aliasing
    check of the outputs; opcheck's schema test checks that instead.)"""
    _LIB.define(name + schema, tags=(torch.Tag.pt2_compliant_tag,))
    _IMPLS[name] = impl
    kernel = torch._disable_dynamo(impl)
    for device_type in ("cpu", "cuda"):
        _LIB.impl(name, kernel, torch._C._dispatch_key_for_device(device_type))
    torch.library.register_fake(f"{NAMESPACE}::{name}", fake, lib=_LIB)
    return overload(name)


def overload(name: str):
    """``torch.ops.cuconv.<name>.default``."""
    return getattr(getattr(torch.ops, NAMESPACE), name).default


def _refuse_double_backward(ctx, *grads):
    raise RuntimeError(DOUBLE_BACKWARD)


def _no_context(ctx, inputs, output):
    pass


_AFTER_AUTOGRAD = torch._C._after_autograd_keyset
# The keysets below autograd of a call on plain CPU or CUDA tensors outside any mode (no
# Python/fake/functionalization/conjugate/negative key): what the dispatcher sends straight to
# the CPU or CUDA kernel.
_PLAIN = frozenset(torch._C.DispatchKeySet(k).raw_repr() for k in (torch._C.DispatchKey.CPU,
                                                                  torch._C.DispatchKey.CUDA))


def _register_autograd(name: str, setup_context, backward) -> None:
    """Operator ``name``'s Autograd kernel: ``torch.library.register_autograd``'s
    (torch._library.autograd) written out for the host cost. With grad enabled and an input
    requiring grad, an autograd.Function whose forward runs the operator below autograd and calls
    ``setup_context(ctx, inputs, output)`` (the inputs with their defaults filled in, a Tensor[]
    output as a tuple), whose backward calls ``backward``; otherwise the operator below autograd
    alone. Below autograd is the redispatch, or — when it would go straight to the CPU or CUDA
    kernel (``_PLAIN``) — the implementation itself, which spares a boxed round trip through the
    dispatcher. The kernel runs behind ``torch._disable_dynamo``, as the implementations do.
    torch's version also fills in the defaults with ``fill_defaults``, which reads the schema's
    argument list once per argument: 33 µs per conv2d call, more than the rest of the call."""
    op, impl = overload(name), _IMPLS[name]
    defaults = tuple(a.default_value for a in op._schema.arguments)
    listed = str(op._schema.returns[0].type) == "List[Tensor]"

    def below(keyset, args):
        keys = keyset & _AFTER_AUTOGRAD
        with torch._C._AutoDispatchBelowAutograd():
            if keys.raw_repr() in _PLAIN:
                return impl(*args)
            return op.redispatch(keys, *args)

    def forward(ctx, *args):
        keyset, args = args[-1], args[:-1]
        output = below(keyset, args)
        setup_context(ctx, (*args, *defaults[len(args):]), output)
        # A non-differentiable output's gradient (max pooling's int64 indices) stays None:
        # autograd would otherwise fill a tensor of zeros of the indices' size that no formula
        # reads. Floating-point outputs still get zeros. (AOTAutograd's own switch; where a torch
        # lacks it, the attribute is inert and the zeros come back.)
        ctx._materialize_non_diff_grads = False
        return tuple(output) if listed else output

    def grads(ctx, *grad_outputs):
        need = ctx.needs_input_grad
        ctx.needs_input_grad = need[:-1]          # the keyset's entry: not an input of the operator
        try:
            result = backward(ctx, *grad_outputs)
        finally:
            ctx.needs_input_grad = need
        return (*result, None) if isinstance(result, tuple) else (result, None)

    formula = type(f"CuconvAutogradFor_{name}", (torch.autograd.Function,),
                   {"forward": staticmethod(forward), "backward": staticmethod(grads)})

    def autograd_kernel(keyset, *args):
        if torch.is_grad_enabled() and torch._C._any_requires_grad(*args):
            output = formula.apply(*args, keyset)
            return list(output) if listed else output
        return below(keyset, args)
    _LIB.impl(name, torch._disable_dynamo(autograd_kernel), "Autograd", with_keyset=True)


def _backward_op(op):
    """A backward operator: differentiating it (double backward) raises DOUBLE_BACKWARD."""
    _register_autograd(op.name().split("::")[1], _no_context, _refuse_double_backward)
    return op


def _is_eligible(t, device_type: str) -> bool:
    return (isinstance(t, torch.Tensor) and t.is_floating_point() and t.device.type == device_type
            and t.dtype != torch.float64)


def _register_autocast(name: str) -> None:
    """PyTorch's lower_precision_fp rule for ``name``: under torch.autocast on a device, its
    floating-point tensors other than float64 on that device are cast to the autocast dtype of
    the moment (``torch.get_autocast_dtype``; ``register_autocast`` fixes one dtype), then the
    operator runs below autocast."""
    op = overload(name)
    for device_type in ("cpu", "cuda"):
        key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
        below = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

        def kernel(_keyset, *args, _device_type=device_type, _below=below):
            dtype = torch.get_autocast_dtype(_device_type)
            args = [a.to(dtype) if _is_eligible(a, _device_type) else a for a in args]
            with torch._C._ExcludeDispatchKeyGuard(_below):
                return op(*args)
        _LIB.impl(name, kernel, key, with_keyset=True)


# =========================================================================== conv2d
def conv2d_route(input, weight, bias, stride, padding, dilation, groups, same, activation, algo):  # noqa: A002
    """The route of a conv2d call (checks the problem first, in torch's N, C, H, W terms)."""
    cl = R.is_channels_last(input, weight)
    pad = _padding(padding, same)
    args = (_tuple(stride), pad, _tuple(dilation), groups, activation, algo)
    key = (tuple(input.shape), tuple(weight.shape), bias is not None, input.dtype, cl, *args)
    dt = input.dtype

    def probe(c: R.Candidate):
        return cuconv_plan_conv2d(R.stand(input.shape, c.dtype, c.layout), R.stand(weight.shape, c.dtype, c.layout),
                                  R.stand(None if bias is None else bias.shape, c.dtype), args[0], pad, args[2],
                                  groups, algo=algo, layout=c.layout, activation=activation)
    return R.route("conv2d", key, {"input": input, "weight": weight}, probe, dt, cl, convert=algo == "auto",
                   check=lambda: Conv2dProblem.from_shapes(input.shape, weight.shape, args[0], pad, args[2], groups))


_CONV_NAMES = ("input", "weight", "bias")


def _conv2d(input, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, same=False,
            activation=None, algo="auto"):  # noqa: A002
    def make():
        _four_d("conv2d", input=input, weight=weight)
        r = conv2d_route(input, weight, bias, stride, padding, dilation, groups, same, activation, algo)
        rx, rw, rb = R.reader(input, r.dtype, r.layout), R.reader(weight, r.dtype, r.layout), R.reader(bias, r.dtype)
        out = R.writer(input.dtype, r.channels_last, r.layout)
        args = (_tuple(stride), _padding(padding, same), _tuple(dilation), groups)

        def run(x, w, b):
            return out(cuconv_conv2d(rx(x), rw(w), rb(b), *args, algo=algo, activation=activation, layout=r.layout))
        return run
    return _call("conv2d", _CONV_NAMES, (input, weight, bias),
                 (*stride, *padding, *dilation, groups, same, activation, algo), make)


def _conv2d_fake(input, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, same=False,
                 activation=None, algo="auto"):  # noqa: A002
    check("conv2d", input=input, weight=weight, bias=bias)
    _four_d("conv2d", input=input, weight=weight)
    N, _, H, W = input.shape
    K, _, Rk, Sk = weight.shape
    if same:
        P, Q = H, W
    else:
        P = conv_out_size(H, Rk, stride[0], padding[0], padding[0], dilation[0])
        Q = conv_out_size(W, Sk, stride[1], padding[1], padding[1], dilation[1])
    return R.empty((N, K, P, Q), input, R.is_channels_last(input, weight))


CONV2D = _define(
    "conv2d", "(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, int[2] padding=0, "
    "int[2] dilation=1, int groups=1, bool same=False, str? activation=None, str algo=\"auto\") -> Tensor",
    _conv2d, _conv2d_fake)


def _conv2d_backward_route(grad_output, input, weight, input_size, args, mask, channels_last):  # noqa: A002
    dt = grad_output.dtype
    weight_size = None if weight is None else tuple(weight.shape)
    key = (tuple(grad_output.shape), tuple(input_size), weight_size, dt, mask, channels_last, *args)

    def probe(c: R.Candidate):
        dy = R.stand(grad_output.shape, c.dtype)
        if mask[1]:
            return G.plan_conv2d_backward(R.stand(input_size, c.dtype), R.stand(weight_size, c.dtype), dy, *args,
                                          output_mask=mask)
        plans = [G.plan_conv2d_input(tuple(input_size), R.stand(weight_size, c.dtype), dy, *args)] if mask[0] else []
        return (plans + [G.plan_conv2d_bias(dy)] if mask[2] else plans)[0]
    return R.route("conv2d_backward", key, {"grad_output": grad_output, "input": input, "weight": weight}, probe,
                   dt, channels_last, layouts=("NCHW",), outputs="the gradients")


_GRAD_NAMES = ("grad_output", "input", "weight")


def _conv2d_backward(grad_output, input, weight, input_size, stride, padding, dilation, groups, same,  # noqa: A002
                     channels_last, output_mask):
    mask = tuple(map(bool, output_mask))
    _need_for_mask("conv2d_backward", mask, input=input, weight=weight)

    def make():
        _four_d("conv2d_backward", grad_output=grad_output, input=input, weight=weight)
        args = (_tuple(stride), _padding(padding, same), _tuple(dilation), groups)
        r = _conv2d_backward_route(grad_output, input, weight, input_size, args, mask, channels_last)
        rdy, rx, rw = (R.reader(t, r.dtype) for t in (grad_output, input, weight))
        out = R.writer(grad_output.dtype, channels_last)
        size = tuple(input_size)

        def run(dy, x, w):
            if mask[1]:      # one plan; db fused into the wgrad kernel
                grads = G.conv2d_backward(rx(x), rw(w), rdy(dy), *args, output_mask=mask)
            else:            # the input is not saved when the weight needs no gradient
                dy = rdy(dy)
                grads = (G.conv2d_input(size, rw(w), dy, *args) if mask[0] else None,
                         G.conv2d_bias(dy) if mask[2] else None)
            return [out(g) for g in grads if g is not None]
        return run
    return _call("conv2d backward", _GRAD_NAMES, (grad_output, input, weight),
                 (*input_size, *stride, *padding, *dilation, groups, same, channels_last, *mask), make)


def _by_mask(mask, grads) -> tuple:
    """A convolution backward operator's gradients (those ``mask`` asked for, in order) as (dx, dw, db)."""
    it = iter(grads)
    return tuple([next(it) if m else None for m in mask])


def _need_for_mask(op: str, mask, *, input, weight) -> None:  # noqa: A002
    if mask[0] and weight is None:
        raise ValueError(f"{op}: output_mask asks for the input's gradient, which needs the weight; got weight=None")
    if mask[1] and input is None:
        raise ValueError(f"{op}: output_mask asks for the weight's gradient, which needs the input; got input=None")


def _conv2d_backward_fake(grad_output, input, weight, input_size, stride, padding, dilation, groups, same,  # noqa: A002
                          channels_last, output_mask):
    check("conv2d backward", grad_output=grad_output, input=input, weight=weight)
    _need_for_mask("conv2d_backward", output_mask, input=input, weight=weight)
    return _fake_grads(grad_output, output_mask, input_size, None if weight is None else weight.shape, channels_last)


def _fake_grads(grad_output, mask, input_size, weight_size, channels_last) -> list:
    """A convolution backward operator's fake gradients (dx, dw, db as the mask asks)."""
    shapes = (tuple(input_size), None if weight_size is None else tuple(weight_size), (grad_output.shape[1],))
    return [R.empty(shape, grad_output, channels_last) for shape, m in zip(shapes, mask) if m]


CONV2D_BACKWARD = _backward_op(_define(
    "conv2d_backward", "(Tensor grad_output, Tensor? input, Tensor? weight, SymInt[4] input_size, int[2] stride, "
    "int[2] padding, int[2] dilation, int groups, bool same, bool channels_last, bool[3] output_mask) -> Tensor[]",
    _conv2d_backward, _conv2d_backward_fake))


def _conv2d_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups, same, activation, algo = inputs  # noqa: A001
    need = ctx.needs_input_grad
    ctx.mask = (bool(need[0]), bool(need[1]), bool(need[2]) and bias is not None)
    ctx.args = (input.shape, stride, padding, dilation, groups, same, R.is_channels_last(input, weight))
    ctx.activation, ctx.algo = activation, algo
    silu = activation == "silu" and any(ctx.mask)
    x = input if ctx.mask[1] or silu else None
    w = weight if ctx.mask[0] or ctx.mask[1] or silu else None
    y = output if activation in ("relu", "relu6") and any(ctx.mask) else None
    ctx.save_for_backward(x, w, y, bias if silu else None)


def _activation_backward(ctx, grad, x, w, y, b):
    """∂L/∂(pre-activation) from ∂L/∂output, as torch differentiates its own activations."""
    if ctx.activation == "relu":
        return torch.ops.aten.threshold_backward(grad, y, 0)
    if ctx.activation == "relu6":        # relu6(z) is in (0, 6) exactly where z is
        return torch.ops.aten.hardtanh_backward(grad, y, 0.0, 6.0)
    if ctx.activation == "silu":
        _, stride, padding, dilation, groups, same, _ = ctx.args
        z = CONV2D(x, w, b, stride, padding, dilation, groups, same, None, ctx.algo)
        return torch.ops.aten.silu_backward(grad, z)
    return grad


def _conv2d_grad(ctx, grad):
    dx = dw = db = None
    if any(ctx.mask):
        x, w, y, b = ctx.saved_tensors
        dz = _activation_backward(ctx, grad, x, w, y, b)
        size, stride, padding, dilation, groups, same, cl = ctx.args
        grads = CONV2D_BACKWARD(dz, x if ctx.mask[1] else None, w, size, stride, padding, dilation, groups, same, cl,
                                list(ctx.mask))
        dx, dw, db = _by_mask(ctx.mask, grads)
    return dx, dw, db, None, None, None, None, None, None, None


# =========================================================================== conv_transpose2d
def _transpose_output_size(input, weight, stride, padding, output_padding, groups, dilation):  # noqa: A002
    N, _, H, W = input.shape
    _, Kg, Rk, Sk = weight.shape
    return (N, Kg * groups,
            (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (Rk - 1) + output_padding[0] + 1,
            (W - 1) * stride[1] - 2 * padding[1] + dilation[1] * (Sk - 1) + output_padding[1] + 1)


# Two cuconv functions compute a transposed convolution: conv_transpose2d's own kernels, and the
# data gradient of the convolution it transposes (cuconv.grad.conv2d_input: the float16/bfloat16
# tensor-core dgrad where conv_transpose2d has no such kernel), the bias added after.
_TRANSPOSE_KINDS = ("conv_transpose2d", "conv2d_input")


def conv_transpose2d_route(input, weight, bias, stride, padding, output_padding, groups, dilation):  # noqa: A002
    cl = R.is_channels_last(input, weight)
    args = (_tuple(stride), _tuple(padding), _tuple(output_padding), groups, _tuple(dilation))
    key = (tuple(input.shape), tuple(weight.shape), bias is not None, input.dtype, cl, *args)
    dt = input.dtype

    def probe(c: R.Candidate):
        if c.kind == "conv_transpose2d":
            return R.on_record_backend(cuconv_plan_conv_transpose2d)(
                R.zero_strided(input.shape, c.dtype), R.zero_strided(weight.shape, c.dtype),
                None if bias is None else R.zero_strided(bias.shape, c.dtype), *args)
        out = _transpose_output_size(input, weight, *args)
        return G.plan_conv2d_input(out, R.stand(weight.shape, c.dtype), R.stand(input.shape, c.dtype), args[0],
                                   args[1], args[4], groups)
    return R.route("conv_transpose2d", key, {"input": input, "weight": weight}, probe, dt, cl, layouts=("NCHW",),
                   kinds=_TRANSPOSE_KINDS,
                   check=lambda: ConvTransposeProblem.from_shapes(input.shape, weight.shape, *args))


def _conv_transpose2d(input, weight, bias=None, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
                      groups=1, dilation=(1, 1)):  # noqa: A002
    def make():
        _four_d("conv_transpose2d", input=input, weight=weight)
        r = conv_transpose2d_route(input, weight, bias, stride, padding, output_padding, groups, dilation)
        rx, rw, rb = (R.reader(t, r.dtype) for t in (input, weight, bias))
        out = R.writer(input.dtype, r.channels_last)
        if r.kind == "conv_transpose2d":
            args = (_tuple(stride), _tuple(padding), _tuple(output_padding), groups, _tuple(dilation))

            def run(x, w, b):
                return out(cuconv_conv_transpose2d(rx(x), rw(w), rb(b), *args))
            return run
        size = _transpose_output_size(input, weight, stride, padding, output_padding, groups, dilation)
        args = (_tuple(stride), _tuple(padding), _tuple(dilation), groups)

        def run_dgrad(x, w, b):
            y = from_array(G.conv2d_input(size, rw(w), rx(x), *args))
            if b is not None:
                y.add_(R.dense(b, r.dtype).view(1, -1, 1, 1))
            return R.finish(y, input.dtype, r.channels_last)
        return run_dgrad
    return _call("conv_transpose2d", _CONV_NAMES, (input, weight, bias),
                 (*stride, *padding, *output_padding, groups, *dilation), make)


def _conv_transpose2d_fake(input, weight, bias=None, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
                           groups=1, dilation=(1, 1)):  # noqa: A002
    check("conv_transpose2d", input=input, weight=weight, bias=bias)
    _four_d("conv_transpose2d", input=input, weight=weight)
    size = _transpose_output_size(input, weight, stride, padding, output_padding, groups, dilation)
    return R.empty(size, input, R.is_channels_last(input, weight))


CONV_TRANSPOSE2D = _define(
    "conv_transpose2d", "(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, int[2] padding=0, "
    "int[2] output_padding=0, int groups=1, int[2] dilation=1) -> Tensor",
    _conv_transpose2d, _conv_transpose2d_fake)


def _conv_transpose2d_backward_route(grad_output, input, weight, input_size, weight_size, args, mask,  # noqa: A002
                                     channels_last):
    dt = grad_output.dtype
    key = (tuple(grad_output.shape), tuple(input_size), tuple(weight_size), dt, mask, channels_last, *args)

    def probe(c: R.Candidate):
        dy = R.stand(grad_output.shape, c.dtype)
        plans = [G.plan_conv_transpose2d_input(tuple(input_size), R.stand(weight_size, c.dtype), dy, *args)
                 if mask[0] else None,
                 G.plan_conv_transpose2d_weight(R.stand(input_size, c.dtype), tuple(weight_size), dy, *args)
                 if mask[1] else None,
                 G.plan_conv2d_bias(dy) if mask[2] else None]
        return next(p for p in plans if p is not None)
    return R.route("conv_transpose2d_backward", key, {"grad_output": grad_output, "input": input, "weight": weight},
                   probe, dt, channels_last, layouts=("NCHW",), outputs="the gradients")


def _conv_transpose2d_backward(grad_output, input, weight, input_size, weight_size, stride, padding,  # noqa: A002
                               output_padding, groups, dilation, channels_last, output_mask):
    mask = tuple(map(bool, output_mask))
    _need_for_mask("conv_transpose2d_backward", mask, input=input, weight=weight)

    def make():
        _four_d("conv_transpose2d_backward", grad_output=grad_output, input=input, weight=weight)
        args = (_tuple(stride), _tuple(padding), _tuple(output_padding), groups, _tuple(dilation))
        r = _conv_transpose2d_backward_route(grad_output, input, weight, input_size, weight_size, args, mask,
                                              channels_last)
        rdy, rx, rw = (R.reader(t, r.dtype) for t in (grad_output, input, weight))
        out = R.writer(grad_output.dtype, channels_last)
        sizes = (tuple(input_size), tuple(weight_size))

        def run(dy, x, w):
            dy = rdy(dy)
            grads = (G.conv_transpose2d_input(sizes[0], rw(w), dy, *args) if mask[0] else None,
                     G.conv_transpose2d_weight(rx(x), sizes[1], dy, *args) if mask[1] else None,
                     G.conv2d_bias(dy) if mask[2] else None)
            return [out(g) for g in grads if g is not None]
        return run
    return _call("conv_transpose2d backward", _GRAD_NAMES, (grad_output, input, weight),
                 (*input_size, *weight_size, *stride, *padding, *output_padding, groups, *dilation, channels_last,
                  *mask), make)


def _conv_transpose2d_backward_fake(grad_output, input, weight, input_size, weight_size, stride, padding,  # noqa: A002
                                    output_padding, groups, dilation, channels_last, output_mask):
    check("conv_transpose2d backward", grad_output=grad_output, input=input, weight=weight)
    _need_for_mask("conv_transpose2d_backward", output_mask, input=input, weight=weight)
    return _fake_grads(grad_output, output_mask, input_size, weight_size, channels_last)


CONV_TRANSPOSE2D_BACKWARD = _backward_op(_define(
    "conv_transpose2d_backward", "(Tensor grad_output, Tensor? input, Tensor? weight, SymInt[4] input_size, "
    "SymInt[4] weight_size, int[2] stride, int[2] padding, int[2] output_padding, int groups, int[2] dilation, "
    "bool channels_last, bool[3] output_mask) -> Tensor[]",
    _conv_transpose2d_backward, _conv_transpose2d_backward_fake))


def _conv_transpose2d_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, output_padding, groups, dilation = inputs  # noqa: A001
    need = ctx.needs_input_grad
    ctx.mask = (bool(need[0]), bool(need[1]), bool(need[2]) and bias is not None)
    ctx.args = (input.shape, weight.shape, stride, padding, output_padding, groups, dilation,
                R.is_channels_last(input, weight))
    ctx.save_for_backward(input if ctx.mask[1] else None, weight if ctx.mask[0] else None)


def _conv_transpose2d_grad(ctx, grad):
    dx = dw = db = None
    if any(ctx.mask):
        x, w = ctx.saved_tensors
        grads = CONV_TRANSPOSE2D_BACKWARD(grad, x, w, *ctx.args, list(ctx.mask))
        dx, dw, db = _by_mask(ctx.mask, grads)
    return dx, dw, db, None, None, None, None, None


# =========================================================================== pooling
def _pool_route(op: str, input, key: tuple, problem, plan):  # noqa: A002
    """The route of a pooling call: cuconv's pools read NCHW and NHWC (channels_last: no copy) in
    every float dtype; whether they take the call is asked of the planner, ``plan(x, layout)`` on
    a stand-in array. ``problem()`` checks the arguments first."""
    cl = R.is_channels_last(input)
    dt = input.dtype

    def probe(c: R.Candidate):
        return R.on_record_backend(plan)(R.zero_strided(R.stand(input.shape, c.dtype, c.layout).shape, c.dtype),
                                         c.layout)
    return R.route(op, (tuple(input.shape), dt, cl, *key), {"input": input}, probe, dt, cl, check=problem)


def max_pool2d_route(input, window: tuple) -> R.Route:  # noqa: A002
    return _pool_route("max_pool2d", input, window, lambda: PoolProblem.from_shapes("max", input.shape, *window),
                       lambda x, layout: cuconv_plan_max_pool2d(x, *window, layout=layout))


def avg_pool2d_route(input, window: tuple) -> R.Route:  # noqa: A002
    k, s, p, *rest = window
    return _pool_route("avg_pool2d", input, window,
                       lambda: PoolProblem.from_shapes("avg", input.shape, k, s, p, 1, *rest),
                       lambda x, layout: cuconv_plan_avg_pool2d(x, *window, layout=layout))


def adaptive_avg_pool2d_route(input) -> R.Route:  # noqa: A002
    return _pool_route("adaptive_avg_pool2d", input, (), lambda: PoolProblem.from_shapes("global_avg", input.shape),
                       lambda x, layout: cuconv_plan_global_avg_pool2d(x, layout=layout))


def _pool_backward_route(op: str, grad_output, input_size, window: tuple, plan_fn, channels_last, indices=None):
    dt = grad_output.dtype
    key = (tuple(grad_output.shape), tuple(input_size), dt, channels_last, *window)

    def probe(c: R.Candidate):
        dy, size = R.stand(grad_output.shape, c.dtype, c.layout), R.stand(input_size, c.dtype, c.layout).shape
        if indices is not None:
            return plan_fn(dy, R.stand(indices.shape, indices.dtype, c.layout), size, *window, layout=c.layout)
        return plan_fn(dy, size, *window, layout=c.layout)
    return R.route(op, key, {"grad_output": grad_output, "indices": indices}, probe, dt, channels_last,
                   outputs="the gradient")


def max_window(kernel_size, stride, padding, dilation, ceil_mode) -> tuple:
    return (_tuple(kernel_size), _tuple(stride), _tuple(padding), _tuple(dilation), bool(ceil_mode))


_INPUT = ("input",)


def _pool(op: str, input, window: tuple, route, pool, indices: bool = False):  # noqa: A002
    """A pooling operator: ``route(input, window)``, then ``pool(x, *window)`` (cuconv's function)
    on the input as the route reads it; the output (and max pooling's int64 indices) in the
    input's memory format."""
    def make():
        _four_d(op, input=input)
        r = route(input, window)
        lay = r.layout
        rx, out = R.reader(input, r.dtype, lay), R.writer(input.dtype, r.channels_last, lay)
        if not indices:
            return lambda x: out(pool(rx(x), *window, layout=lay))
        out_idx = R.writer(torch.int64, r.channels_last, lay)

        def run(x):
            y, idx = pool(rx(x), *window, return_indices=True, layout=lay)
            return out(y), out_idx(idx)
        return run
    return _call(op, _INPUT, (input,), (indices, *window), make)


def _max_pool(input, window, with_indices: bool):  # noqa: A002
    return _pool("max_pool2d", input, window, max_pool2d_route, cuconv_max_pool2d, with_indices)


def _pool_output(input, kernel_size, stride, padding, dilation, ceil_mode) -> tuple:  # noqa: A002
    N, C, H, W = input.shape
    return (N, C, pool_out_size(H, kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode),
            pool_out_size(W, kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode))


def _pool_fake(op: str, input, shape, *, indices=False):  # noqa: A002
    check(op, input=input)
    cl = R.is_channels_last(input)
    y = R.empty(shape, input, cl)
    return (y, R.empty(shape, input, cl, torch.int64)) if indices else y


def _max_pool2d(input, kernel_size, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False):  # noqa: A002
    return _max_pool(input, max_window(kernel_size, stride, padding, dilation, ceil_mode), False)


def _max_pool2d_fake(input, kernel_size, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False):  # noqa: A002
    _four_d("max_pool2d", input=input)
    return _pool_fake("max_pool2d", input, _pool_output(input, kernel_size, stride, padding, dilation, ceil_mode))


def _max_pool2d_with_indices(input, kernel_size, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False):  # noqa: A002
    return _max_pool(input, max_window(kernel_size, stride, padding, dilation, ceil_mode), True)


def _max_pool2d_with_indices_fake(input, kernel_size, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False):  # noqa: A002
    _four_d("max_pool2d", input=input)
    return _pool_fake("max_pool2d", input, _pool_output(input, kernel_size, stride, padding, dilation, ceil_mode),
                      indices=True)


_MAX_POOL_ARGS = "int[2] kernel_size, int[2] stride, int[2] padding=0, int[2] dilation=1, bool ceil_mode=False"
MAX_POOL2D = _define("max_pool2d", f"(Tensor input, {_MAX_POOL_ARGS}) -> Tensor", _max_pool2d, _max_pool2d_fake)
MAX_POOL2D_WITH_INDICES = _define("max_pool2d_with_indices", f"(Tensor input, {_MAX_POOL_ARGS}) -> (Tensor, Tensor)",
                                  _max_pool2d_with_indices, _max_pool2d_with_indices_fake)


_POOL_GRAD_NAMES = ("grad_output",)     # the indices: _check_indices, with its own message


def _pool_gradient(op: str, grad_output, input_size, window: tuple, channels_last: bool, plan_fn, grad_fn,
                   indices=None):
    """A pooling backward operator: its route, ``grad_fn`` (cuconv.grad's function), the gradient
    in the forward's memory format."""
    def make():
        if indices is not None:
            _check_indices(grad_output, indices)
        _four_d(op, grad_output=grad_output, indices=indices)
        r = _pool_backward_route(op, grad_output, input_size, window, plan_fn, channels_last, indices)
        lay = r.layout
        rdy, ridx = R.reader(grad_output, r.dtype, lay), R.reader(indices, torch.int64, lay)
        out = R.writer(grad_output.dtype, channels_last, lay)
        size = R.stand(input_size, r.dtype, lay).shape
        if indices is None:
            return lambda dy, _: out(grad_fn(rdy(dy), size, *window, layout=lay))
        return lambda dy, idx: out(grad_fn(rdy(dy), ridx(idx), size, *window, layout=lay))
    return _call(op, _POOL_GRAD_NAMES, (grad_output, indices), (*input_size, *window, channels_last), make)


def _pool_gradient_fake(grad_output, input_size, *args):
    """The avg_pool2d and adaptive_avg_pool2d backward operators' fake (channels_last: the last argument)."""
    check("pooling backward", grad_output=grad_output)
    return R.empty(tuple(input_size), grad_output, args[-1])


def _max_pool2d_backward(grad_output, indices, input_size, kernel_size, stride, padding, dilation, ceil_mode,
                         channels_last):
    return _pool_gradient("max_pool2d_backward", grad_output, input_size,
                          max_window(kernel_size, stride, padding, dilation, ceil_mode), channels_last,
                          G.plan_max_pool2d, G.max_pool2d, indices)


def _check_indices(grad_output, indices) -> None:
    check("max_pool2d backward", grad_output=grad_output)
    if not isinstance(indices, torch.Tensor) or indices.dtype != torch.int64 or indices.device != grad_output.device:
        what = type(indices).__name__ if not isinstance(indices, torch.Tensor) else f"{indices.dtype} on {indices.device}"
        raise TypeError(f"max_pool2d backward: indices must be an int64 tensor on {grad_output.device} (the forward's "
                        f"return_indices=True), got {what}")


def _max_pool2d_backward_fake(grad_output, indices, input_size, kernel_size, stride, padding, dilation, ceil_mode,
                              channels_last):
    _check_indices(grad_output, indices)
    return R.empty(tuple(input_size), grad_output, channels_last)


MAX_POOL2D_BACKWARD = _backward_op(_define(
    "max_pool2d_backward", "(Tensor grad_output, Tensor indices, SymInt[4] input_size, int[2] kernel_size, "
    "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode, bool channels_last) -> Tensor",
    _max_pool2d_backward, _max_pool2d_backward_fake))


def _max_pool2d_setup(ctx, inputs, output):
    input, kernel_size, stride, padding, dilation, ceil_mode = inputs  # noqa: A001
    ctx.args = (input.shape, kernel_size, stride, padding, dilation, ceil_mode, R.is_channels_last(input))
    if ctx.needs_input_grad[0]:
        ctx.save_for_backward(output[1] if isinstance(output, tuple) else input)


def _max_pool2d_grad(ctx, grad, grad_indices=None):
    if not ctx.needs_input_grad[0]:
        return None, None, None, None, None, None
    (saved,) = ctx.saved_tensors
    size, kernel_size, stride, padding, dilation, ceil_mode, cl = ctx.args
    if saved.dtype != torch.int64:       # max_pool2d without indices saved its input: find them
        saved = MAX_POOL2D_WITH_INDICES(saved, kernel_size, stride, padding, dilation, ceil_mode)[1]
    dx = MAX_POOL2D_BACKWARD(grad, saved, size, kernel_size, stride, padding, dilation, ceil_mode, cl)
    return dx, None, None, None, None, None


def avg_window(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override) -> tuple:
    return (_tuple(kernel_size), _tuple(stride), _tuple(padding), bool(ceil_mode), bool(count_include_pad),
            divisor_override)


def _avg_pool2d(input, kernel_size, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True,
                divisor_override=None):  # noqa: A002
    return _pool("avg_pool2d", input, avg_window(kernel_size, stride, padding, ceil_mode, count_include_pad,
                                                 divisor_override), avg_pool2d_route, cuconv_avg_pool2d)


def _avg_pool2d_fake(input, kernel_size, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True,
                     divisor_override=None):  # noqa: A002
    _four_d("avg_pool2d", input=input)
    return _pool_fake("avg_pool2d", input, _pool_output(input, kernel_size, stride, padding, (1, 1), ceil_mode))


AVG_POOL2D = _define(
    "avg_pool2d", "(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding=0, bool ceil_mode=False, "
    "bool count_include_pad=True, int? divisor_override=None) -> Tensor", _avg_pool2d, _avg_pool2d_fake)


def _avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad,
                         divisor_override, channels_last):
    return _pool_gradient("avg_pool2d_backward", grad_output, input_size,
                          avg_window(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override),
                          channels_last, G.plan_avg_pool2d, G.avg_pool2d)


AVG_POOL2D_BACKWARD = _backward_op(_define(
    "avg_pool2d_backward", "(Tensor grad_output, SymInt[4] input_size, int[2] kernel_size, int[2] stride, "
    "int[2] padding, bool ceil_mode, bool count_include_pad, int? divisor_override, bool channels_last) -> Tensor",
    _avg_pool2d_backward, _pool_gradient_fake))


def _avg_pool2d_setup(ctx, inputs, output):
    input, *window = inputs  # noqa: A001
    ctx.args = (input.shape, *window, R.is_channels_last(input))


def _avg_pool2d_grad(ctx, grad):
    dx = AVG_POOL2D_BACKWARD(grad, *ctx.args) if ctx.needs_input_grad[0] else None
    return dx, None, None, None, None, None, None


def _global_size(op: str, output_size) -> None:
    if list(output_size) != [1, 1]:
        raise NotImplementedError(f"{op}: cuconv runs output size 1 only (global average pooling), got output_size="
                                  f"{list(output_size)}; use torch.nn.functional.adaptive_avg_pool2d")


def _adaptive_avg_pool2d(input, output_size):  # noqa: A002
    _global_size("cuconv::adaptive_avg_pool2d", output_size)
    return _pool("adaptive_avg_pool2d", input, (), lambda x, _: adaptive_avg_pool2d_route(x),
                 cuconv_global_avg_pool2d)


def _adaptive_avg_pool2d_fake(input, output_size):  # noqa: A002
    _global_size("cuconv::adaptive_avg_pool2d", output_size)
    _four_d("adaptive_avg_pool2d", input=input)
    return _pool_fake("adaptive_avg_pool2d", input, (input.shape[0], input.shape[1], 1, 1))


ADAPTIVE_AVG_POOL2D = _define("adaptive_avg_pool2d", "(Tensor input, int[2] output_size) -> Tensor",
                              _adaptive_avg_pool2d, _adaptive_avg_pool2d_fake)


def _adaptive_avg_pool2d_backward(grad_output, input_size, channels_last):
    return _pool_gradient("adaptive_avg_pool2d_backward", grad_output, input_size, (), channels_last,
                          G.plan_global_avg_pool2d, G.global_avg_pool2d)


ADAPTIVE_AVG_POOL2D_BACKWARD = _backward_op(_define(
    "adaptive_avg_pool2d_backward", "(Tensor grad_output, SymInt[4] input_size, bool channels_last) -> Tensor",
    _adaptive_avg_pool2d_backward, _pool_gradient_fake))


def _adaptive_avg_pool2d_setup(ctx, inputs, output):
    ctx.args = (inputs[0].shape, R.is_channels_last(inputs[0]))


def _adaptive_avg_pool2d_grad(ctx, grad):
    dx = ADAPTIVE_AVG_POOL2D_BACKWARD(grad, *ctx.args) if ctx.needs_input_grad[0] else None
    return dx, None


# Every operator, forward and backward, by name (torch.ops.cuconv.<name>).
FORWARD = {"conv2d": CONV2D, "conv_transpose2d": CONV_TRANSPOSE2D, "max_pool2d": MAX_POOL2D,
           "max_pool2d_with_indices": MAX_POOL2D_WITH_INDICES, "avg_pool2d": AVG_POOL2D,
           "adaptive_avg_pool2d": ADAPTIVE_AVG_POOL2D}
BACKWARD = {"conv2d_backward": CONV2D_BACKWARD, "conv_transpose2d_backward": CONV_TRANSPOSE2D_BACKWARD,
            "max_pool2d_backward": MAX_POOL2D_BACKWARD, "avg_pool2d_backward": AVG_POOL2D_BACKWARD,
            "adaptive_avg_pool2d_backward": ADAPTIVE_AVG_POOL2D_BACKWARD}
# The autograd formulas, (setup_context, backward) by forward operator: registered here, and
# what the tests pair with PyTorch's float64 forward to gradcheck a backward whose forward
# cuconv lacks in float64.
FORMULAS = {"conv2d": (_conv2d_setup, _conv2d_grad),
            "conv_transpose2d": (_conv_transpose2d_setup, _conv_transpose2d_grad),
            "max_pool2d": (_max_pool2d_setup, _max_pool2d_grad),
            "max_pool2d_with_indices": (_max_pool2d_setup, _max_pool2d_grad),
            "avg_pool2d": (_avg_pool2d_setup, _avg_pool2d_grad),
            "adaptive_avg_pool2d": (_adaptive_avg_pool2d_setup, _adaptive_avg_pool2d_grad)}
for _name, (_setup, _backward) in FORMULAS.items():
    _register_autograd(_name, _setup, _backward)
for _name in ("conv2d", "conv_transpose2d"):
    _register_autocast(_name)

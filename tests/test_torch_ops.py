"""The ``torch.ops.cuconv`` operators (cuconv/torch/ops.py, routes.py) on CPU tensors (the
emulator): ``torch.library.opcheck`` on every operator, forward and backward, with contiguous,
channels_last and sliced (non-dense) inputs, float32 and float64, requires_grad on and off;
channels_last in → channels_last out (read as NHWC without a copy where cuconv has the
kernel, explicit copies and a plan description that says so where not); autocast against
PyTorch's own autocast result; the routes' errors. CUDA autocast is skipped without a device."""
from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch", reason="cuconv.torch needs PyTorch (pip install 'cuconv[torch]')")

import torch.nn.functional as TF  # noqa: E402
from torch import nn  # noqa: E402

import cuconv  # noqa: E402
import cuconv.torch as ct  # noqa: E402
from torch_helpers import assert_close, gen, normwise, randn  # noqa: E402, F401

OPS = torch.ops.cuconv
CL = torch.channels_last
LAYOUTS = ("contiguous", "channels_last", "sliced")


def laid_out(t, layout):
    """``t`` (4-D) as the layout under test: as it is, channels_last, or a non-dense slice of a
    twice-wider tensor holding the same values (every other column)."""
    if layout == "channels_last":
        return t.contiguous(memory_format=CL)
    if layout == "sliced":
        wide = torch.empty((*t.shape[:3], 2 * t.shape[3]), dtype=t.dtype).normal_()
        wide[..., ::2] = t
        return wide[..., ::2]
    return t


# =========================================================================== opcheck
def _grad_like(gen, y, layout):
    return laid_out(randn(gen, tuple(y.shape), y.dtype), layout)


def _conv_args(gen, dt, layout, rg):
    x = laid_out(randn(gen, (2, 4, 7, 6), dt), layout).requires_grad_(rg)
    w = laid_out(randn(gen, (6, 2, 3, 2), dt), "channels_last" if layout == "channels_last" else "contiguous")
    return x, w.requires_grad_(rg), randn(gen, (6,), dt, rg)


def _samples(gen, dt, layout, rg):
    """(operator, args) for every operator: awkward shapes (stride 2, dilation 2, groups,
    'same' with an even kernel, a fused activation, ceil mode, a divisor override)."""
    x, w, b = _conv_args(gen, dt, layout, rg)
    conv = (x, w, b, [2, 1], [1, 0], [1, 2], 2, False, "relu", "auto")
    same = (x, w, None, [1, 1], [0, 0], [1, 1], 2, True, "silu", "auto")
    wt = laid_out(randn(gen, (4, 3, 3, 3), dt), "contiguous").requires_grad_(rg)
    convt = (x, wt, randn(gen, (3,), dt, rg), [2, 2], [1, 0], [1, 0], 1, [1, 1])
    window = [[3, 2], [2, 1], [1, 1], [1, 2], True]
    avg = [[3, 3], [2, 2], [1, 1], True, False, 5]
    with torch.no_grad():
        y, idx = OPS.max_pool2d_with_indices(x, *window)
        yc = OPS.conv2d(*conv)
        yt = OPS.conv_transpose2d(*convt)
    size = list(x.shape)
    return [
        (OPS.conv2d, conv),
        (OPS.conv2d, same),
        (OPS.conv_transpose2d, convt),
        (OPS.max_pool2d, (x, *window)),
        (OPS.max_pool2d_with_indices, (x, *window)),
        (OPS.avg_pool2d, (x, *avg)),
        (OPS.adaptive_avg_pool2d, (x, [1, 1])),
        (OPS.conv2d_backward, (_grad_like(gen, yc, layout).requires_grad_(rg), x, w, size, *conv[3:8],
                               layout == "channels_last", [True, True, True])),
        (OPS.conv2d_backward, (_grad_like(gen, yc, layout), None, w, size, *conv[3:8], False, [True, False, False])),
        (OPS.conv_transpose2d_backward, (_grad_like(gen, yt, layout).requires_grad_(rg), x, wt, size, list(wt.shape),
                                         *convt[3:], layout == "channels_last", [True, True, True])),
        (OPS.max_pool2d_backward, (_grad_like(gen, y, layout).requires_grad_(rg), idx, size, *window,
                                   layout == "channels_last")),
        (OPS.avg_pool2d_backward, (_grad_like(gen, OPS.avg_pool2d(x.detach(), *avg), layout).requires_grad_(rg), size,
                                   *avg, layout == "channels_last")),
        (OPS.adaptive_avg_pool2d_backward, (_grad_like(gen, y[..., :1, :1], layout).requires_grad_(rg), size,
                                            layout == "channels_last")),
    ]


OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "requires_grad"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_opcheck_every_operator(gen, layout, dtype, requires_grad):
    """opcheck: the schema, the autograd registration, the fake implementation (shapes, dtypes,
    strides against the real one) and AOT dispatch with dynamic shapes (outputs and gradients
    compiled vs eager). A backward operator's own gradient is the double-backward refusal, so
    its AOT check runs without requires_grad (the forward operators' checks run it, as
    their backward)."""
    checked = set()
    for op, args in _samples(gen, dtype, layout, requires_grad):
        name = op.default.name().split("::")[1]
        tests = OPCHECK_TESTS[:3] if name.endswith("_backward") and requires_grad else OPCHECK_TESTS
        torch.library.opcheck(op.default, args, test_utils=tests)
        checked.add(name)
    assert checked == set(ct.ops.FORWARD) | set(ct.ops.BACKWARD)


def test_backward_operators_refuse_double_backward(gen):
    x, w, b = _conv_args(gen, torch.float32, "contiguous", True)
    (gx,) = torch.autograd.grad(ct.conv2d(x, w, b, padding=1, groups=2).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward .* is not supported"):
        gx.sum().backward()
    y = ct.max_pool2d(x, 2)
    (gx,) = torch.autograd.grad(y, x, torch.ones_like(y, requires_grad=True), create_graph=True)
    with pytest.raises(RuntimeError, match="double backward .* is not supported"):
        gx.sum().backward()


def test_fake_tensors_give_the_real_shapes_dtypes_and_strides(gen):
    """The fake implementations under FakeTensorMode, with the unbatched, ceil-mode and
    channels_last cases opcheck's samples do not reach."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    x = randn(gen, (1, 3, 9, 9), torch.float32).contiguous(memory_format=CL)
    w = randn(gen, (5, 3, 1, 1), torch.float32)
    calls = [lambda x, w: ct.conv2d(x, w), lambda x, w: ct.conv2d(x[0], w, padding="same"),
             lambda x, w: ct.max_pool2d(x, 2, ceil_mode=True, return_indices=True)[1],
             lambda x, w: ct.adaptive_avg_pool2d(x, 1), lambda x, w: ct.avg_pool2d(x, 2, 3, 1)]
    mode = FakeTensorMode()
    fx, fw = mode.from_tensor(x), mode.from_tensor(w)
    for call in calls:
        real = call(x, w)
        with mode:
            fake = call(fx, fw)
        assert (fake.shape, fake.dtype, fake.stride()) == (real.shape, real.dtype, real.stride())


# =========================================================================== channels_last
def _spy_arrays(monkeypatch, name):
    """The arrays cuconv's function ``name`` (in cuconv.torch.ops) receives, call by call."""
    seen = []
    real = getattr(ct.ops, name)

    def spy(*args, **kw):
        seen.append((args, kw))
        return real(*args, **kw)
    monkeypatch.setattr(ct.ops, name, spy)
    return seen


@pytest.mark.parametrize("which", ["input", "weight", "both"])
def test_channels_last_conv2d_runs_nhwc_kernels_without_copies(gen, monkeypatch, which):
    """channels_last in → channels_last out (the input or the weight, PyTorch's rule): cuconv's
    NHWC kernels read the tensors' own memory (no transposed copy of a channels_last tensor),
    and the values and gradients are PyTorch's."""
    x, w, b = randn(gen, (2, 16, 9, 7), torch.float32), randn(gen, (8, 16, 3, 3), torch.float32), \
        randn(gen, (8,), torch.float32, True)
    if which in ("input", "both"):
        x = x.contiguous(memory_format=CL)
    if which in ("weight", "both"):
        w = w.contiguous(memory_format=CL)
    x.requires_grad_(), w.requires_grad_()
    seen = _spy_arrays(monkeypatch, "cuconv_conv2d")
    y, ref = ct.conv2d(x, w, b, 2, 1), TF.conv2d(x, w, b, 2, 1)
    (xa, wa, _), kw = seen[0][0][:3], seen[0][1]
    assert kw["layout"] == "NHWC" and xa.shape == (2, 9, 7, 16) and wa.shape == (8, 3, 3, 16)
    for t, a in ((x, xa), (w, wa)):
        assert (a.ctypes.data == t.data_ptr()) == t.is_contiguous(memory_format=CL)   # no copy of a cl tensor
    assert y.is_contiguous(memory_format=CL) and y.stride() == ref.contiguous(memory_format=CL).stride()
    assert_close(y, ref, torch.float32, "forward")
    dy = randn(gen, tuple(ref.shape), torch.float32).contiguous(memory_format=CL)
    got, want = torch.autograd.grad(y, (x, w, b), dy), torch.autograd.grad(ref, (x, w, b), dy)
    for g, r, what in zip(got, want, ("dx", "dw", "db")):
        assert_close(g, r, torch.float32, what)
    assert got[0].is_contiguous(memory_format=CL) and got[1].is_contiguous(memory_format=CL)
    desc = ct.plan_conv2d(x, w, b, 2, 1).description
    assert "NHWC float32 kernels" in desc and "read as NHWC without a copy" in desc
    assert ("copied to NHWC" in desc) == (which != "both")      # the other tensor, to the call's format


@pytest.mark.parametrize("op", ["conv_transpose2d", "conv2d_winograd"])
def test_channels_last_where_cuconv_reads_nchw_only_copies_explicitly_and_says_so(gen, op):
    """cuconv's transposed convolution reads NCHW (and an explicitly named NCHW-only
    algorithm): the operator copies explicitly, the result is channels_last and equals
    PyTorch's, and the plan's description names the copies. (The pools read NHWC: the next test.)"""
    dt = torch.float64 if op != "conv2d_winograd" else torch.float32
    x = randn(gen, (2, 3, 9, 8), dt).contiguous(memory_format=CL).requires_grad_()
    wt = randn(gen, (3, 4, 3, 3), dt, True)
    calls = {"conv_transpose2d": (lambda m: m.conv_transpose2d(x, wt, None, 2, 1, 1), ct.plan_conv_transpose2d,
                                  (x, wt, None, 2, 1, 1)),
             "conv2d_winograd": (lambda m: ct.conv2d(x, wt.transpose(0, 1), padding=1, algo="winograd_f2x2_3x3")
                                 if m is ct else TF.conv2d(x, wt.transpose(0, 1), padding=1), None, None)}
    run, plan, args = calls[op]
    y, ref = run(ct), run(TF)
    assert y.is_contiguous(memory_format=CL) and y.stride() == ref.contiguous(memory_format=CL).stride()
    assert_close(y, ref, dt, "forward")
    dy = randn(gen, tuple(ref.shape), dt)
    assert_close(torch.autograd.grad(y, x, dy)[0], torch.autograd.grad(ref, x, dy)[0], dt, "dx")
    if plan is None:
        plan, args = ct.plan_conv2d, (x, wt.transpose(0, 1), None, 1, 1)
        desc = plan(*args, algo="winograd_f2x2_3x3").description
    else:
        desc = plan(*args).description
    assert "copied to NCHW" in desc and "copied back to channels_last" in desc, desc


@pytest.mark.parametrize("dt", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"])
def test_channels_last_and_half_pools_run_natively(gen, op, dt):
    """cuconv's pools read NHWC in every float dtype: a channels_last (and a float16/bfloat16) pool
    runs the NHWC kernels on the tensor as it is — no copy, no conversion — forward and backward;
    the result is channels_last and equals PyTorch's (max: exactly, values and indices)."""
    x = randn(gen, (2, 16, 9, 8), torch.float32).to(dt).contiguous(memory_format=CL).requires_grad_()
    calls = {"max_pool2d": (lambda m: m.max_pool2d(x, 3, 2, 1, ceil_mode=True), ct.plan_max_pool2d,
                            (x, 3, 2, 1, 1, True)),
             "avg_pool2d": (lambda m: m.avg_pool2d(x, 3, 2, 1), ct.plan_avg_pool2d, (x, 3, 2, 1)),
             "adaptive_avg_pool2d": (lambda m: m.adaptive_avg_pool2d(x, 1), ct.plan_adaptive_avg_pool2d, (x,))}
    run, plan, args = calls[op]
    y, ref = run(ct), run(TF)
    assert y.dtype == dt and y.is_contiguous(memory_format=CL)
    assert y.stride() == ref.contiguous(memory_format=CL).stride()
    if op == "max_pool2d":
        assert torch.equal(y, ref)
        yi, ri = ct.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)[1], \
            TF.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)[1]
        assert torch.equal(yi, ri)
    else:
        assert normwise(y, ref) <= {torch.float64: 1e-12, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dt]
    dy = randn(gen, tuple(ref.shape), torch.float32).to(dt).contiguous(memory_format=CL)
    got, want = torch.autograd.grad(y, x, dy)[0], torch.autograd.grad(ref, x, dy)[0]
    assert got.is_contiguous(memory_format=CL)
    assert normwise(got, want) <= {torch.float64: 1e-12, torch.float16: 3e-3, torch.bfloat16: 3e-2}[dt]
    desc = plan(*args).description
    assert "NHWC" in desc and "copied" not in desc and "converted" not in desc, desc
    assert all("_nhwc_" in k for k in plan(*args).kernels), plan(*args).kernels


def test_contiguous_and_sliced_inputs_stay_contiguous(gen):
    x = laid_out(randn(gen, (1, 3, 6, 5), torch.float32), "sliced")
    w = randn(gen, (4, 3, 3, 3), torch.float32)
    for y in (ct.conv2d(x, w), ct.max_pool2d(x, 2), ct.conv_transpose2d(x, w.transpose(0, 1))):
        assert y.is_contiguous()
    assert "input copied to NCHW (contiguous, not dense)" in ct.plan_conv2d(x, w).description
    assert "no copies" in ct.plan_conv2d(x.contiguous(), w).description


# =========================================================================== autocast
# Normwise tolerance against PyTorch's autocast result: both round the inputs to the autocast
# dtype and accumulate in float32; the outputs differ by the output rounding (and summation order).
AUTOCAST_TOL = {torch.bfloat16: 2 ** -7, torch.float16: 2 ** -10}


def _autocast_cases(gen):
    x, w, b = randn(gen, (2, 16, 9, 7), torch.float32), randn(gen, (8, 16, 3, 3), torch.float32), \
        randn(gen, (8,), torch.float32)
    dw = randn(gen, (16, 1, 3, 3), torch.float32)
    wt = randn(gen, (16, 4, 3, 3), torch.float32)
    return {
        "conv2d": (lambda m: m.conv2d(x, w, b, 1, 1), (x, w, b)),
        "conv2d_depthwise": (lambda m: m.conv2d(x, dw, None, 2, 1, 1, 16), (x, dw)),
        "conv2d_channels_last": (lambda m: m.conv2d(x.contiguous(memory_format=CL), w, b, 1, 1), (x, w, b)),
        "conv_transpose2d": (lambda m: m.conv_transpose2d(x, wt, b[:4], 2, 1, 1), (x, wt)),
    }


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("case", ["conv2d", "conv2d_depthwise", "conv2d_channels_last", "conv_transpose2d"])
def test_cpu_autocast_casts_as_pytorchs_conv(gen, monkeypatch, case, dtype):
    """Under torch.autocast("cpu", dtype): the conv ops cast their float32 inputs and return
    ``dtype`` as PyTorch's do, the kernels run in ``dtype`` (conv2d's tensor-core kernels), and
    the values and gradients equal PyTorch's autocast result within the dtype's tolerance."""
    call, leaves = _autocast_cases(gen)[case]
    for t in leaves:
        t.requires_grad_()
    seen = _spy_arrays(monkeypatch, "cuconv_conv2d")
    with torch.autocast("cpu", dtype=dtype):
        y, ref = call(ct), call(TF)
    assert y.dtype == ref.dtype == dtype
    assert y.is_contiguous(memory_format=CL) == ref.is_contiguous(memory_format=CL) or case != "conv2d_channels_last"
    err = normwise(y, ref)
    assert err <= AUTOCAST_TOL[dtype], f"forward: normwise error {err:.3g}"
    if case.startswith("conv2d"):
        assert seen and seen[0][0][0].dtype.name == str(dtype).replace("torch.", "")
    dy = randn(gen, tuple(ref.shape), torch.float32).to(dtype)
    for g, r in zip(torch.autograd.grad(y, leaves, dy), torch.autograd.grad(ref, leaves, dy)):
        assert g.dtype == r.dtype == torch.float32
        assert normwise(g, r) <= 4 * AUTOCAST_TOL[dtype]


def test_autocast_leaves_pools_and_float64_alone(gen):
    """Pools keep their input's dtype under autocast (PyTorch's pools have no autocast rule);
    float16/bfloat16 pools run on cuconv's float16/bfloat16 kernels, exactly (max) or summed in
    float32 and rounded once (average); float64 tensors are not cast (PyTorch's autocast skips them)."""
    x = randn(gen, (2, 3, 9, 8), torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ct.max_pool2d(x, 2).dtype == torch.float32
        h = x.bfloat16()
        for ours, theirs in ((ct.max_pool2d(h, 3, 2, 1), TF.max_pool2d(h, 3, 2, 1)),
                             (ct.avg_pool2d(h, 3, 2, 1), TF.avg_pool2d(h, 3, 2, 1)),
                             (ct.adaptive_avg_pool2d(h, 1), TF.adaptive_avg_pool2d(h, 1))):
            assert ours.dtype == torch.bfloat16
            assert normwise(ours, theirs) <= 2 ** -8
        x64, w64 = x.double(), randn(gen, (4, 3, 3, 3), torch.float64)
        assert ct.conv2d(x64, w64).dtype == TF.conv2d(x64, w64).dtype == torch.float64
    assert torch.equal(ct.max_pool2d(x.half(), 2), TF.max_pool2d(x.half(), 2))
    desc = ct.plan_max_pool2d(x.half(), 2).description
    assert "NCHW float16 kernels" in desc and "converted" not in desc, desc


def test_an_algorithm_named_explicitly_is_never_converted():
    """algo= names kernels: a dtype they do not take is cuconv's TypeError, not a silent float32 run."""
    x, w = torch.zeros(1, 3, 8, 8, dtype=torch.float16), torch.zeros(4, 3, 3, 3, dtype=torch.float16)
    with pytest.raises(TypeError, match=r"algo='winograd_f2x2_3x3' takes dtype float32, got float16"):
        ct.conv2d(x, w, algo="winograd_f2x2_3x3")
    with pytest.raises(TypeError, match=r"int32"):
        ct.conv2d(x.int(), w.int())


CUDA = torch.cuda.is_available() and cuconv.gpu_available()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device seen by both torch and CuPy; none was found")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_cuda_autocast_matches_pytorch(gen, dtype):
    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.ConvTranspose2d(16, 8, 2, 2),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8)).cuda()
    ours = ct.convert(copy.deepcopy(model))[0].to(memory_format=CL)
    x = randn(gen, (2, 16, 12, 10), torch.float32).cuda().contiguous(memory_format=CL)
    with torch.autocast("cuda", dtype=dtype):
        y, ref = ours(x), model(x)
    assert y.dtype == ref.dtype == dtype and y.is_contiguous(memory_format=CL)
    assert normwise(y, ref) <= 4 * AUTOCAST_TOL[dtype]


# =========================================================================== routes
def test_route_errors_list_every_refusal_and_memoize(monkeypatch):
    """A call cuconv cannot run in any candidate route raises once, naming each refusal; a call
    it can run is planned once per signature (later calls: one dictionary lookup)."""
    x = torch.zeros(1, 3, 8, 8, dtype=torch.float16).contiguous(memory_format=CL)
    w = torch.zeros(4, 3, 3, 3, dtype=torch.float16)
    with pytest.raises(TypeError, match=r"cuconv cannot run this call .*NHWC float16: .*NCHW float16: "):
        ct.conv2d(x, w, algo="direct")
    probes = []
    real = ct.ops.cuconv_plan_conv2d
    monkeypatch.setattr(ct.ops, "cuconv_plan_conv2d", lambda *a, **k: probes.append(1) or real(*a, **k))
    cuconv.clear_plan_caches()                   # the routes too
    x32, w32 = x.float(), w.float()
    with cuconv.backend("record"):
        for _ in range(3):
            ct.conv2d(x32, w32)
    assert len(probes) == 1


def test_bad_arguments_are_torchs_errors_before_any_launch():
    x = torch.zeros(1, 3, 8, 8)
    with cuconv.backend("record") as rec:
        with pytest.raises(ValueError, match=r"padding must be an int, a pair, 'valid' or 'same'"):
            ct.conv2d(x, torch.zeros(4, 3, 3, 3), padding="full")
        with pytest.raises(TypeError, match=r"stride must be an int or a pair of ints, got \(1, 2, 3\)"):
            ct.max_pool2d(x, 2, (1, 2, 3))
        with pytest.raises(ValueError, match=r"stride must fit in 64 bits, got 2361183241434822606848"):
            ct.conv2d(x, torch.zeros(4, 3, 3, 3), stride=2 ** 71)      # never the dispatcher's RuntimeError
        with pytest.raises(ValueError, match=r"32-bit"):               # never an OverflowError
            ct.max_pool2d(x, 2, 2 ** 40)
        with pytest.raises(TypeError, match=r"algo must be a str"):
            ct.conv2d(x, torch.zeros(4, 3, 3, 3), algo=3)
        with pytest.raises(ValueError, match=r"activation must be one of"):
            ct.conv2d(x, torch.zeros(4, 3, 3, 3), activation="gelu")
        with pytest.raises(ValueError, match=r"input must be 3-D .* or 4-D"):
            ct.avg_pool2d(torch.zeros(8, 8), 2)
        with pytest.raises(ValueError, match=r"pad"):                    # cuconv's own check, torch's rule
            ct.max_pool2d(x, 2, 2, 2)
        with pytest.raises(NotImplementedError, match=r"output size 1 only"):
            OPS.adaptive_avg_pool2d(x, [2, 2])
        with pytest.raises(ValueError, match=r"output_mask asks for the weight's gradient, which needs the input"):
            OPS.conv2d_backward(torch.zeros(1, 4, 6, 6), None, torch.zeros(4, 3, 3, 3), [1, 3, 8, 8], [1, 1], [0, 0],
                                [1, 1], 1, False, False, [False, True, False])
    assert rec.launches == []


def test_eager_calls_after_a_compiled_model_still_work(gen):
    """Regression (issue 24): dynamo once traced into cuconv's NumPy code (float64: the im2col
    path) and turned its np.int32 kernel arguments into 0-d arrays (TypeError at launch), and
    eager calls made later in the same process failed the same way. The operators are opaque
    to dynamo: compile, run, then call cuconv eagerly on the same shapes."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2)).double()
    reference = copy.deepcopy(model)
    ct.convert(model)
    x = randn(gen, (2, 3, 9, 8), torch.float64)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    assert_close(compiled(x), reference(x), torch.float64, "compiled")
    assert_close(model(x), reference(x), torch.float64, "eager after compile")
    w = model[0].weight.detach()
    with cuconv.backend("emulator"):
        y = cuconv.conv2d(x.numpy(), w.numpy(), algo="im2col_gemm")
    assert_close(torch.from_numpy(y), TF.conv2d(x, w), torch.float64, "cuconv.conv2d after compile")
    assert_close(ct.conv2d(x, model[0].weight, algo="im2col_gemm"), TF.conv2d(x, w), torch.float64, "ct.conv2d")

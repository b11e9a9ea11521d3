"""cuconv.torch in a PyTorch 2 training loop (issue 24), on CPU tensors through the emulator:
models converted with ``cuconv.torch.convert`` — ResNet basic blocks (BatchNorm, residual
adds), MobileNetV2 inverted residuals (depthwise convolutions), a transposed-convolution
decoder — compiled with ``torch.compile(fullgraph=True)`` with 0 graph breaks, forward and
backward equal to eager (float32 ≤ 1e-5, float64 ≤ 1e-12 normwise), channels_last kept;
dynamic batch sizes without recompiling; DistributedDataParallel over two processes (gloo)
equal to plain PyTorch (examples/ddp_train.py). The compile tests trace with
``backend="aot_eager"`` (dynamo and AOTAutograd over the operators' fake implementations and
autograd formulas); Inductor (the default backend) compiles C++ for every model and is marked
``slow`` (minutes a model while Inductor's cache is cold, on 2 busy cores). CUDA graphs of a
compiled step need a GPU.
"""
from __future__ import annotations

import copy
import os
import pathlib
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="cuconv.torch needs PyTorch (pip install 'cuconv[torch]')")

from torch import nn  # noqa: E402
from torch._dynamo.testing import CompileCounterWithBackend  # noqa: E402

import cuconv  # noqa: E402
import cuconv.torch as ct  # noqa: E402
from torch_helpers import NORMWISE, gen, normwise, randn  # noqa: E402, F401

ROOT = pathlib.Path(__file__).resolve().parent.parent
CL = torch.channels_last


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3×3 conv-BN, a residual add (a 1×1 stride-2 projection when
    the shape changes)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.down(x))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1×1 expansion, 3×3 depthwise, 1×1 projection (BN, ReLU6), a
    residual add when the shape is kept."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()] if expand != 1 else []
        self.body = nn.Sequential(*layers, nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                                  nn.BatchNorm2d(hidden), nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def resnet():
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         BasicBlock(8, 8, 1), BasicBlock(8, 12, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(12, 5))


def mobilenet():
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                         InvertedResidual(8, 8, 1, 1), InvertedResidual(8, 12, 2, 3), InvertedResidual(12, 12, 1, 3),
                         nn.AvgPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5))


def decoder():
    return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.ConvTranspose2d(8, 6, 3, 2, 1, output_padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.ConvTranspose2d(6, 3, 4, 2, 1), nn.Sigmoid())


MODELS = {"resnet": resnet, "mobilenet_v2": mobilenet, "decoder": decoder}
CONVERTED = {"resnet": 8, "mobilenet_v2": 11, "decoder": 4}      # the layers convert() swaps


def converted(name, dtype, channels_last=False):
    """The model converted (its parameters and buffers copied from the same initialisation)
    and a second copy to run eagerly."""
    torch.manual_seed(0)
    model, report = ct.convert(MODELS[name]().to(dtype))
    assert len(report.converted) == CONVERTED[name] and not report.skipped, report
    if channels_last:
        model = model.to(memory_format=CL)
    return model, copy.deepcopy(model)


def _step(model, x, dy):
    """Forward and backward: the output, the input's gradient and the parameters' gradients."""
    y = model(x)
    grads = torch.autograd.grad(y, [x, *model.parameters()], dy)
    return y, grads


def _assert_equal_to_eager(compiled, eager, x, gen, dtype):
    """Output and gradients normwise within NORMWISE. A gradient's reference norm is floored at
    the RMS level of all the gradients: some are zero by the model's structure (a bias feeding
    BatchNorm, directly or through a 1×1 convolution), rounding noise that Inductor's reordered
    BatchNorm arithmetic changes, with no relative accuracy to speak of."""
    y, grads = _step(compiled, x, dy := randn(gen, tuple(eager(x).shape), dtype))
    ref, ref_grads = _step(eager, x, dy)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert normwise(y, ref) <= NORMWISE[dtype], f"forward: {normwise(y, ref):.3g}"
    every = torch.cat([r.detach().double().flatten() for r in ref_grads])
    rms = (every.norm() / every.numel() ** 0.5).item()
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        assert g.shape == r.shape and g.dtype == r.dtype
        err = (g.detach().double() - r.detach().double()).norm().item() / max(r.detach().double().norm().item(),
                                                                              rms * r.numel() ** 0.5)
        assert err <= NORMWISE[dtype], f"gradient {i} ({tuple(r.shape)}): {err:.3g}"
    return y


@pytest.mark.parametrize("dtype, channels_last", [(torch.float32, False), (torch.float64, True)],
                         ids=["float32", "float64_channels_last"])
@pytest.mark.parametrize("name", MODELS)
def test_fullgraph_compile_has_no_graph_breaks_and_equals_eager(gen, name, dtype, channels_last):
    model, eager = converted(name, dtype, channels_last)
    x = randn(gen, (2, 3, 15, 13), dtype).requires_grad_()
    if channels_last:
        x = x.detach().contiguous(memory_format=CL).requires_grad_()
    explain = torch._dynamo.explain(model)(x)
    assert explain.graph_break_count == 0 and explain.graph_count == 1, explain.break_reasons
    ops = {str(n.target) for g in explain.graphs for n in g.graph.nodes if n.op == "call_function"}
    assert any("cuconv." in o for o in ops)                 # the operators are in the graph, opaque
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    y = _assert_equal_to_eager(compiled, eager, x, gen, dtype)
    if channels_last and name == "decoder":                  # a 4-D output keeps the memory format
        assert y.is_contiguous(memory_format=CL)


def test_dynamic_batch_sizes_compile_once(gen):
    """dynamic=True: the fake implementations' shapes are symbolic, one compilation serves
    every batch size (and spatial size)."""
    model, eager = converted("mobilenet_v2", torch.float32)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend=counter)
    frames = None
    for n, h in ((2, 15), (3, 15), (5, 17)):
        x = randn(gen, (n, 3, h, 13), torch.float32).requires_grad_()
        _assert_equal_to_eager(compiled, eager, x, gen, torch.float32)
        frames = counter.frame_count if frames is None else frames
        assert counter.frame_count == frames, f"recompiled for batch {n}"


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_inductor_fullgraph_compiles_and_equals_eager(gen, name):
    """torch.compile's default backend (Inductor: C++ for BatchNorm, the adds and activations
    around the cuconv operators, which it calls as extern kernels)."""
    model, eager = converted(name, torch.float32)
    x = randn(gen, (2, 3, 15, 13), torch.float32).requires_grad_()
    _assert_equal_to_eager(torch.compile(model, fullgraph=True), eager, x, gen, torch.float32)


@pytest.mark.slow
def test_inductor_default_mode_channels_last_autocast(gen):
    """torch.compile(model) as most users call it, on a channels_last model under CPU autocast:
    the output equals the eager autocast run within bfloat16's tolerance and stays channels_last."""
    model, eager = converted("decoder", torch.float32, channels_last=True)
    x = randn(gen, (2, 3, 16, 12), torch.float32).contiguous(memory_format=CL)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, ref = torch.compile(model)(x), eager(x)
    assert y.dtype == ref.dtype and y.is_contiguous(memory_format=CL)
    assert normwise(y, ref) <= 2 ** -7


CUDA = torch.cuda.is_available() and cuconv.gpu_available()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device seen by both torch and CuPy; none was found")
def test_cuda_graph_capture_of_a_compiled_training_step(gen):
    """mode="reduce-overhead": Inductor captures the compiled forward and backward in CUDA
    graphs (cuconv's launches on torch's current stream, its outputs and workspaces from
    torch's caching allocator) and replays them; the replayed steps equal eager ones."""
    from torch._dynamo.utils import counters
    model, eager = converted("resnet", torch.float32, channels_last=True)
    model, eager = model.cuda(), eager.cuda()
    compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True)
    counters.clear()
    for _ in range(4):                                   # warm-up runs, the capture, replays
        x = randn(gen, (4, 3, 16, 16), torch.float32).cuda().contiguous(memory_format=CL).requires_grad_()
        _assert_equal_to_eager(compiled, eager, x, gen, torch.float32)
    assert not counters["inductor"].get("cudagraph_skips"), dict(counters["inductor"])


# =========================================================================== distributed
def _ddp(*flags):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "ddp_train.py"), "--world-size", "2",
                          "--backend", "gloo", "--steps", "3", *flags],
                         capture_output=True, text=True, env=env, timeout=900)
    return out.returncode, out.stdout + out.stderr


def test_ddp_over_two_processes_equals_plain_pytorch():
    """DistributedDataParallel (gloo, 2 processes, float64, channels_last) on the converted
    model: after each of 3 SGD steps its parameters equal plain PyTorch's DDP from the same
    initialisation (normwise ≤ 1e-12)."""
    code, out = _ddp("--dtype", "float64", "--channels-last")
    assert code == 0, out
    steps = [line for line in out.splitlines() if line.startswith("step ")]
    assert len(steps) == 3 and "parameters equal within 1e-12" in out, out


@pytest.mark.slow
def test_ddp_with_a_compiled_model():
    code, out = _ddp("--dtype", "float32", "--compile")
    assert code == 0 and "parameters equal within 1e-05" in out, out

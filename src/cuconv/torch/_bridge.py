"""Torch tensors as cuconv arrays and back, without copies, and the backend each call runs on.

* CUDA tensors: ``cupy.from_dlpack(t)`` / ``torch.from_dlpack(a)``, run by cuconv's GPU backend
  on the tensor's device and on torch's *current* stream (``cupy.cuda.Stream.from_external``,
  the CUDA stream protocol, for the duration of the call), so the launches are ordered with
  torch's own work exactly as a torch op's would be. Outputs and workspaces come from torch's
  caching allocator (a CuPy allocator scoped to the call, ``torch_allocator``: each CuPy
  allocation is a torch uint8 tensor on that stream), so ``torch.cuda.memory_allocated`` counts
  them, ``torch.cuda.empty_cache`` returns them, and CuPy's pool keeps nothing behind torch's back.
* CPU tensors: ``t.numpy()`` views (bfloat16 through ml_dtypes' dtype over the same bytes),
  run on the current cuconv backend when it takes NumPy arrays (the emulator in any of its
  checking modes, the record backend), else on a plain emulator; results come back with
  ``torch.from_numpy``. Strided tensors are accepted as they are: cuconv copies a strided
  input to a dense one before its launches.

Every tensor argument of one call is checked first (a tensor, one device, one dtype), before
anything is converted or launched.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..backend import CupyBackend, EmulatorBackend, backend, current_backend, using

_CPU_BACKEND = EmulatorBackend()


def cpu_backend():
    """The backend CPU tensors run on: the current one when it takes NumPy arrays, else the emulator."""
    be = current_backend()
    return be if getattr(be, "array_type", None) is np.ndarray else _CPU_BACKEND


def gpu_backend():
    """The backend CUDA tensors run on: the current one when it is a GPU backend, else CuPy's."""
    be = current_backend()
    if isinstance(be, CupyBackend):
        return be
    with backend("cupy") as gpu:
        return gpu


def check(op: str, **tensors) -> torch.device:
    """The device of a call's tensors (None entries are absent optional tensors): TypeError for a
    non-tensor or mixed dtypes, ValueError for mixed devices or a device cuconv does not run."""
    present = {k: t for k, t in tensors.items() if t is not None}
    for name, t in present.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.layout != torch.strided:
            raise TypeError(f"{op}: {name} must be a dense (strided) tensor, got layout {t.layout}")
    devices = {name: t.device for name, t in present.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"{op}: tensors on different devices: "
                         + ", ".join(f"{k} on {v}" for k, v in devices.items()))
    dtypes = {name: t.dtype for name, t in present.items()}
    if len(set(dtypes.values())) > 1:
        raise TypeError(f"{op}: tensors of different dtypes: "
                        + ", ".join(f"{k} {str(v).replace('torch.', '')}" for k, v in dtypes.items()))
    device = next(iter(devices.values()))
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{op}: cuconv runs CPU tensors (on its emulator) and CUDA tensors, got a tensor on "
                         f"{device}")
    return device


def _bfloat16():
    try:
        import ml_dtypes  # noqa: PLC0415  (optional third-party package, the bf16 extra)
    except ImportError:
        raise TypeError("bfloat16 CPU tensors need the ml_dtypes package (pip install 'cuconv[bf16]')") from None
    return np.dtype(ml_dtypes.bfloat16)


def to_array(t):
    """``t`` (a CPU or CUDA tensor) as a NumPy / CuPy array over the same memory; None stays None."""
    if t is None:
        return None
    if t.is_cpu:
        try:
            return t.numpy(force=True)    # detached, conj/neg bits resolved: a view unless one was set
        except TypeError:                 # bfloat16, which NumPy lacks: ml_dtypes' over the same bytes
            if t.dtype != torch.bfloat16:
                raise
            return t.detach().view(torch.int16).numpy(force=True).view(_bfloat16())
    t = t.detach()
    if t.is_cuda:
        import cupy  # noqa: PLC0415  (optional third-party package)
        return cupy.from_dlpack(t)
    return t.numpy()                      # another device: torch's own error


def from_array(a):
    """A tensor over the memory of ``a`` (a NumPy or CuPy array from a cuconv op); None stays None."""
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        try:
            return torch.from_numpy(a)
        except TypeError:                 # ml_dtypes' bfloat16
            if a.dtype.name != "bfloat16":
                raise
            return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_dlpack(a)


@contextlib.contextmanager
def running_on(device: torch.device):
    """Run the cuconv calls in this block where tensors on ``device`` live (see the module docstring)."""
    if device.type == "cpu":
        with using(cpu_backend()):
            yield
        return
    try:
        import cupy  # noqa: PLC0415  (optional third-party package)
    except ImportError:
        raise ImportError("CUDA tensors run on cuconv's GPU backend, which needs CuPy: install "
                          "cuconv[cuda12] or cuconv[cuda13]") from None
    index = device.index if device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(index)
    with cupy.cuda.Device(index), cupy.cuda.Stream.from_external(stream), \
            cupy.cuda.using_allocator(torch_allocator(cupy, torch.device("cuda", index))), using(gpu_backend()):
        yield


def placement(device: torch.device):
    """Where a call on tensors on ``device`` runs, for the operators' hot path (as ``running_on``,
    without entering anything): ``(backend, key)`` — CPU: the backend ``cpu_backend()`` picks and
    its device key (the device its plans are made for); CUDA: None (``running_on`` enters the GPU
    backend, the device and torch's stream) and the device."""
    if device.type == "cpu":
        be = current_backend()
        if getattr(be, "array_type", None) is not np.ndarray:
            be = _CPU_BACKEND
        return be, be.device_key()
    return None, device


def run_on(be, device: torch.device, fn, *args):
    """``fn(*args)`` where ``placement(device)`` said (``be``): CUDA through ``running_on``; CPU on
    ``be``, entered only when it is not the current backend already."""
    if be is None:
        with running_on(device):
            return fn(*args)
    if be is current_backend():
        return fn(*args)
    with using(be):
        return fn(*args)


def torch_allocator(cupy, device: torch.device):
    """A CuPy allocator (``cupy.cuda.using_allocator``) drawing from torch's caching allocator:
    each allocation is a ``torch.empty`` uint8 tensor on ``device`` (on torch's current stream,
    the one the call runs on), wrapped as ``cupy.cuda.UnownedMemory`` that keeps the tensor alive;
    when CuPy drops the memory the tensor goes back to torch's cache. What cuconv.torch's
    outputs and workspaces come from."""
    index = device.index if device.index is not None else -1

    def allocate(size: int):
        t = torch.empty((int(size),), dtype=torch.uint8, device=device)
        mem = cupy.cuda.UnownedMemory(t.data_ptr(), int(size), t, index)
        return cupy.cuda.MemoryPointer(mem, 0)
    return allocate


class Call:
    """One cuconv call on torch tensors::

        with Call("conv2d", input=x, weight=w, bias=b) as c:
            y = c.tensor(cuconv.conv2d(c.array(x), c.array(w), c.array(b)))

    checks the tensors on entry (before any conversion or launch), then runs the block on
    their device's backend and stream; ``array``/``tensor`` convert without copies."""

    def __init__(self, op: str, **tensors):
        self.device = check(op, **tensors)
        self._block = None

    def __enter__(self):
        self._block = running_on(self.device)
        self._block.__enter__()
        return self

    def __exit__(self, *exc):
        return self._block.__exit__(*exc)

    array = staticmethod(to_array)
    tensor = staticmethod(from_array)

"""The kernel registry: every kernel instantiation an op can launch, as a frozen ``KernelEntry``.

A leaf module: it imports nothing of cuconv. The op modules register their configs when
they are imported (``import cuconv`` imports every op, explicitly, in ``cuconv.ops``);
``registered_kernels()`` is a pure read of what has been registered. The compile matrix,
``cuconv kernels``, the static analysis and the backends' per-file modules walk it. Every label
starts with its file's stem (``conv_dgrad_direct_f32_256`` is in kernels/conv_dgrad.cu), so a
label names the file, the op module and the test file it belongs to.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

# The compile targets of the compile matrix: Turing ... Blackwell (consumer).
ARCHS = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120")
# Architecture-specific targets ("a": features that only that exact arch has, e.g. sm_90a's
# wgmma). Only kernels that list one in their ``archs`` are built for it; the compile matrix
# and the analysis cover ARCHS + ARCH_SPECIFIC. CuPy's NVRTC accepts --gpu-architecture=sm_90a
# (cubin) and compute_90a (PTX) and defines __CUDA_ARCH_FEAT_SM90_ALL there.
ARCH_SPECIFIC = ("sm_90a",)
ALL_ARCHS = ARCHS + ARCH_SPECIFIC


def compile_target(arch) -> str:
    """'sm_90a' stays 'sm_90a'; '90', 'compute_90', (9, 0) become 'sm_90' (see arch.normalize_arch)."""
    if isinstance(arch, tuple):
        arch = f"{arch[0]}{arch[1]}"
    s = str(arch).lower().removeprefix("sm_").removeprefix("compute_")
    if f"sm_{s}" in ARCH_SPECIFIC:
        return f"sm_{s}"
    return "sm_" + s.rstrip("af")


@dataclass(frozen=True)
class KernelEntry:
    """One kernel instantiation that an op can launch.

    ``label`` is the config's generated name (e.g. ``gemm_f32_128x128x8_8x8``): the name in
    the resource report, the pytest id, the bench's ``kernel`` column and the key of the
    backends' per-device function caches. ``expression`` is the NVRTC name expression
    (``gemm_f32<128, 128, 8, 8, 8>``) or the ``extern "C"`` name. ``min_blocks_per_sm`` is
    the occupancy the design promises at ``block_threads`` threads (checked by the
    compile-matrix test on every arch). ``dynamic_smem`` is the most dynamic shared memory
    a launch of it takes (the GPU backend opts the function in to that much once, when it
    loads it). ``options`` are compile options that change the code (``-D...``); the CUDA
    header include path is not one of them: ``cuda_headers=True`` says the kernel includes
    cuda_fp16.h / cuda_bf16.h, which NVRTC needs an ``-I`` for (the emulator has its own).
    """
    file: str
    expression: str
    label: str
    block_threads: int
    min_blocks_per_sm: int = 1
    dynamic_smem: int = 0
    options: tuple[str, ...] = ()
    archs: tuple[str, ...] = ARCHS      # a tensor-core config may need sm_80+
    main: bool = False                  # a main config (the static analysis checks it closely)
    # Per-arch exceptions to min_blocks_per_sm, as ((arch, blocks), ...): a config sized for
    # the 164-228 KiB of shared memory of sm_80/sm_90 may promise fewer blocks on the 100 KiB
    # GeForce parts (sm_86, sm_89, sm_120). The promise is stated, never derived.
    min_blocks_overrides: tuple[tuple[str, int], ...] = ()
    cuda_headers: bool = False

    def min_blocks(self, arch: str) -> int:
        """The occupancy (resident blocks per SM) this config promises on ``arch``."""
        return dict(self.min_blocks_overrides).get(arch, self.min_blocks_per_sm)


_REGISTRY: dict[str, KernelEntry] = {}
_LOCK = threading.Lock()


def stem(file: str) -> str:
    """A kernel file's stem (``conv_dgrad`` for ``conv_dgrad.cu``): the start of every label of its
    kernels, the name of its op module (ops/<stem>.py) and test file (tests/test_<stem>.py)."""
    return file.rsplit(".", 1)[0]


def register_kernel(entry: KernelEntry) -> KernelEntry:
    """Add ``entry``; registering the same definition twice is a no-op, a different one under
    the same label is an error, and so is a label that does not start with its file's stem.
    Returns the registered entry (the one instance every plan refers to)."""
    if not entry.label.startswith(stem(entry.file)):
        raise ValueError(f"kernel label {entry.label!r} must start with its file's stem {stem(entry.file)!r}")
    with _LOCK:
        old = _REGISTRY.get(entry.label)
        if old is not None:
            if old != entry:
                raise ValueError(f"kernel label {entry.label!r} registered twice with different definitions")
            return old
        _REGISTRY[entry.label] = entry
    return entry


def registered_kernels() -> list[KernelEntry]:
    """Every registered kernel instantiation, sorted by (file, label). A pure read."""
    with _LOCK:
        return sorted(_REGISTRY.values(), key=lambda e: (e.file, e.label))


def kernel(label: str) -> KernelEntry:
    """The entry registered under ``label`` (KeyError naming the command that lists them)."""
    try:
        return _REGISTRY[label]
    except KeyError:
        raise KeyError(f"no registered kernel labelled {label!r}; `cuconv kernels` lists them") from None


def find_kernel(name: str) -> KernelEntry:
    """The entry whose label or name expression is ``name``."""
    entry = _REGISTRY.get(name)
    if entry is not None:
        return entry
    for e in registered_kernels():
        if name == e.expression:
            return e
    raise KeyError(f"no registered kernel named {name!r}; `cuconv kernels` lists them")


def file_group(file: str, options: tuple[str, ...] = (), arch: str | None = None) -> tuple[KernelEntry, ...]:
    """The entries compiled together as one module: same file and options (and built for
    ``arch`` when given), sorted by label."""
    return tuple(e for e in registered_kernels()
                 if e.file == file and e.options == tuple(options) and (arch is None or arch in e.archs))

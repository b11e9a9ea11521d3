"""Exceptions raised by the CPU emulator."""

from __future__ import annotations


class EmulatorError(RuntimeError):
    """Base class of every error the emulator raises (besides TypeError/ValueError for bad arguments)."""


class CompileError(EmulatorError):
    """The C++ compiler rejected the kernel source (or a name expression).

    ``log`` holds the compiler's full output, ``command`` the command line.
    """

    def __init__(self, message: str, log: str = "", command: list[str] | None = None):
        super().__init__(message)
        self.log = log
        self.command = command or []


class LaunchError(EmulatorError):
    """A launch failed while running. ``kernel`` is the kernel's name expression,
    ``block``/``thread`` the (x, y, z) indices where it happened (``None`` when
    unknown) and ``report`` the full text (a sanitizer report, for instance)."""

    def __init__(self, message: str, *, kernel: str | None = None, block=None, thread=None, report: str = ""):
        super().__init__(message)
        self.kernel = kernel
        self.block = tuple(block) if block is not None else None
        self.thread = tuple(thread) if thread is not None else None
        self.report = report


class KernelFault(LaunchError):
    """The kernel crashed or a sanitizer reported an error (out-of-bounds or
    misaligned access, undefined behaviour), or the kernel called ``__trap()``
    or misused a warp primitive."""


class BarrierDivergence(LaunchError):
    """Threads of a block disagree on synchronisation: some thread exited or waits
    at a different ``__syncthreads()`` than the others, a warp collective names a
    lane that exited, or no thread can make progress (deadlock)."""


Deadlock = BarrierDivergence


class KernelTimeout(LaunchError):
    """The launch did not finish within the time limit (``timeout``)."""

    def __init__(self, message: str, *, timeout: float, **kw):
        super().__init__(message, **kw)
        self.timeout = timeout

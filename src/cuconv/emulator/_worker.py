"""The worker processes that run kernels (runner.cpp), one per sanitizer setting.

Why a separate process for every launch, sanitized or not: a wild pointer, an
ASan/UBSan report (which aborts), a stack overflow or a kernel that never ends
must not take the Python interpreter with it. The worker stays alive between
launches (starting one costs a few milliseconds; a launch's round trip is tens
of microseconds plus copying the arrays), is restarted after it dies, and
keeps every library it has loaded.

Arrays travel through a memfd both processes map: Python copies each group of
overlapping arrays in, the worker runs the kernel on it (or on exactly-sized
heap copies under ASan), Python copies the groups the kernel may write back.
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import mmap
import os
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

from . import _build
from .errors import BarrierDivergence, EmulatorError, KernelFault, KernelTimeout

# Status codes of cuconv_emu_launch (runtime.h) and the runner.
_OK, _DIVERGENCE, _FAULT, _BAD_LAUNCH, _INTERNAL = 0, 1, 2, 3, 4


def _pack_str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<I", len(b)) + b


class _Shm:
    """A growable shared-memory file (memfd) mapped in this process."""

    def __init__(self):
        self.fd = os.memfd_create("cuconv-emulator", 0) if hasattr(os, "memfd_create") else None
        if self.fd is None:
            f = tempfile.NamedTemporaryFile(prefix="cuconv-emu-", dir="/dev/shm" if os.path.isdir("/dev/shm")
                                            else None, delete=False)
            self.fd = os.dup(f.fileno())
            self._path = f.name
            f.close()
        else:
            self._path = f"/proc/{os.getpid()}/fd/{self.fd}"
        self.size = 0
        self.map = None
        self._anchor = None
        self.addr = 0

    @property
    def path(self) -> str:
        return self._path

    def reserve(self, size: int) -> None:
        if size <= self.size:
            return
        new = max(size, 2 * self.size, 1 << 20)
        new = (new + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        self._release()
        os.ftruncate(self.fd, new)
        self.map = mmap.mmap(self.fd, new)
        self._anchor = ctypes.c_char.from_buffer(self.map)
        self.addr = ctypes.addressof(self._anchor)
        self.size = new

    def _release(self) -> None:
        self._anchor = None
        if self.map is not None:
            self.map.close()
            self.map = None

    def close(self) -> None:
        self._release()
        try:
            os.close(self.fd)
        except OSError:
            pass
        if not self._path.startswith("/proc/"):
            try:
                os.unlink(self._path)
            except OSError:
                pass


_FAULT_LINE = re.compile(r"==CUCONV_EMU_(?:FAULT|WHERE)== (?P<what>\S+)(?: kernel=(?P<kernel>.*?) "
                         r"block=(?P<block>-?\d+,-?\d+,-?\d+) thread=(?P<thread>-?\d+,-?\d+,-?\d+))?\s*$",
                         re.MULTILINE)


def _triple(s: str | None):
    if not s:
        return None
    t = tuple(int(v) for v in s.split(","))
    return None if t[0] < 0 else t


def _summary(report: str) -> str:
    """The one line of a sanitizer report that says what went wrong."""
    for pattern in (r"^.*runtime error:.*$", r"^SUMMARY: .*$", r"^==\d+==ERROR: .*$",
                    r"^.*(?:Assertion|assert).*failed.*$"):
        m = re.search(pattern, report, re.MULTILINE)
        if m:
            return m.group(0).strip()
    return ""


def _append_only_file():
    """An unlinked temporary file opened O_APPEND, so the worker keeps writing at
    the end after Python truncates what it has read."""
    f = tempfile.TemporaryFile()
    fcntl.fcntl(f.fileno(), fcntl.F_SETFL, fcntl.fcntl(f.fileno(), fcntl.F_GETFL) | os.O_APPEND)
    return f


class Worker:
    """One runner process and the shared memory it uses."""

    def __init__(self, sanitize: str):
        self.sanitize = sanitize
        self.lock = threading.RLock()
        self.proc: subprocess.Popen | None = None
        self.pid_owner = os.getpid()
        self.shm = _Shm()
        self.out = _append_only_file()
        self.err = _append_only_file()
        self.reply_r = -1
        self.described: dict[str, str] = {}

    # --- process management ---------------------------------------------------------------
    def _start(self) -> None:
        runner = _build.build_runner(self.sanitize)
        r, w = os.pipe()
        try:
            env = dict(os.environ)
            env.pop("LD_PRELOAD", None)  # a preloaded sanitizer runtime would confuse ours
            self.proc = subprocess.Popen([str(runner), str(w)], stdin=subprocess.PIPE, stdout=self.out,
                                         stderr=self.err, pass_fds=(w,), close_fds=True, env=env)
        finally:
            os.close(w)
        self.reply_r = r

    def _ensure(self) -> None:
        if self.pid_owner != os.getpid():  # forked: this process needs its own worker and files
            self.proc = None
            self.reply_r = -1
            self.pid_owner = os.getpid()
            self.shm = _Shm()
            self.out = _append_only_file()
            self.err = _append_only_file()
        if self.proc is None or self.proc.poll() is not None:
            self._discard()
            self._start()

    def _discard(self) -> None:
        if self.proc is not None:
            try:
                self.proc.kill()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except Exception:
                pass
            for f in (self.proc.stdin,):
                try:
                    f.close()
                except Exception:
                    pass
        self.proc = None
        if self.reply_r >= 0:
            os.close(self.reply_r)
            self.reply_r = -1

    def close(self) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                try:
                    self.proc.stdin.close()  # the worker exits at end of input
                    self.proc.wait(timeout=2)
                except Exception:
                    pass
            self._discard()
            self.shm.close()
            self.out.close()
            self.err.close()

    # --- request / reply ----------------------------------------------------------------------
    def _err_size(self) -> int:
        return os.fstat(self.err.fileno()).st_size

    def _read_err(self, start: int) -> str:
        """The worker's stderr since `start` (a report), then forgotten."""
        size = self._err_size()
        text = os.pread(self.err.fileno(), max(0, size - start), start).decode(errors="replace")
        os.ftruncate(self.err.fileno(), 0)
        return text

    def _forward_output(self, stderr_too: bool = False) -> None:
        """Copy what the kernel printed (printf) to sys.stdout, as CUDA shows it after a sync
        (and, after a launch that succeeded, what it wrote to stderr to sys.stderr)."""
        for f, stream, wanted in ((self.out, sys.stdout, True), (self.err, sys.stderr, stderr_too)):
            fd = f.fileno()
            size = os.fstat(fd).st_size
            if size and wanted:
                text = os.pread(fd, size, 0).decode(errors="replace")
                os.ftruncate(fd, 0)
                stream.write(text)
                stream.flush()

    def _read_reply(self, deadline: float | None) -> bytes | None:
        """The reply payload, None if the worker died; raises TimeoutError at the deadline."""
        buf = b""
        need = 4
        length = None
        while True:
            while len(buf) < need:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                poller = select.poll()
                poller.register(self.reply_r, select.POLLIN | select.POLLHUP | select.POLLERR)
                if not poller.poll(None if timeout is None else int(timeout * 1000) + 1):
                    raise TimeoutError
                chunk = os.read(self.reply_r, need - len(buf))
                if not chunk:
                    return None
                buf += chunk
            if length is None:
                length = struct.unpack("<I", buf[:4])[0]
                buf = b""
                need = length
                if length == 0:
                    return b""
                continue
            return buf

    def request(self, payload: bytes, *, timeout: float | None = None, kernel: str | None = None):
        """Send one request; returns the reply payload, or raises for a dead / stuck worker."""
        self._ensure()
        err_start = self._err_size()
        try:
            self.proc.stdin.write(struct.pack("<I", len(payload)) + payload)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died; the reply read below sees that
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            reply = self._read_reply(deadline)
        except TimeoutError:
            self._timeout(err_start, timeout, kernel)
        if reply is None:
            self._died(err_start, kernel)
        self._forward_output(stderr_too=True)
        return reply

    def _timeout(self, err_start: int, timeout: float, kernel: str | None):
        # Ask where it is stuck, then kill it.
        try:
            self.proc.send_signal(signal.SIGUSR1)
        except OSError:
            pass
        time.sleep(0.2)
        self._discard()
        text = self._read_err(err_start)
        self._forward_output()
        where = list(_FAULT_LINE.finditer(text))
        block = thread = None
        if where:
            block, thread = _triple(where[-1].group("block")), _triple(where[-1].group("thread"))
            kernel = where[-1].group("kernel") or kernel
        at = f" (it was running block {block}, thread {thread})" if block is not None else ""
        raise KernelTimeout(f"kernel {kernel!r} did not finish within {timeout:g} s{at}; it was stopped. "
                            f"Raise the limit with timeout=... or CUCONV_EMU_TIMEOUT if it is just slow.",
                            timeout=timeout, kernel=kernel, block=block, thread=thread, report=text)

    def _died(self, err_start: int, kernel: str | None):
        code = self.proc.wait() if self.proc is not None else None
        self._discard()
        self._forward_output()
        report = self._read_err(err_start)
        m = None
        for m in _FAULT_LINE.finditer(report):
            pass
        block = thread = None
        what = ""
        if m:
            block, thread = _triple(m.group("block")), _triple(m.group("thread"))
            kernel = m.group("kernel") or kernel
            what = m.group("what")
        summary = _summary(report)
        if not summary:
            sig = -code if code is not None and code < 0 else (code - 128 if code and code > 128 else None)
            if what.startswith("signal="):
                summary = what[len("signal="):].replace(
                    "(stack-overflow:raise-CUCONV_EMU_STACK_KB)",
                    " (stack overflow: a fiber's stack is $CUCONV_EMU_STACK_KB KiB, 256 by default)")
            elif sig:
                summary = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
            else:
                summary = f"the worker exited with status {code}"
        at = f" in block {block}, thread {thread}" if block is not None else ""
        tail = report.strip()
        if len(tail) > 6000:
            tail = tail[:3000] + "\n...\n" + tail[-3000:]
        raise KernelFault(f"kernel {kernel!r} faulted{at}: {summary}" + (f"\n{tail}" if tail else ""),
                          kernel=kernel, block=block, thread=thread, report=report)

    # --- the two requests -----------------------------------------------------------------------
    def describe(self, library: str) -> str:
        with self.lock:
            if library in self.described:
                return self.described[library]
            reply = self.request(struct.pack("<I", 1) + _pack_str(library), timeout=120)
            status = struct.unpack_from("<I", reply)[0]
            if status != _OK:
                raise EmulatorError(_parse_launch_reply(reply)[3])
            n = struct.unpack_from("<I", reply, 4)[0]
            text = reply[8:8 + n].decode()
            self.described[library] = text
            return text

    def read_global(self, library: str, index: int) -> bytes:
        """The current bytes of global variable `index` of the library."""
        with self.lock:
            reply = self.request(struct.pack("<I", 3) + _pack_str(library) + struct.pack("<I", index), timeout=120)
            status = struct.unpack_from("<I", reply)[0]
            if status != _OK:
                raise EmulatorError(_parse_launch_reply(reply)[3])
            n = struct.unpack_from("<I", reply, 4)[0]
            return reply[8:8 + n]

    def launch(self, library: str, index: int, grid, block, shared_mem: int, order: int, seed: int,
               groups, args, *, timeout: float, kernel: str, bindings=()) -> None:
        """Run one launch. `groups` is a list of (address, size, write_back) memory ranges to
        copy in (and back); `args` a list of ("ptr", group, offset) / ("ptr", -1, 0) /
        ("bytes", b"...") entries (or ("map", bytes, group, offset, at): bytes whose 8 bytes at
        ``at`` become the worker's address of the group plus offset: a tensor map); `bindings` (global index, array) pairs: each array is
        written to the library's variable before the launch and read back after it."""
        groups = list(groups)
        bound = []
        for gidx, array in bindings:
            bound.append((gidx, len(groups)))
            groups.append((array.__array_interface__["data"][0], array.nbytes, True))
        with self.lock:
            # Place each group at an offset with the same address mod 256 as the
            # original, so alignment (and misalignment) survives the copy.
            layout = []
            off = 0
            for addr, size, _ in groups:
                mis = addr % 256
                off = (off + 255) // 256 * 256 + mis
                layout.append(off)
                off += size
            self._ensure()
            self.shm.reserve(max(off, 1))
            for (addr, size, _), o in zip(groups, layout):
                if size:
                    ctypes.memmove(self.shm.addr + o, addr, size)
            msg = [struct.pack("<I", 2), _pack_str(library), struct.pack("<I", index),
                   struct.pack("<3I", *grid), struct.pack("<3I", *block),
                   struct.pack("<QIQ", shared_mem, order, seed), _pack_str(self.shm.path),
                   struct.pack("<QI", self.shm.size, len(groups))]
            for (addr, size, wb), o in zip(groups, layout):
                msg.append(struct.pack("<QQII", o, size, addr % 256, 1 if wb else 0))
            msg.append(struct.pack("<I", len(args)))
            for a in args:
                if a[0] == "ptr":
                    msg.append(struct.pack("<IiQ", 0, a[1], a[2]))
                elif a[0] == "map":   # bytes holding the worker's address of group a[2] + a[3] at a[4]
                    msg.append(struct.pack("<II", 2, len(a[1])) + a[1] + struct.pack("<iQI", a[2], a[3], a[4]))
                else:
                    msg.append(struct.pack("<II", 1, len(a[1])) + a[1])
            msg.append(struct.pack("<I", len(bound)))
            for gidx, group in bound:
                msg.append(struct.pack("<II", gidx, group))
            reply = self.request(b"".join(msg), timeout=timeout, kernel=kernel)
            status, (kname, where, text) = struct.unpack_from("<I", reply)[0], _parse_launch_reply(reply)[1:]
            if status == _OK:
                for (addr, size, wb), o in zip(groups, layout):
                    if wb and size:
                        ctypes.memmove(addr, self.shm.addr + o, size)
                return
            kernel = kname or kernel
            blk = tuple(where[:3]) if where[0] >= 0 else None
            thr = tuple(where[3:]) if where[3] >= 0 else None
            at = (f" in block {blk}" if blk is not None else "") + (f", thread {thr}" if thr is not None else "")
            if status == _DIVERGENCE:
                raise BarrierDivergence(f"kernel {kernel!r}{at}: {text}", kernel=kernel, block=blk, thread=thr,
                                        report=text)
            if status == _FAULT:
                raise KernelFault(f"kernel {kernel!r}{at}: {text}", kernel=kernel, block=blk, thread=thr,
                                  report=text)
            if status == _BAD_LAUNCH:
                raise ValueError(f"kernel {kernel!r}: {text}")
            raise EmulatorError(f"kernel {kernel!r}: {text}")


def _parse_launch_reply(reply: bytes):
    status = struct.unpack_from("<I", reply)[0]
    pos = 4
    n = struct.unpack_from("<I", reply, pos)[0]
    pos += 4
    kernel = reply[pos:pos + n].decode(errors="replace")
    pos += n
    where = struct.unpack_from("<6i", reply, pos)
    pos += 24
    n = struct.unpack_from("<I", reply, pos)[0]
    pos += 4
    text = reply[pos:pos + n].decode(errors="replace")
    return status, kernel, where, text


_workers: dict[str, Worker] = {}
_workers_guard = threading.Lock()


def worker(sanitize: str) -> Worker:
    with _workers_guard:
        w = _workers.get(sanitize)
        if w is None:
            w = _workers[sanitize] = Worker(sanitize)
        return w


@atexit.register
def _shutdown() -> None:
    for w in list(_workers.values()):
        try:
            w.close()
        except Exception:
            pass

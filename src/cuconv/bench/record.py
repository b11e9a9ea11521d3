"""Which kernels an op call launched: a recorder around the backend's ``launch``.

The ops do not report their kernel configs; every launch goes through
``backend.launch(file, expression, grid, block, args, shared_mem, options)``, so the
recorder wraps that method on the backend object for the duration of a ``with`` block
(backend.py is not touched) and maps each (file, expression, options) to its registered
``KernelEntry`` label: the bench's ``kernel`` column.

``dry_run()`` records launches without running them, on never-touched NumPy arrays: it
tells which configs an op picks for a full-size problem on a machine without a GPU.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field


@dataclass
class Launch:
    file: str
    expression: str
    grid: tuple
    block: tuple
    args: tuple = field(repr=False)
    shared_mem: int = 0
    options: tuple = ()


class LaunchRecorder:
    """``with LaunchRecorder(be) as rec: op(...)``; then ``rec.launches`` / ``rec.labels()``.

    ``execute=False`` records without running the kernels (used by DryRunBackend).
    """

    def __init__(self, be, execute: bool = True):
        self.be = be
        self.execute = execute
        self.launches: list[Launch] = []
        self._had_instance_attr = False
        self._saved = None

    def __enter__(self) -> "LaunchRecorder":
        be = self.be
        self._had_instance_attr = "launch" in vars(be)
        self._saved = be.launch
        inner = self._saved

        def launch(file, expression, grid, block, args, shared_mem=0, options=()):
            self.launches.append(Launch(file, expression, tuple(grid), tuple(block), tuple(args),
                                        int(shared_mem), tuple(options)))
            if self.execute:
                inner(file, expression, grid, block, args, shared_mem=shared_mem, options=options)

        be.launch = launch
        return self

    def __exit__(self, *exc) -> None:
        if self._had_instance_attr:
            self.be.launch = self._saved
        else:
            del self.be.launch

    def kernels(self) -> list[dict]:
        """One dict per distinct kernel, in first-launch order: label, entry, launches, grid, block."""
        out: dict[tuple, dict] = {}
        for ln in self.launches:
            key = (ln.file, ln.expression, ln.options)
            if key not in out:
                entry = find_entry(*key)
                out[key] = dict(label=entry.label if entry else ln.expression, entry=entry,
                                registered=entry is not None, launches=0, grid=list(ln.grid),
                                block=list(ln.block))
            out[key]["launches"] += 1
        return list(out.values())

    def labels(self) -> list[str]:
        return [k["label"] for k in self.kernels()]


def find_entry(file: str, expression: str, options=()):
    """The registered KernelEntry launched as (file, expression, options), or None.

    Launch options may carry machine-specific flags (include paths on the GPU) that the
    registry leaves out; when no entry matches exactly, the single entry with that file and
    expression is the one."""
    from ..compile import registered_kernels  # noqa: PLC0415
    same = [e for e in registered_kernels() if e.file == file and e.expression == expression]
    exact = [e for e in same if tuple(e.options) == tuple(options)]
    if exact:
        return exact[0]
    return same[0] if len(same) == 1 else None


def kernel_resources(kernels: list[dict], arch: str) -> tuple[int | None, int | None, str | None]:
    """Fill registers/spill_bytes of each kernel dict for ``arch``; return (max regs, sum spills, note)."""
    from ..compile import compile_entry  # noqa: PLC0415
    regs, spills, problems = [], [], []
    for k in kernels:
        entry = k.get("entry")
        k["registers"] = k["spill_bytes"] = k["issue_ceiling"] = k["math_share"] = None
        if entry is None:
            problems.append(f"{k['label']} is not a registered kernel")
            continue
        if arch not in entry.archs:
            problems.append(f"{k['label']} is not built for {arch}")
            continue
        try:
            res = compile_entry(entry, arch)
        except Exception as exc:  # a compile error is reported in the row, not raised
            problems.append(f"{k['label']} failed to compile for {arch}: {str(exc).splitlines()[0]}")
            continue
        k["registers"], k["spill_bytes"] = res.registers, res.spill_bytes
        from ..analysis import bench_columns  # noqa: PLC0415  (never raises; None without nvdisasm)
        cols = bench_columns(entry, arch)
        k["issue_ceiling"], k["math_share"] = cols["issue_ceiling"], cols["math_share"]
        regs.append(res.registers)
        spills.append(res.spill_bytes)
    if problems or not regs:
        return (max(regs) if regs else None, sum(spills) if spills else None,
                "; ".join(problems) or None)
    return max(regs), sum(spills), None


def kernels_for_json(kernels: list[dict]) -> list[dict]:
    return [{k: v for k, v in d.items() if k != "entry"} for d in kernels]


# The backend name a dry run reports. Ops branch only on "cupy" (device queries) and
# "emulator" (an op may keep its own emulator modules and bypass ``launch``); any other name
# plans as the emulator does (for a 132-SM device) and launches through ``launch``.
DRY_RUN_NAME = "dry-run"


@contextlib.contextmanager
def dry_run():
    """``with dry_run() as rec: op(np.empty(...), ...)``: rec.launches holds what the op would
    launch, with every launch recorded and none run. Arrays from ``np.empty`` that no kernel
    writes cost only the pages the op itself touches."""
    from ..backend import backend  # noqa: PLC0415
    with backend("emulator") as be, LaunchRecorder(be, execute=False) as rec:
        be.name = DRY_RUN_NAME      # this instance only; it is dropped with the block
        yield rec

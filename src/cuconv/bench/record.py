"""Which kernels an op call launches, from the record backend or from its plan.

``recorded_kernels(call)`` runs ``call()`` (an op on NumPy arrays) on the record backend
(``cuconv.backend("record")``): the op's real host path runs — checks, planning, the function
cache — and every launch is recorded, none executed; arrays from ``np.empty`` that no kernel
writes cost only the pages the op itself touches, so this tells which configs an op picks for a
full-size problem on a machine without a GPU. ``plan_kernels(plan)`` is the same table from a
plan (the GPU path). Each kernel's label is its registered ``KernelEntry`` label: the bench's
``kernel`` column.
"""
from __future__ import annotations

from ..analysis import bench_columns
from ..backend import backend
from ..compile import compile_entry, device_target
from ..registry import kernel as registered_kernel


def kernel_table(launches) -> list[dict]:
    """One dict per distinct kernel, in first-launch order: label, entry, launches, grid, block.
    ``launches``: the record backend's LaunchRecords or a plan's Launches. A library step (a
    plan's FftStep: no block of its own) is listed with ``library=True`` and no entry."""
    out: dict[str, dict] = {}
    for ln in launches:
        label = ln.kernel
        if label not in out:
            library = tuple(ln.block) == ()
            try:
                entry = None if library else registered_kernel(label)
            except KeyError:
                entry = None
            out[label] = dict(label=label, entry=entry, registered=entry is not None, launches=0,
                              grid=list(ln.grid), block=list(ln.block), library=library)
        out[label]["launches"] += 1
    return list(out.values())


def recorded_kernels(call, cc: int | None = None, sms: int | None = None) -> list[dict]:
    """The kernel table of ``call()`` run on the record backend (for a device of ``cc``/``sms``)."""
    with backend("record", cc=cc, sms=sms) as be:
        be.keep_args = False
        call()
        return kernel_table(be.launches)


def plan_kernels(plan) -> list[dict]:
    return kernel_table(plan.launches)


def kernel_resources(kernels: list[dict], arch: str) -> tuple[int | None, int | None, str | None]:
    """Fill registers/spill_bytes (and the static analysis' columns) of each kernel dict for a
    device of ``arch``, from the build that device loads; return (max regs, sum spills, note)."""
    regs, spills, problems = [], [], []
    for k in kernels:
        entry = k.get("entry")
        k["registers"] = k["spill_bytes"] = k["issue_ceiling"] = k["math_share"] = k["features"] = None
        if k.get("library"):          # cuFFT's own kernels: nothing of ours to compile
            continue
        if entry is None:
            problems.append(f"{k['label']} is not a registered kernel")
            continue
        # The build a device of `arch` loads: sm_90 devices run the wgmma kernels' sm_90a build.
        target = device_target(entry, arch)
        if target is None:
            problems.append(f"{k['label']} is not built for {arch}")
            continue
        try:
            res = compile_entry(entry, target)
        except Exception as exc:  # a compile error is reported in the row, not raised
            problems.append(f"{k['label']} failed to compile for {target}: {str(exc).splitlines()[0]}")
            continue
        k["registers"], k["spill_bytes"] = res.registers, res.spill_bytes
        cols = bench_columns(entry, target)     # never raises; None without nvdisasm
        k["issue_ceiling"], k["math_share"] = cols["issue_ceiling"], cols["math_share"]
        k["features"] = cols["features"]        # TMA / warp specialization / setmaxnreg, from the SASS
        regs.append(res.registers)
        spills.append(res.spill_bytes)
    if problems or not regs:
        return (max(regs) if regs else None, sum(spills) if spills else None,
                "; ".join(problems) or None)
    return max(regs), sum(spills), None


def kernels_for_json(kernels: list[dict]) -> list[dict]:
    return [{k: v for k, v in d.items() if k != "entry"} for d in kernels]

"""`cuconv info`: versions, devices, clocks and derived peaks; honest without a GPU."""
from __future__ import annotations

import json

from ..device import device_report


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _fmt(v, unit="", scale=1.0, digits=0):
    if v is None:
        return "n/a"
    return f"{v / scale:.{digits}f}{unit}" if isinstance(v, (int, float)) else f"{v}{unit}"


def run(args) -> int:

    rep = device_report()
    if args.json:
        print(json.dumps(rep.to_dict(), indent=2))
        return 0
    print(f"cuconv {rep.cuconv}  (Python {rep.python}, {rep.platform})")
    for key in ("numpy", "cupy", "cuda_runtime", "cuda_driver", "nvrtc", "nvml", "nvml_driver"):
        print(f"  {key:<13}{getattr(rep, key) or 'n/a'}")
    print(f"  compile targets (NVRTC, no GPU needed): {' '.join(rep.compile_targets)}")
    if not rep.devices:
        print("\nNo CUDA device found: " + rep.errors.get("devices", "unknown reason"))
        print("  GPU ops raise cuconv.NoDeviceError here. The kernels still compile (`cuconv kernels`)"
              " and run on the CPU through the emulator (`cuconv check`,"
              " `with cuconv.backend('emulator'):`).")
    for d in rep.devices:
        print(f"\nDevice {d.index}: {d.name}  (compute capability {d.compute_capability}, {d.arch})")
        print(f"  SMs {d.sm_count}   memory {_fmt(d.total_memory_bytes, ' GiB', 2**30, 1)} total, "
              f"{_fmt(d.used_memory_bytes, ' GiB', 2**30, 1)} used   L2 {_fmt(d.l2_cache_bytes, ' MiB', 2**20, 0)}")
        print(f"  SM clock {_fmt(d.sm_clock_mhz, ' MHz')} (max {_fmt(d.sm_clock_max_mhz, ' MHz')})   "
              f"memory clock {_fmt(d.mem_clock_mhz, ' MHz')} (max {_fmt(d.mem_clock_max_mhz, ' MHz')}), "
              f"bus {_fmt(d.memory_bus_width_bits, ' bit')}")
        print(f"  power {_fmt(d.power_w, ' W', 1, 1)} / limit {_fmt(d.power_limit_w, ' W', 1, 0)}   "
              f"temperature {_fmt(d.temperature_c, ' C')}   clock events: {', '.join(d.throttle_reasons) or 'none'}")
        print(f"  derived peaks: fp32 {_fmt(d.peak_fp32_tflops, ' TFLOP/s', 1, 1)} "
              "(SMs x FP32 lanes/SM x 2 x max SM clock), "
              f"DRAM {_fmt(d.peak_dram_gbps, ' GB/s', 1, 0)} (2 x max memory clock x bus width / 8)")
    other = {k: v for k, v in rep.errors.items() if k != "devices"}
    if other:
        print("\nNotes:")
        for k, v in other.items():
            print(f"  {k}: {v}")
    return 0

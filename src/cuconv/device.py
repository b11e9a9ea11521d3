"""What this machine has: library versions, CUDA devices (CuPy + NVML) and their peak rates.

Never raises for a missing GPU, driver or NVML: every reading that cannot be taken is
``None`` with the reason in ``errors``; ``cuconv info`` prints the result.
"""
from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field

import numpy as np

from ._version import __version__
from .arch import ARCH_LIMITS, normalize_arch, peak_dram_bandwidth, peak_fp32_flops
from .backend import DeviceCaps
from .compile import ARCHS


@dataclass
class DeviceInfo:
    index: int
    name: str
    compute_capability: str
    arch: str
    sm_count: int
    total_memory_bytes: int
    l2_cache_bytes: int | None = None
    used_memory_bytes: int | None = None
    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    mem_clock_mhz: int | None = None
    mem_clock_max_mhz: int | None = None
    memory_bus_width_bits: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    temperature_c: int | None = None
    throttle_reasons: list[str] = field(default_factory=list)
    peak_fp32_tflops: float | None = None
    peak_dram_gbps: float | None = None
    uuid: str | None = None


@dataclass
class Report:
    cuconv: str
    python: str
    platform: str
    numpy: str | None
    cupy: str | None
    cuda_runtime: str | None
    cuda_driver: str | None
    nvrtc: str | None
    nvml: str | None
    nvml_driver: str | None
    compile_targets: tuple[str, ...]
    devices: list[DeviceInfo]
    errors: dict[str, str]

    def to_dict(self) -> dict:
        return asdict(self)


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


# NVML clock-event (throttle) reason bits, named as nvidia-smi names them.
_THROTTLE_BITS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap",
    0x8: "hw_slowdown", 0x10: "sync_boost", 0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown", 0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}
# Reasons that mean the measured clocks are below what the card can do under load.
THROTTLING = {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
              "hw_power_brake_slowdown"}


def decode_throttle_reasons(mask: int) -> list[str]:
    return [name for bit, name in _THROTTLE_BITS.items() if mask & bit]


def nvml_readings(handle) -> dict:
    """Clocks, power, temperature and clock-event reasons of one NVML device handle."""
    import pynvml  # noqa: PLC0415

    def read(fn, *a):
        try:
            return fn(handle, *a)
        except pynvml.NVMLError:
            return None

    out = {
        "sm_clock_mhz": read(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM),
        "sm_clock_max_mhz": read(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM),
        "mem_clock_mhz": read(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM),
        "mem_clock_max_mhz": read(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_MEM),
        "memory_bus_width_bits": read(pynvml.nvmlDeviceGetMemoryBusWidth)
        if hasattr(pynvml, "nvmlDeviceGetMemoryBusWidth") else None,
        "temperature_c": read(pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU),
    }
    p = read(pynvml.nvmlDeviceGetPowerUsage)
    out["power_w"] = p / 1000.0 if p is not None else None
    pl = read(pynvml.nvmlDeviceGetEnforcedPowerLimit)
    out["power_limit_w"] = pl / 1000.0 if pl is not None else None
    fn = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        getattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons")
    mask = read(fn)
    out["throttle_reasons"] = decode_throttle_reasons(mask) if mask is not None else []
    mem = read(pynvml.nvmlDeviceGetMemoryInfo)
    out["used_memory_bytes"] = int(mem.used) if mem is not None else None
    return out


def nvml_handle(pci_bus_id: str | None = None, index: int = 0):
    """The NVML handle of a device (by PCI bus id when known, which matches CUDA's numbering)."""
    import pynvml  # noqa: PLC0415
    pynvml.nvmlInit()
    if pci_bus_id:
        return pynvml.nvmlDeviceGetHandleByPciBusId(pci_bus_id)
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def device_report() -> Report:
    errors: dict[str, str] = {}
    versions = dict(numpy=None, cupy=None, cuda_runtime=None, cuda_driver=None, nvrtc=None,
                    nvml=None, nvml_driver=None)
    versions["numpy"] = np.__version__
    devices: list[DeviceInfo] = []
    cupy = None
    try:
        import cupy  # noqa: PLC0415
        versions["cupy"] = cupy.__version__
    except ImportError as exc:
        errors["cupy"] = f"CuPy is not installed ({exc}); install cuconv[cuda12] or cuconv[cuda13]"
    if cupy is not None:
        from cupy.cuda import nvrtc, runtime  # noqa: PLC0415
        try:
            versions["cuda_runtime"] = _cuda_version(runtime.runtimeGetVersion())
        except Exception as exc:
            errors["cuda_runtime"] = str(exc)
        try:
            drv = runtime.driverGetVersion()
            versions["cuda_driver"] = _cuda_version(drv) if drv else None
            if not drv:
                errors["cuda_driver"] = "no CUDA driver is installed"
        except Exception as exc:
            errors["cuda_driver"] = str(exc)
        try:
            major, minor = nvrtc.getVersion()
            versions["nvrtc"] = f"{major}.{minor}"
        except Exception as exc:
            errors["nvrtc"] = f"NVRTC not found ({exc}); install nvidia-cuda-nvrtc"
        try:
            count = runtime.getDeviceCount()
        except Exception as exc:
            count = 0
            errors["devices"] = f"no CUDA device was found ({exc})"
        if count == 0 and "devices" not in errors:
            errors["devices"] = "no CUDA device was found (the driver reports 0 devices)"
        for i in range(count):
            props = runtime.getDeviceProperties(i)
            name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
            cc = f"{props['major']}.{props['minor']}"
            arch = normalize_arch((props["major"], props["minor"]))
            d = DeviceInfo(index=i, name=name, compute_capability=cc, arch=arch,
                           sm_count=int(props["multiProcessorCount"]),
                           total_memory_bytes=int(props["totalGlobalMem"]),
                           l2_cache_bytes=int(props.get("l2CacheSize", 0)) or None)
            unsupported = DeviceCaps(props["major"] * 10 + props["minor"], d.sm_count, name,
                                     d.total_memory_bytes).unsupported_reason()
            if unsupported:
                errors[f"devices[{i}]"] = f"CUDA device {i}: {unsupported}"
            pci = None
            try:
                pci = runtime.deviceGetPCIBusId(i) if hasattr(runtime, "deviceGetPCIBusId") else None
            except Exception:
                pci = None
            try:
                h = nvml_handle(pci, i)
                for k, v in nvml_readings(h).items():
                    setattr(d, k, v)
            except Exception as exc:
                errors[f"nvml[{i}]"] = f"NVML readings unavailable ({exc})"
            # The CUDA runtime reports clocks in kHz; prefer NVML's max clocks when present.
            clock_mhz = d.sm_clock_max_mhz or (props.get("clockRate", 0) // 1000) or None
            if arch in ARCH_LIMITS and clock_mhz:
                d.peak_fp32_tflops = peak_fp32_flops(arch, d.sm_count, clock_mhz * 1e6) / 1e12
            mem_mhz = d.mem_clock_max_mhz or (props.get("memoryClockRate", 0) // 1000) or None
            bus = d.memory_bus_width_bits or props.get("memoryBusWidth") or None
            if mem_mhz and bus:
                d.peak_dram_gbps = peak_dram_bandwidth(mem_mhz * 1e6, int(bus)) / 1e9
            devices.append(d)
    try:
        from importlib.metadata import version  # noqa: PLC0415

        import pynvml  # noqa: PLC0415
        versions["nvml"] = f"nvidia-ml-py {version('nvidia-ml-py')}"
        try:
            pynvml.nvmlInit()
            drv = pynvml.nvmlSystemGetDriverVersion()
            versions["nvml_driver"] = drv.decode() if isinstance(drv, bytes) else drv
        except Exception as exc:
            errors.setdefault("nvml", f"NVML unavailable ({exc})")
    except ImportError:
        errors["nvml"] = "nvidia-ml-py is not installed"
    return Report(cuconv=__version__, python=platform.python_version(),
                  platform=f"{platform.system()} {platform.machine()}",
                  compile_targets=ARCHS, devices=devices, errors=errors, **versions)

"""Published peak rates of common NVIDIA GPUs, for the roofline without (or beside) a device.

Every figure is the vendor's published number, dense (without 2:4 sparsity), at boost
clock; tensor-core fp16/bf16 figures are with fp32 accumulation. ``source`` names the
document each row comes from. A figure NVIDIA does not publish for a part is ``None``.
On a machine with a GPU the harness uses the device's own derived peaks instead
(SMs x FP32 lanes x 2 x max SM clock; 2 x memory clock x bus width), see cuconv.device.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..arch import normalize_arch


@dataclass(frozen=True)
class DevicePeaks:
    """Peak rates one roofline is drawn from (FLOP/s and bytes/s)."""
    name: str
    arch: str
    fp32_flops: float                       # CUDA-core fp32 FMA rate
    dram_bytes_per_s: float
    tf32_tensor_flops: float | None = None
    fp16_tensor_flops: float | None = None  # fp16/bf16 in, fp32 accumulate
    l2_bytes: int | None = None
    source: str = ""

    def compute_peak(self, dtype: str, tensor_cores: bool) -> float | None:
        """The compute roof for a kernel of ``dtype`` that does (not) use tensor cores.

        CUDA-core kernels of any dtype are held to the fp32 FMA rate (cuconv's CUDA-core
        kernels compute in fp32); tensor-core kernels to the tf32 or fp16 tensor rate.
        """
        if not tensor_cores:
            return self.fp32_flops
        if dtype in ("float16", "bfloat16"):
            return self.fp16_tensor_flops
        return self.tf32_tensor_flops

    @property
    def ridge_flops_per_byte(self) -> float:
        """Arithmetic intensity where the fp32 roof meets the bandwidth roof."""
        return self.fp32_flops / self.dram_bytes_per_s


T, G = 1e12, 1e9
_MB = 1 << 20

# name -> peaks. Keys are what `--roofline` accepts (case-insensitive; '-' and '_' alike).
PUBLISHED = {
    "h100": DevicePeaks("H100 SXM5 80GB", "sm_90", 67 * T, 3350 * G, 494.7 * T, 989.4 * T, 50 * _MB,
                        "NVIDIA H100 Tensor Core GPU datasheet (SXM5 column; tensor figures halved "
                        "from the with-sparsity numbers as the datasheet's footnote directs)"),
    "h100-pcie": DevicePeaks("H100 PCIe 80GB", "sm_90", 51 * T, 2000 * G, 378 * T, 756 * T, 50 * _MB,
                             "NVIDIA H100 Tensor Core GPU datasheet (PCIe column, dense)"),
    "h200": DevicePeaks("H200 SXM 141GB", "sm_90", 67 * T, 4800 * G, 494.7 * T, 989.4 * T, 50 * _MB,
                        "NVIDIA H200 Tensor Core GPU datasheet (SXM column, dense)"),
    "a100": DevicePeaks("A100 SXM4 80GB", "sm_80", 19.5 * T, 2039 * G, 156 * T, 312 * T, 40 * _MB,
                        "NVIDIA A100 Tensor Core GPU datasheet (80GB SXM column, dense)"),
    "a100-40gb": DevicePeaks("A100 SXM4 40GB", "sm_80", 19.5 * T, 1555 * G, 156 * T, 312 * T, 40 * _MB,
                             "NVIDIA A100 Tensor Core GPU datasheet (40GB SXM column, dense)"),
    "v100": DevicePeaks("V100 SXM2", "sm_70", 15.7 * T, 900 * G, None, 125 * T, 6 * _MB,
                        "NVIDIA Tesla V100 datasheet (SXM2 column)"),
    "t4": DevicePeaks("T4", "sm_75", 8.1 * T, 320 * G, None, 65 * T, 4 * _MB,
                      "NVIDIA T4 datasheet (fp16 figure is mixed precision fp16/fp32)"),
    "l4": DevicePeaks("L4", "sm_89", 30.3 * T, 300 * G, 60 * T, 121 * T, 48 * _MB,
                      "NVIDIA L4 datasheet (tensor figures halved from the with-sparsity numbers)"),
    "rtx4090": DevicePeaks("GeForce RTX 4090", "sm_89", 82.6 * T, 1008 * G, None, None, 72 * _MB,
                           "NVIDIA Ada Lovelace architecture whitepaper (RTX 4090 column); tensor "
                           "rates with fp32 accumulation are left out here"),
}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def published(name: str) -> DevicePeaks:
    """The published peaks of ``name`` (e.g. "h100", "a100"); ValueError listing the known names."""
    if not isinstance(name, str):
        raise TypeError(f"roofline device must be a name such as 'h100', got {name!r}")
    key = _key(name)
    aliases = {"h100-sxm": "h100", "h100-sxm5": "h100", "a100-80gb": "a100", "a100-sxm": "a100",
               "h200-sxm": "h200", "4090": "rtx4090", "rtx-4090": "rtx4090", "geforce-rtx-4090": "rtx4090"}
    key = aliases.get(key, key)
    if key not in PUBLISHED:
        raise ValueError(f"unknown roofline device {name!r}; known: {', '.join(PUBLISHED)}")
    return PUBLISHED[key]


def match_device_name(device_name: str) -> DevicePeaks | None:
    """The table row for a CUDA device name such as 'NVIDIA H100 80GB HBM3' (None if unknown).

    Used only for the tensor-core roofs of a measured device; its fp32 and DRAM roofs
    come from its own clocks.
    """
    n = device_name.lower()
    if "h100" in n:
        return PUBLISHED["h100-pcie" if "pcie" in n else "h100"]
    if "h200" in n:
        return PUBLISHED["h200"]
    if "a100" in n:
        return PUBLISHED["a100-40gb" if "40gb" in n else "a100"]
    for key, needle in (("v100", "v100"), ("t4", "t4"), ("l4", "l4"), ("rtx4090", "4090")):
        if re.search(rf"\b{needle}\b", n):
            return PUBLISHED[key]
    return None


def measured_device_peaks(info) -> DevicePeaks | None:
    """Peaks of a measured device from cuconv.device.DeviceInfo (None when its clocks are unknown)."""
    if info.peak_fp32_tflops is None or info.peak_dram_gbps is None:
        return None
    table = match_device_name(info.name)
    return DevicePeaks(
        name=f"{info.name} (device {info.index}, derived from its clocks)", arch=normalize_arch(info.arch),
        fp32_flops=info.peak_fp32_tflops * T, dram_bytes_per_s=info.peak_dram_gbps * G,
        tf32_tensor_flops=table.tf32_tensor_flops if table else None,
        fp16_tensor_flops=table.fp16_tensor_flops if table else None,
        l2_bytes=info.l2_cache_bytes,
        source="fp32: SMs x FP32 lanes/SM x 2 x max SM clock; DRAM: 2 x max memory clock x bus width / 8"
               + (f"; tensor roofs: {table.source}" if table else ""))

"""Instruction classes of SASS and the mix of a sequence of instructions.

Each instruction falls in exactly one class. The math classes are the ones that feed an
arithmetic peak: ``fp32`` (FFMA/FMUL/FADD), ``fp16`` (HFMA2/HMUL2/HADD2, two lanes per
thread), ``fp64`` (DFMA/DMUL/DADD) and ``tensor`` (HMMA/IMMA/DMMA/...GMMA). The compiler
also uses some math opcodes to move constants (``HFMA2.MMA R0, -RZ, RZ, 0, 0`` writes 0,
``IMAD.MOV`` copies): those count as ``move``, not math. Warpgroup MMA (HGMMA: wgmma.mma_async) is ``tensor``, its MACs from the
shape in its opcode (``HGMMA.64x128x16``: 64·128·16/4 per warp). Uniform-datapath instructions
(``UIADD3``, ``ULDC`` ...) occupy issue slots like any other and are classed with their
vector counterparts.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from .sass import Instruction

MATH_CLASSES = ("fp32", "fp16", "fp64", "tensor")
CLASSES = (*MATH_CLASSES, "float_other", "shared_load", "shared_store", "global_load", "global_store",
           "async_copy", "local", "atomic", "barrier", "integer", "move", "convert", "predicate",
           "branch", "other")

_BY_BASE = {
    "fp32": "FFMA FMUL FADD FFMA32I FMUL32I FADD32I",
    "fp16": "HFMA2 HMUL2 HADD2 HFMA2_32I HMUL2_32I HADD2_32I",
    "fp64": "DFMA DMUL DADD",
    "float_other": "FMNMX FSET FSWZADD MUFU FCHK HMNMX2 DMNMX HSET2",
    "shared_load": "LDS LDSM",
    "shared_store": "STS STSM",
    "global_load": "LDG LD LDU",
    "global_store": "STG ST",
    "async_copy": "LDGSTS UBLKCP UTMALDG UTMASTG UTMAPF UBLKPF UTMACCTL LDGDEPBAR",
    "local": "LDL STL",
    "atomic": "ATOM ATOMG ATOMS RED REDG REDAS",
    "barrier": "BAR MEMBAR DEPBAR ERRBAR FENCE SYNCS ARRIVES WARPGROUP CGAERRBAR ELECT",
    "integer": ("IADD3 IADD IADD32I IMAD IMAD32I IMUL IMUL32I LEA LOP3 LOP LOP32I SHF SHL SHR IMNMX "
                "IABS POPC FLO BREV BMSK SGXT IDP IDP4A VIADD VIADDMNMX VIMNMX BFE BFI XMAD ISCADD "
                "REDUX MATCH"),
    "move": "MOV MOV32I CS2R S2R S2UR R2UR LDC LDCU SEL FSEL PRMT SHFL P2R R2P B2R R2B GETLMEMBASE "
            "SETLMEMBASE LEPC",
    "convert": "F2F F2I I2F F2FP I2FP F2IP FRND I2I I2IP",
    "predicate": "ISETP FSETP DSETP HSETP2 PSETP PLOP3 VOTE VOTEU FCMP ICMP PSET",
    "branch": "BRA BRX JMP JMX CALL JCAL RET EXIT BSSY BSYNC WARPSYNC BREAK BMOV YIELD KILL BPT "
              "NANOSLEEP",
}
_CLASS_OF = {op: cls for cls, ops in _BY_BASE.items() for op in ops.split()}
_ZERO = {"RZ", "-RZ", "|RZ|", "-|RZ|", "URZ", "-URZ"}
_MMA_SHAPE_RE = re.compile(r"^(\d+)$")


def _operand_list(ins: Instruction) -> list[str]:
    return [o.strip() for o in ins.operands.split(",")]


def _is_move_idiom(ins: Instruction) -> bool:
    """A math or integer opcode used to copy or materialize a value."""
    base = ins.base
    if base in ("IMAD", "UIMAD") and "MOV" in ins.modifiers:
        return True
    ops = _operand_list(ins)
    if base in ("IMAD", "UIMAD") and len(ops) >= 3:
        return ops[1] in _ZERO or ops[2] in _ZERO      # IMAD.U32 R1, RZ, RZ, UR4: a copy
    if base in ("FFMA", "FMUL", "HFMA2", "HMUL2", "DFMA", "DMUL") and len(ops) >= 3:
        return ops[1] in _ZERO or ops[2] in _ZERO      # a zero product: d = c (or 0)
    if base in ("FADD", "HADD2", "DADD") and len(ops) >= 3:
        return ops[1] in _ZERO or ops[2] in _ZERO      # d = ±x: a (negating) move
    return False


def classify(ins: Instruction) -> str:
    base = ins.base
    if ins.never_executes:                  # `@!PT ...`: issue-slot padding ptxas inserts
        return "other"
    if _is_move_idiom(ins):
        return "move"
    if base.endswith("MMA"):                # HMMA IMMA DMMA BMMA HGMMA QGMMA UTCHMMA ...
        return "tensor"
    cls = _CLASS_OF.get(base)
    if cls is None and base.startswith("U") and base[1:] in _CLASS_OF:
        cls = _CLASS_OF[base[1:]]           # uniform datapath: UIADD3, ULDC, UMOV, UISETP ...
    if cls is None and base in ("NOP",):
        cls = "other"
    return cls or "other"


def access_bits(ins: Instruction) -> int:
    """Bits moved per thread by a load/store: 32 unless a width modifier says otherwise."""
    mods = ins.modifiers
    if ins.base in ("LDSM", "STSM"):           # ldmatrix/stmatrix: .x1/.x2/.x4 -> 1/2/4 registers
        n = next((int(m) for m in reversed(mods) if m in ("1", "2", "4")), 1)
        return 32 * n
    for m in mods:
        if m in ("U8", "S8"):
            return 8
        if m in ("U16", "S16"):
            return 16
        if m == "64":
            return 64
        if m in ("128", "256"):
            return int(m)
    return 32


_GMMA_SHAPE_RE = re.compile(r"^(\d+)x(\d+)x(\d+)$")
GMMA_OPCODES = ("HGMMA", "IGMMA", "QGMMA", "BGMMA")


def gmma_shape(ins: Instruction) -> tuple[int, int, int] | None:
    """(M, N, K) of a warpgroup MMA (``HGMMA.64x128x16.F32`` -> (64, 128, 16)), else None."""
    if ins.base not in GMMA_OPCODES:
        return None
    for m in ins.modifiers:
        g = _GMMA_SHAPE_RE.match(m)
        if g:
            return int(g.group(1)), int(g.group(2)), int(g.group(3))
    return None


def mma_macs(ins: Instruction) -> int | None:
    """Multiply-accumulates per warp-wide tensor instruction, from its shape modifier.

    ``HMMA.16816.F32`` is m16n8k16 (2048 MACs), ``HMMA.1688.F32.TF32`` m16n8k8, ``IMMA.16832.S8.S8``
    m16n8k32. Warpgroup MMA (``HGMMA.64x128x16.F32``, wgmma.mma_async.m64nNkK) is issued by each
    of the warpgroup's 4 warps, each computing its 16 of the 64 rows on its own sub-partition's
    tensor core: M·N·K/4 MACs per warp instruction (the shape is in the opcode; the operands'
    addresses are in descriptors). Unknown shapes give None.
    """
    g = gmma_shape(ins)
    if g is not None:
        mm, nn, kk = g
        return mm * nn * kk // 4
    if ins.base not in ("HMMA", "IMMA", "DMMA", "BMMA"):
        return None
    for m in ins.modifiers:
        if _MMA_SHAPE_RE.match(m):
            for ml in (2, 1):
                for nl in (1,):
                    mm, nn, kk = m[:ml], m[ml:ml + nl], m[ml + nl:]
                    if mm in ("8", "16") and nn == "8" and kk.isdigit() and int(kk) in (4, 8, 16, 32, 64, 128, 256):
                        return int(mm) * int(nn) * int(kk)
    return None


def mma_kind(ins: Instruction) -> str:
    """'fp16' (fp16/bf16 inputs), 'tf32', 'int8', 'fp8', 'fp64', ... for a tensor instruction."""
    mods = set(ins.modifiers)
    if ins.base == "DMMA":
        return "fp64"
    if ins.base in ("IMMA", "IGMMA"):
        return "int4" if mods & {"S4", "U4"} else "int8"
    if ins.base in ("BMMA", "BGMMA"):
        return "binary"
    if ins.base == "QGMMA":
        return "fp8"
    if ins.base in ("HMMA", "HGMMA"):
        if "TF32" in mods:
            return "tf32"
        if mods & {"E4M3", "E5M2"}:
            return "fp8"
        return "fp16"
    return "other"


@dataclass
class Mix:
    """Counts over a sequence of instructions (one loop iteration or a whole kernel)."""
    instructions: int = 0
    by_class: Counter = field(default_factory=Counter)
    by_opcode: Counter = field(default_factory=Counter)          # base mnemonic -> count
    shared_load_bits: Counter = field(default_factory=Counter)   # width in bits -> count
    shared_store_bits: Counter = field(default_factory=Counter)
    global_load_bits: Counter = field(default_factory=Counter)   # LDG, generic LD, LDGSTS
    global_store_bits: Counter = field(default_factory=Counter)
    predicated: int = 0                                          # instructions under a guard
    fma_per_thread: int = 0      # multiply-adds per thread (FFMA 1, HFMA2 2, DFMA 1, HMMA macs/32)
    tensor_macs: Counter = field(default_factory=Counter)        # kind -> MACs per warp
    tensor_unknown_shape: int = 0
    flops: Counter = field(default_factory=Counter)   # math pipe -> FLOPs per warp (an FMA is 2)

    @property
    def math(self) -> int:
        return sum(self.by_class[c] for c in MATH_CLASSES)

    @property
    def shared_load_bytes(self) -> int:
        """Bytes each thread loads from shared memory (LDS/LDSM) per pass."""
        return sum(bits // 8 * n for bits, n in self.shared_load_bits.items())

    def add(self, ins: Instruction) -> None:
        cls = classify(ins)
        self.instructions += 1
        self.by_class[cls] += 1
        self.by_opcode[ins.base] += 1
        if ins.guarded and cls != "branch":
            self.predicated += 1
        if cls == "shared_load":
            self.shared_load_bits[access_bits(ins)] += 1
        elif cls == "shared_store":
            self.shared_store_bits[access_bits(ins)] += 1
        elif cls == "global_load" or (cls == "async_copy" and ins.base == "LDGSTS"):
            self.global_load_bits[access_bits(ins)] += 1
        elif cls == "global_store":
            self.global_store_bits[access_bits(ins)] += 1
        elif cls in ("fp32", "fp64"):
            fma = ins.base in ("FFMA", "FFMA32I", "DFMA")
            self.fma_per_thread += fma
            self.flops[cls] += 32 * (2 if fma else 1)
        elif cls == "fp16":
            fma = ins.base in ("HFMA2", "HFMA2_32I")
            self.fma_per_thread += 2 * fma
            self.flops["fp16"] += 64 * (2 if fma else 1)
        elif cls == "tensor":
            macs = mma_macs(ins)
            if macs is None:
                self.tensor_unknown_shape += 1
            else:
                kind = mma_kind(ins)
                self.tensor_macs[kind] += macs
                self.fma_per_thread += macs // 32
                self.flops["tensor_fp16" if kind == "fp16" else "tensor_" + kind] += 2 * macs

    @classmethod
    def of(cls, instructions) -> "Mix":
        mix = cls()
        for ins in instructions:
            mix.add(ins)
        return mix

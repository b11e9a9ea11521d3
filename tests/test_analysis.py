"""Static SASS analysis (cuconv.analysis): counts, loops, ceilings and the design checks.

The fixtures in tests/analysis_kernels/ have known main-loop bodies (e.g. exactly 16 FFMA and
4 LDS.128 per iteration). Each is compiled with NVRTC for real archs, disassembled with
nvdisasm, and the analyser's figures are checked against those bodies, against an
independent count over the raw listing, and against the issue model's formula. The registry
test runs the analysis over every registered kernel and fails on a main kernel that spills,
touches local memory in its main loop or fits fewer blocks per SM than its design states.
No GPU is needed anywhere.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cuconv import analysis
from cuconv.analysis.mix import Mix, access_bits, classify, mma_kind, mma_macs
from cuconv.analysis.sass import Instruction, parse_listing
from cuconv.arch import ARCH_LIMITS, issue_model
from cuconv.compile import ARCHS, nvrtc_compile, registered_kernels

FIXTURES = Path(__file__).parent / "analysis_kernels"
KNOWN = FIXTURES / "known_loops.cu"
TENSOR = FIXTURES / "tensor_mma.cu"


def analyze(kernel, arch, path=KNOWN, options=(), threads=256):
    return analysis.analyze_file(path, kernel, arch, options, block_threads=threads)


def fp32_ceiling(arch, ffma, instructions):
    """The issue model by hand: FFMA lane work over (issue slots x FP32 lanes per sub-partition)."""
    lanes_per_sub_partition = ARCH_LIMITS[arch]["fp32_lanes_per_sm"] / 4
    return min(1.0, ffma * 32 / (instructions * lanes_per_sub_partition))


def raw_loop_bodies(sass_text):
    """Independent of the analyser: the instruction lines between a label and a later branch to it."""
    lines = sass_text.splitlines()
    label_at = {m.group(1): i for i, ln in enumerate(lines) if (m := re.match(r"^\s*(\.L_x_\d+):\s*$", ln))}
    bodies = []
    for i, ln in enumerate(lines):
        m = re.search(r"\bBRA\b.*`\((\.L_x_\d+)\)", ln)
        if m and m.group(1) in label_at and label_at[m.group(1)] < i:
            bodies.append([x for x in lines[label_at[m.group(1)]:i + 1] if re.match(r"^\s*/\*[0-9a-f]+\*/", x)])
    return bodies


def count_opcode(body_lines, opcode):
    return sum(1 for x in body_lines if re.search(rf"\s{re.escape(opcode)}\s", x))


# --------------------------------------------------------------------------- tools
def test_nvdisasm_is_found_and_runs():
    path = analysis.find_tool("nvdisasm")
    assert Path(path).is_file()


def test_complete_elf_restores_the_byte_cupy_drops():
    cubin, _, _ = nvrtc_compile('extern "C" __global__ void k(float* o) { o[threadIdx.x] = 1.0f; }', ["k"], "sm_90")
    fixed = analysis.complete_elf(cubin)
    assert fixed[:len(cubin)] == cubin and len(fixed) - len(cubin) in (0, 1)
    assert analysis.complete_elf(fixed) == fixed
    assert analysis.complete_elf(b"not an elf") == b"not an elf"
    assert "k:" in analysis.disassemble(cubin)


# --------------------------------------------------------------------------- known loop bodies
@pytest.mark.parametrize("arch", ["sm_80", "sm_90", "sm_120"])
def test_fma16_lds128_counts_and_ceiling(arch):
    a = analyze("fma16_lds128", arch)
    lp = a.main_loop
    assert lp is not None and lp.innermost and lp.depth == 1 and lp.internal_branches == 0
    m = lp.path_mix
    assert m.by_opcode["FFMA"] == 16 and m.by_class["fp32"] == 16 and m.math == 16
    assert dict(m.shared_load_bits) == {128: 4}
    assert m.shared_load_bytes == 64 and m.fma_per_thread == 16
    assert not m.global_load_bits and not m.shared_store_bits and m.by_class["barrier"] == 0

    # The same loop found independently in the raw listing.
    bodies = [b for b in raw_loop_bodies(analysis.sass(KNOWN.read_text(), arch, kernel="fma16_lds128"))
              if count_opcode(b, "FFMA")]
    assert len(bodies) == 1
    assert lp.instructions == len(bodies[0])
    assert count_opcode(bodies[0], "FFMA") == 16 and count_opcode(bodies[0], "LDS.128") == 4

    n = lp.instructions
    assert 20 < n <= 28, f"loop control should cost a few instructions, got {n - 20}"
    assert a.math_share == pytest.approx(16 / n)
    assert a.fma_per_shared_byte == pytest.approx(0.25)
    assert lp.ceiling_pipe == "fp32"
    assert a.ceiling == pytest.approx(fp32_ceiling(arch, 16, n))
    # sm_80's 16 lanes per sub-partition leave every other issue slot free: the loop reaches peak;
    # on sm_86+ every non-FFMA instruction costs a slot: the ceiling is the math share.
    assert a.ceiling == (pytest.approx(1.0) if arch == "sm_80" else pytest.approx(a.math_share))


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_fma8_lds32_is_issue_bound_on_both_archs(arch):
    a = analyze("fma8_lds32", arch)
    lp = a.main_loop
    m = lp.path_mix
    assert m.by_opcode["FFMA"] == 8 and dict(m.shared_load_bits) == {32: 8}
    n = lp.instructions
    assert 16 < n <= 24
    assert a.fma_per_shared_byte == pytest.approx(8 / 32)
    assert a.ceiling == pytest.approx(fp32_ceiling(arch, 8, n))
    assert a.ceiling < 1.0                           # not capped: 2 * 8 < n on sm_80 too
    expected = {"sm_80": 16 / n, "sm_90": 8 / n}[arch]
    assert a.ceiling == pytest.approx(expected)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nested_loops_choose_the_inner_math_loop(arch):
    a = analyze("nested", arch)
    assert len(a.loops) == 3
    outer = [lp for lp in a.loops if not lp.innermost]
    assert len(outer) == 1 and outer[0].depth == 1
    lp = a.main_loop
    assert lp.depth == 2 and lp.innermost
    assert lp.path_mix.by_opcode["FFMA"] == 2 and dict(lp.path_mix.shared_load_bits) == {32: 1}
    copy_loop = [x for x in a.loops if x.innermost and x is not lp]
    assert copy_loop and copy_loop[0].path_mix.math == 0 and copy_loop[0].path_mix.global_store_bits
    assert outer[0].start <= lp.start and lp.end <= outer[0].end


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernel_without_loop_has_no_loop_figures(arch):
    a = analyze("vector_io", arch)
    assert a.loops == [] and a.main_loop is None
    assert a.ceiling is None and a.math_share is None and a.fma_per_shared_byte is None
    assert dict(a.kernel_mix.global_load_bits) == {128: 1}
    assert dict(a.kernel_mix.global_store_bits) == {64: 2}
    assert a.widest_global_bits == 128 and a.widest_shared_bits == 0
    assert a.kernel_mix.by_class["fp32"] >= 4         # FMUL/FADD/FFMA of the two stores
    d = a.to_dict()
    assert d["main_loop"] is None and d["issue_ceiling"] is None
    json.dumps(d)
    row = [ln for ln in analysis.format_table([a]).splitlines() if ln.startswith("vector_io")][0]
    assert row.rstrip().endswith("-")


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_barriers_and_shared_stores_per_iteration(arch):
    a = analyze("barrier_loop", arch)
    m = a.main_loop.path_mix
    assert m.by_class["barrier"] == 2 and m.by_opcode["BAR"] == 2
    assert dict(m.shared_store_bits) == {64: 1} and dict(m.shared_load_bits) == {64: 1}
    assert dict(m.global_load_bits) == {64: 1} and m.by_opcode["FFMA"] == 1


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_spills_and_local_memory_are_reported(arch):
    a = analyze("pressure", arch, options=("--maxrregcount=32",))
    assert a.registers <= 32
    assert a.spill_store_bytes > 0 and a.spill_load_bytes > 0
    assert a.local_memory_instructions > 0 and a.main_loop.mix.by_class["local"] > 0
    a.min_blocks_per_sm = 2
    problems = a.design_problems()
    assert any("spills" in p for p in problems) and any("local-memory" in p for p in problems)
    clean = analyze("fma16_lds128", arch)
    clean.min_blocks_per_sm = 8
    assert clean.design_problems() == []
    clean.min_blocks_per_sm = 9                        # more than the 64 warps of sm_80/sm_90 hold
    assert any("blocks/SM" in p for p in clean.design_problems())


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_tensor_core_loop(arch):
    a = analyze("mma_loop", arch, path=TENSOR, threads=128)
    lp = a.main_loop
    m = lp.path_mix
    assert m.by_opcode["HMMA"] == 4 and m.by_class["tensor"] == 4
    assert m.tensor_macs["fp16"] == 4 * 16 * 8 * 16
    assert dict(m.shared_load_bits) == {128: 2}        # two ldmatrix.x4
    assert a.fma_per_shared_byte == pytest.approx(4 * 2048 / 32 / 32)
    assert lp.ceiling_pipe == "tensor_fp16"
    per_sub_partition = ARCH_LIMITS[arch]["tensor_fp16_fma_per_sm"] / 4
    assert a.ceiling == pytest.approx(min(1.0, 4 * 2048 / per_sub_partition / lp.instructions))


def test_launch_bounds_give_the_block_size():
    src = ('extern "C" __global__ void __launch_bounds__(128) k(float* o) { o[threadIdx.x] = 2.0f; }\n'
           'extern "C" __global__ void plain(float* o) { o[threadIdx.x] = 3.0f; }\n')
    a = analysis.analyze_source(src, "k", "sm_90")
    assert a.block_threads == 128 and a.block_threads_source == "__launch_bounds__"
    b = analysis.analyze_source(src, "plain", "sm_90")
    assert b.block_threads_source == "assumed" and b.notes
    c = analysis.analyze_source(src, "plain", "sm_90", block_threads=64)
    assert c.block_threads == 64 and c.occupancy["warps_per_sm"] == 2 * c.occupancy["blocks_per_sm"]


def test_bad_arguments_raise_clear_errors():
    src = KNOWN.read_text()
    with pytest.raises(ValueError, match="unknown arch"):
        analysis.analyze_source(src, "fma16_lds128", "sm_99")
    with pytest.raises(ValueError, match="block_threads"):
        analysis.analyze_source(src, "fma16_lds128", "sm_90", block_threads=2048)
    with pytest.raises(TypeError):
        analysis.analyze_source("", "k", "sm_90")
    with pytest.raises(TypeError):
        analysis.sass(src, "sm_90")
    from cuconv.compile import NVRTCError
    with pytest.raises(NVRTCError, match="no_such_kernel"):
        analysis.analyze_source(src, "no_such_kernel", "sm_90")


def test_cli_analyze(capsys):
    from cuconv.cli import main
    assert main(["analyze", str(KNOWN), "fma16_lds128", "--arch", "sm_90", "--threads", "256", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["main_loop"]["classes"]["fp32"] == 16 and out[0]["main_loop"]["shared_load_bits"] == {"128": 4}
    assert main(["analyze", str(KNOWN), "fma16_lds128", "--arch", "sm_80"]) == 0
    text = capsys.readouterr().out
    assert "main loop per iteration" in text and "issue-bound ceiling: fp32 100.0%" in text
    assert main(["analyze", str(KNOWN), "missing_kernel", "--arch", "sm_80"]) == 1
    assert "missing_kernel" in capsys.readouterr().err
    assert main(["analyze", str(FIXTURES / "nope.cu"), "k"]) == 2


def test_bench_columns_never_raise(monkeypatch):
    entry = registered_kernels()[0]
    cols = analysis.bench_columns(entry, "sm_90")
    assert cols["static_error"] is None and cols["registers"] > 0
    assert cols == analysis.bench_columns(entry.label, "sm_90")
    bad = analysis.bench_columns("no_such_kernel_label", "sm_90")
    assert bad["issue_ceiling"] is None and "no_such_kernel_label" in bad["static_error"]
    monkeypatch.setattr(analysis, "analyze_entry",
                        lambda *a: (_ for _ in ()).throw(analysis.ToolNotFoundError("nvdisasm was not found")))
    assert analysis.bench_columns(entry, "sm_90")["static_error"] == "nvdisasm was not found"


# --------------------------------------------------------------------------- parser units
_LISTING = """
\t.section\t.text.toy,"ax",@progbits
toy:
.text.toy:
        /*0000*/                   S2R R0, SR_TID.X ;
        /*0010*/                   HFMA2.MMA R2, -RZ, RZ, 0, 0 ;
        /*0020*/                   IMAD.MOV.U32 R3, RZ, RZ, R0 ;
.L_x_0:
        /*0030*/                   LDS.128 R4, [R3] ;
        /*0040*/              @P0 BRA `(.L_x_1) ;
        /*0050*/                   FFMA R2, R4, R5, R2 ;
.L_x_1:
        /*0060*/                   FFMA R2, R6, R7, R2 ;
        /*0070*/                   @!PT LDS RZ, [RZ] ;
        /*0080*/                   BRA.U UP0, `(.L_x_0) ;
        /*0090*/                   STG.E.64 desc[UR4][R8.64], R2 ;
        /*00a0*/                   EXIT ;
.L_x_2:
        /*00b0*/                   BRA `(.L_x_2);
        /*00c0*/                   NOP;
"""


def test_parser_blocks_loops_and_paths():
    fn = parse_listing(_LISTING)["toy"]
    assert len(fn.instructions) == 13
    assert fn.instructions[4].predicate == "@P0" and fn.instructions[4].target == ".L_x_1"
    assert fn.instructions[8].branch_predicate == "UP0" and fn.instructions[8].conditional
    assert len(fn.loops) == 1                            # the trap after EXIT is unreachable
    from cuconv.analysis.core import analyze_function
    res = analyze_function(fn, "sm_90", kernel="toy", registers=16, spill_store_bytes=0, spill_load_bytes=0,
                           stack_frame_bytes=0, static_smem_bytes=0, block_threads=128)
    lp = res.main_loop
    assert lp.body_instructions == 6 and lp.internal_branches == 1
    assert lp.instructions == 6 and lp.shortest_path_instructions == 5 and lp.longest_path_instructions == 6
    assert lp.path_mix.by_opcode["FFMA"] == 2 and lp.path_mix.by_class["other"] == 1  # @!PT padding
    assert lp.ceiling == pytest.approx(2 / 6) and lp.ceiling_shortest_path == pytest.approx(1 / 5)
    assert res.kernel_mix.by_class["move"] == 3          # S2R, the HFMA2.MMA zero, IMAD.MOV
    assert dict(res.kernel_mix.global_store_bits) == {64: 1}


@pytest.mark.parametrize("text,cls,bits", [
    ("HFMA2.MMA R2, -RZ, RZ, 0, 0", "move", None),
    ("HFMA2 R2, R3, R4, R5", "fp16", None),
    ("IMAD.MOV.U32 R1, RZ, RZ, R2", "move", None),
    ("IMAD.WIDE R2, R3, 0x4, R4", "integer", None),
    ("IMAD.U32 R19, RZ, RZ, UR11", "move", None),
    ("LDCU.64 UR8, c[0x0][0x358]", "move", None),
    ("FADD R1, -RZ, R2", "move", None),
    ("FMUL R1, R2, 0.5", "fp32", None),
    ("UIADD3 UR4, UR4, 0x8, URZ", "integer", None),
    ("ULDC.64 UR4, c[0x0][0x118]", "move", None),
    ("ISETP.GE.AND P0, PT, R1, R2, PT", "predicate", None),
    ("LDG.E.128.CONSTANT R4, desc[UR6][R2.64]", "global_load", 128),
    ("LDG.E.LTC128B.64 R4, desc[UR6][R2.64]", "global_load", 64),
    ("LDG.E.U16 R4, desc[UR6][R2.64]", "global_load", 16),
    ("STS.U8 [R1], R2", "shared_store", 8),
    ("LDS R1, [R2+0x10]", "shared_load", 32),
    ("LDSM.16.MT88.2 R4, [R2]", "shared_load", 64),
    ("LDGSTS.E.BYPASS.LTC128B.128 [R1], desc[UR4][R2.64]", "async_copy", 128),
    ("LDL.64 R2, [R1+0x8]", "local", None),
    ("BAR.SYNC.DEFER_BLOCKING 0x0", "barrier", None),
    ("HMMA.16816.F32.BF16 R4, R8, R12, R4", "tensor", None),
    ("MUFU.EX2 R1, R2", "float_other", None),
])
def test_classify_and_widths(text, cls, bits):
    opcode, operands = text.split(" ", 1)
    ins = Instruction(0, "", opcode, operands)
    assert classify(ins) == cls
    if bits is not None:
        assert access_bits(ins) == bits


def test_mma_shapes():
    def ins(op):
        return Instruction(0, "", op, "R0, R4, R8, R0")
    assert mma_macs(ins("HMMA.16816.F32")) == 2048 and mma_kind(ins("HMMA.16816.F32")) == "fp16"
    assert mma_macs(ins("HMMA.1688.F32.TF32")) == 1024 and mma_kind(ins("HMMA.1688.F32.TF32")) == "tf32"
    assert mma_macs(ins("IMMA.16832.S8.S8")) == 4096 and mma_kind(ins("IMMA.16832.S8.S8")) == "int8"
    assert mma_macs(ins("DMMA.884")) == 256
    # warpgroup MMA: each of the 4 warps issues the instruction for its 16 of the 64 rows
    assert mma_macs(ins("HGMMA.64x128x16.F32")) == 64 * 128 * 16 // 4
    assert mma_kind(ins("HGMMA.64x128x16.F32")) == "fp16" and mma_kind(ins("HGMMA.64x64x16.F32.BF16")) == "fp16"
    assert mma_kind(ins("HGMMA.64x64x8.F32.TF32")) == "tf32" and mma_macs(ins("HGMMA.64x64x8.F32.TF32")) == 8192
    assert mma_kind(ins("QGMMA.64x128x32.F32.E4M3.E4M3")) == "fp8"
    assert mma_macs(ins("HGMMA.F32")) is None


def test_hgmma_ceiling_on_sm90():
    """4 HGMMA.64x128x16 (4 x 64 clocks of a sub-partition's tensor core at 512 FMA/clock) in a
    loop of 200 instructions: the tensor pipe is the bottleneck (ceiling 1.0); in 400: 0.64."""
    def loop(n):
        body = [Instruction(16 * i, "", "HGMMA.64x128x16.F32", "R24, gdesc[UR4], R24") for i in range(4)]
        body += [Instruction(16 * (4 + i), "", "IADD3", "R1, R1, 0x1, RZ") for i in range(n - 4)]
        return Mix.of(body)
    for n, want in ((200, 1.0), (400, 256 / 400)):
        _, pipe, ceiling = analysis.loop_ceilings(loop(n), "sm_90a")
        assert pipe == "tensor_fp16" and ceiling == pytest.approx(want)


@pytest.mark.parametrize("arch", ARCHS)
def test_issue_model_formula_every_arch(arch):
    mix = Mix.of([Instruction(i * 16, "", "FFMA", "R1, R2, R3, R1") for i in range(12)]
                 + [Instruction(0, "", "IADD3", "R1, R1, 0x1, RZ") for _ in range(4)])
    ceilings, pipe, ceiling = analysis.loop_ceilings(mix, arch)
    model = issue_model(arch)
    assert model["sub_partitions"] == 4 and model["issue"] == 1
    assert pipe == "fp32"
    assert ceiling == pytest.approx(min(1.0, 12 * 32 / (16 * model["fp32"])))
    assert ceiling == pytest.approx(1.0 if ARCH_LIMITS[arch]["fp32_lanes_per_sm"] == 64 else 0.75)


@pytest.mark.parametrize("arch", ["sm_75", "sm_80", "sm_90", "sm_100"])
def test_tensor_ceilings_per_kind(arch):
    def loop(op, n_mma, n_other=6):
        return Mix.of([Instruction(0, "", op, "R0, R4, R8, R0")] * n_mma
                      + [Instruction(0, "", "IADD3", "R1, R1, 0x1, RZ")] * n_other)
    model = issue_model(arch)
    for op, macs, pipe in (("HMMA.16816.F32.BF16", 2048, "tensor_fp16"), ("HMMA.1684.F32.TF32", 512, "tensor_tf32"),
                           ("IMMA.16832.S8.S8", 4096, "tensor_int8")):
        ceilings, got_pipe, ceiling = analysis.loop_ceilings(loop(op, 2), arch)
        assert got_pipe == pipe
        if model[pipe] is None:                          # no published rate: no number at all
            assert ceiling is None and ceilings[pipe] is None
        else:
            assert ceiling == pytest.approx(min(1.0, 2 * macs / model[pipe] / 8))


# --------------------------------------------------------------------------- every registered kernel
def test_every_registered_kernel_is_analysed_and_main_kernels_keep_their_design():
    """The whole compile matrix through the analysis on sm_90 (whatever is registered)."""
    entries = [e for e in registered_kernels() if "sm_90" in e.archs]
    results, problems = [], []
    for entry in entries:
        a = analysis.analyze_entry(entry, "sm_90")
        results.append(a)
        assert a.kernel == entry.label and a.block_threads == entry.block_threads
        assert a.kernel_mix.instructions > 0
        for lp in a.loops:
            assert 0 < lp.shortest_path_instructions <= lp.instructions <= lp.longest_path_instructions
            assert lp.longest_path_instructions <= lp.body_instructions
            assert 0.0 <= lp.math_share <= 1.0
            assert lp.ceiling is None or 0.0 <= lp.ceiling <= 1.0
        json.dumps(a.to_dict())
        if entry.main:
            problems += a.design_problems()
    table = analysis.format_table(results)
    assert all(e.label in table for e in entries)
    assert not problems, "main kernels break their design on sm_90:\n" + "\n".join(problems)


# --------------------------------------------------------------------------- the figures document
FIGURES = Path(__file__).resolve().parents[1] / "docs" / "kernel_figures.md"


def test_kernel_figures_are_current():
    """docs/kernel_figures.md is exactly what `cuconv kernels --analyze --markdown` writes now.

    What it pins: every registered kernel's registers and spills on every compile target and
    its main-loop analysis on sm_80 and sm_90, for the NVRTC and nvdisasm versions the file
    names. The SASS, and so every figure, depends on those versions: with another NVRTC or
    nvdisasm installed the test skips, saying which, instead of failing. A kernel edit that
    changes a figure fails here until the file is regenerated with that command."""
    from cuconv.commands import kernels as kernels_cmd

    text = FIGURES.read_text()
    versions = analysis.tool_versions()
    for tool in ("nvrtc", "nvdisasm"):
        pinned = re.search(rf"^- {tool}: (.*)$", text, re.M | re.I)
        assert pinned, f"{FIGURES} does not name the {tool} version it was made with"
        if versions.get(tool) != pinned.group(1):
            pytest.skip(f"{FIGURES.name} was made with {tool} {pinned.group(1)!r}; this machine has "
                        f"{versions.get(tool)!r}: its figures would differ without any kernel change")
    fresh = kernels_cmd.figures_markdown()
    if fresh != text:
        diff = [f"{a!r} -> {b!r}" for a, b in zip(text.splitlines(), fresh.splitlines()) if a != b][:10]
        pytest.fail(f"{FIGURES} is stale: regenerate it with `cuconv kernels --analyze --markdown "
                    f"docs/kernel_figures.md`. First differences:\n" + "\n".join(diff))


def test_kernels_markdown_writes_the_document_and_refuses_partial_ones(tmp_path, capsys):
    from cuconv import cli
    out = tmp_path / "figures.md"
    assert cli.main(["kernels", "--markdown", str(out)]) == 2                 # without --analyze
    assert cli.main(["kernels", "--analyze", "--file", "gemm.cu", "--markdown", str(out)]) == 2
    assert "whole figures document" in capsys.readouterr().err and not out.exists()

"""The native-coverage computation (issue 25 item 6, cuconv.coverage): docs/coverage.md is what
`cuconv coverage --markdown` writes now, the target (100 % native in every column, forward and
backward, on sm_90 and sm_80), and the verdicts themselves on layers whose answer is known."""
from __future__ import annotations

import pathlib

import pytest

from cuconv import coverage
from cuconv.cli import main

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "coverage.md"


@pytest.fixture(scope="module")
def fresh() -> str:
    return coverage.markdown()


def test_coverage_document_is_current(fresh):
    text = DOC.read_text()
    if fresh != text:
        diff = [f"{a!r} -> {b!r}" for a, b in zip(text.splitlines(), fresh.splitlines()) if a != b][:10]
        pytest.fail(f"{DOC} is stale: regenerate it with `cuconv coverage --markdown docs/coverage.md`. "
                    "First differences:\n" + "\n".join(diff))


def test_every_column_is_native():
    short = coverage.missing()
    assert not short, f"{len(short)} layer passes are not native, e.g.:\n" + "\n".join(
        f"{v.arch} {v.model} {v.layer} [{coverage.column_name(v.dtype, v.layout, v.pass_)}]: {'; '.join(v.reasons)}"
        for v in short[:20])


def test_float32_nchw_is_native_today():
    """The float32 NCHW columns read 100 % on both archs (the CUDA-core kernels read NCHW)."""
    tab = coverage.table()
    for arch, rows in tab.items():
        for model, cells in rows.items():
            for ps in coverage.PASSES:
                native, total = cells[coverage.column_name("float32", "NCHW", ps)]
                assert total > 0 and native == total, (arch, model, ps)


def test_verdicts_name_their_reasons():
    """Known answers on ResNet-50 (sm_80): the NHWC float16 bottleneck conv is native forward; its
    backward on the NCHW kernels shows the transposes (until native NHWC gradients plan it); every
    non-native verdict has a reason and every native one none."""
    vs = coverage.verdicts("resnet50", "sm_80")
    assert {v.model for v in vs} == {"resnet50"}
    by = {(v.layer, v.dtype, v.pass_): v for v in vs}
    fwd = by[("layer1.0.conv2", "float16", "forward")]
    assert fwd.native and fwd.kind == "conv2d", fwd
    bwd = by[("layer1.0.conv2", "float16", "backward")]
    assert bwd.native or any("transpose_nhwc_to_nchw_f16" in r for r in bwd.reasons), bwd
    for v in vs:
        assert v.native == (v.reasons == ())
    kinds = {v.kind for v in vs}
    assert {"conv2d", "pointwise", "maxpool", "global_avgpool"} <= kinds


def test_depthwise_rule():
    """A depthwise layer is native only on a depthwise kernel without workspace (forward, dx)."""
    vs = [v for v in coverage.verdicts("mobilenet_v2", "sm_80") if v.kind == "depthwise"]
    assert vs
    f32 = [v for v in vs if v.dtype == "float32" and v.pass_ == "forward"]
    assert f32 and all(v.native for v in f32)
    for v in vs:
        if not v.native and v.pass_ == "forward":
            assert any("depthwise" in r or "converts" in r or "refused" in r for r in v.reasons), v


def test_cli_missing_and_markdown(tmp_path, capsys):
    assert main(["coverage", "--missing", "--arch", "sm_80", "--model", "lenet5", "--column", "float32"]) == 0
    assert main(["coverage", "--missing", "--arch", "sm_80", "--model", "resnet18", "--column", "float16"]) in (0, 1)
    out = capsys.readouterr().out
    for line in out.splitlines():
        assert line.startswith("sm_80 resnet18 ") and "[float16 NHWC" in line and ": " in line
    assert main(["coverage", "--markdown", str(tmp_path / "c.md"), "--arch", "sm_80"]) == 2
    path = tmp_path / "coverage.md"
    assert main(["coverage", "--markdown", str(path)]) == 0
    assert path.read_text() == DOC.read_text()

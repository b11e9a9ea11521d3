"""cuconv.models: exact parameter and MAC counts of every landmark CNN, and the `cuconv cost` CLI.

Parameter counts are torchvision's published exact integers (``num_params``); a wrong
layer anywhere (channels, kernel, bias, BN) changes them. MACs are our exact counts;
each is cross-checked against torchvision's rounded "GFLOPS" (conv + linear MACs),
which also catches wrong strides, padding or resolution.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cuconv import cost as C
from cuconv import models

# name: (params, MACs, torchvision GFLOPS as published, rounded)
EXACT = {
    "alexnet": (61_100_840, 714_188_480, 0.71),
    "vgg11": (132_863_336, 7_609_090_048, 7.61),
    "vgg13": (133_047_848, 11_308_466_176, 11.31),
    "vgg16": (138_357_544, 15_470_264_320, 15.47),
    "vgg19": (143_667_240, 19_632_062_464, 19.63),
    "googlenet": (6_624_904, 1_498_376_192, 1.50),
    "resnet18": (11_689_512, 1_814_073_344, 1.81),
    "resnet34": (21_797_672, 3_663_761_408, 3.66),
    "resnet50": (25_557_032, 4_089_184_256, 4.09),
    "resnet101": (44_549_160, 7_801_405_440, 7.80),
    "resnet152": (60_192_808, 11_513_626_624, 11.51),
    "mobilenet_v2": (3_504_872, 300_774_272, 0.30),
    "efficientnet_b0": (5_288_548, 385_814_752, 0.39),
    "efficientnet_b1": (7_794_184, 686_802_832, 0.69),
    "efficientnet_b3": (12_233_232, 1_827_141_392, 1.83),
    "efficientnet_b7": (66_347_960, 37_745_884_192, 37.75),
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_torchvision_models_exact_params_and_macs(name):
    params, macs, gflops = EXACT[name]
    t = models.get(name).totals()
    assert t.params == params
    assert t.macs == macs
    assert round(t.macs / 1e9, 2) == gflops
    assert t.conv_macs + t.linear_macs == t.macs and t.linear_macs > 0


def test_textbook_and_paper_models():
    lenet = models.get("lenet5").totals()
    assert (lenet.params, lenet.macs) == (61_706, 416_520)
    a = models.get("alexnet_227").totals()
    assert (a.params, a.macs, a.flops) == (62_378_344, 1_135_256_096, 2_272_150_176)
    assert round(a.params / 1e6, 1) == 62.4 and round(a.flops / 1e9, 2) == 2.27       # §11.2 agrees
    v1 = models.get("mobilenet_v1").totals()
    assert (v1.params, v1.macs) == (4_231_976, 568_740_352)
    assert round(v1.params / 1e6, 1) == 4.2 and round(v1.macs / 1e6) == 569           # paper Table 8
    v75 = models.get("mobilenet_v1", alpha=0.75).totals()
    assert (v75.params, v75.macs) == (2_585_560, 325_400_448) and round(v75.macs / 1e6) == 325
    v50 = models.get("mobilenet_v1", alpha=0.5, rho=160 / 224)
    assert v50.resolution == (160, 160)
    assert (v50.totals().params, v50.totals().macs) == (1_331_592, 76_524_800)
    r50v1 = models.get("resnet50", variant="v1").totals()
    assert r50v1.params == 25_557_032 and r50v1.macs == 3_857_973_248 and round(r50v1.macs / 1e9, 1) == 3.9
    assert round(models.get("resnet101", variant="v1").totals().macs / 1e9, 1) == 7.6  # the book's 7.6G
    g = models.get("googlenet", variant="paper").totals()
    assert (g.params, g.macs) == (6_998_552, 1_582_671_872)


def test_lenet5_layers_against_11_1():
    m = models.get("lenet5")
    rows = {lay.name: lay for lay in m.layers}
    assert [rows[n].params for n in ("conv1", "conv2", "fc1", "fc2", "fc3")] == [156, 2_416, 48_120, 10_164, 850]
    assert [rows[n].output_shape for n in ("conv1", "pool1", "conv2", "pool2")] == \
        [(1, 6, 28, 28), (1, 6, 14, 14), (1, 16, 10, 10), (1, 16, 5, 5)]
    # The book's FLOPs: conv1 "122K" (= MACs + bias), conv2 "483K" (= 2·(MACs + bias)), fc 2·MACs.
    assert rows["conv1"].macs + 6 * 28 * 28 == 122_304 and rows["conv1"].flops == 235_200
    assert 2 * (rows["conv2"].macs + 16 * 10 * 10) == 483_200 and rows["conv2"].flops == 480_000
    assert [rows[n].flops for n in ("fc1", "fc2", "fc3")] == [96_000, 20_160, 1_680]
    # pools: §9.3 counts k² per output; the book's row uses k²−1 (3.5K, 1.2K)
    assert rows["pool1"].flops == 4 * 6 * 14 * 14 and 3 * 6 * 14 * 14 == 3_528
    t = m.totals()
    no_act = t.flops - sum(lay.flops for lay in m.layers if lay.type == "tanh")
    assert (t.flops, no_act) == (845_852, 839_344)


def test_alexnet_227_and_vgg16_rows():
    a = {lay.name: lay for lay in models.get("alexnet_227").layers}
    assert [a[f"conv{i}"].params for i in range(1, 6)] == [34_944, 614_656, 885_120, 1_327_488, 884_992]
    assert [a[n].params for n in ("fc6", "fc7", "fc8")] == [37_752_832, 16_781_312, 4_097_000]
    assert [round(a[f"conv{i}"].flops / 1e6) for i in range(1, 6)] == [211, 896, 299, 449, 299]
    assert [a[f"pool{i}"].output_shape[2] for i in (1, 2, 5)] == [27, 13, 6]
    v = models.get("vgg16")
    blocks = [sum(lay.params for lay in v.layers if lay.name.startswith(f"conv{b}_")) for b in range(1, 6)]
    assert blocks == [38_720, 221_440, 1_475_328, 5_899_776, 7_079_424]
    fc = sum(lay.params for lay in v.layers if lay.type == "linear")
    assert fc == 123_642_856 and round(fc / v.totals().params, 3) == 0.894


def test_receptive_fields():
    v = models.get("vgg16")
    assert (v.layer("conv5_3").rf, v.layer("pool5").rf) == ((196, 196), (212, 212))
    a = models.get("alexnet_227")
    assert (a.layer("conv5").rf, a.layer("pool5").rf, a.layer("fc6").rf) == ((163, 163), (195, 195), (355, 355))
    r = models.get("resnet50")
    assert r.layer("stem.conv").rf == (7, 7) and r.layer("maxpool").rf == (11, 11)
    assert r.layer("layer1.0.conv2").rf == (19, 19) and r.layer("layer4.2.relu").rf == (427, 427)
    assert r.layer("layer4.2.relu").jump == (32, 32)


def test_batch_resolution_and_dtype_scaling():
    base = models.get("resnet50").totals()
    b8 = models.get("resnet50", batch=8).totals()
    assert b8.params == base.params and b8.macs == 8 * base.macs and b8.flops == 8 * base.flops
    big = models.get("resnet50", resolution=448).totals()
    assert big.conv_macs == 4 * base.conv_macs and big.linear_macs == base.linear_macs
    rect = models.get("resnet18", resolution=(160, 256))
    assert rect.input_shape == (1, 3, 160, 256) and rect.layer("stem.conv").output_shape == (1, 64, 80, 128)
    assert rect.layer("avgpool").input_shape == (1, 512, 5, 8)
    half = models.get("mobilenet_v2", dtype="fp16")
    assert half.totals().activation_bytes * 2 == models.get("mobilenet_v2").totals().activation_bytes
    assert all(p.dtype == "float16" for _, p in half.conv_problems())
    # a non-default resolution of VGG: the adaptive 7x7 pool keeps the classifier's 25088 inputs
    assert models.get("vgg16", resolution=160).layer("fc6").input_shape == (1, 25088)


def test_conv_problems_for_the_bench():
    m = models.get("resnet50", batch=4)
    convs = m.conv_problems()
    assert len(convs) == 1 + 16 * 3 + 4
    assert convs[0][0] == "stem.conv"
    p = convs[0][1]
    assert (p.N, p.C, p.H, p.W, p.K, p.R, p.S, p.stride_h, p.pad_h) == (4, 3, 224, 224, 64, 7, 7, 2, 3)
    distinct = m.distinct_conv_problems()
    assert sum(n for _, n in distinct) == len(convs)
    assert len({q for q, _ in distinct}) == len(distinct) < len(convs)
    assert sum(q.macs() * n for q, n in distinct) == m.totals().conv_macs
    # layer1.1 and layer1.2 share all three convolutions
    same = [q for q, n in distinct if n >= 2]
    assert m.layer("layer1.1.conv2").problem in same
    assert models.distinct_conv_problems("vgg16")[0][0].C == 3
    dw = [q for _, q in models.get("mobilenet_v2").conv_problems() if q.is_depthwise]
    assert len(dw) == 17 and all(q.R == 3 for q in dw)


def test_every_model_builds_and_is_consistent():
    for name in models.names():
        m = models.get(name, batch=2)
        t = m.totals()
        assert t.params > 0 and t.macs > 0 and t.flops >= 2 * t.macs
        assert t.memory.total == 4 * t.params * 4 + t.activation_bytes + t.index_bytes
        assert m.layers[-1].output_shape == (2, 10 if name == "lenet5" else 1000)
        names = [lay.name for lay in m.layers]
        assert len(names) == len(set(names))
    for required in ("lenet5", "alexnet", "alexnet_227", "vgg16", "googlenet", "resnet18", "resnet34",
                     "resnet50", "resnet101", "resnet152", "mobilenet_v1", "mobilenet_v2", "efficientnet_b0"):
        assert required in models.names()
    assert models.get("ResNet-50").name == "resnet50"


@pytest.mark.parametrize("call,exc,match", [
    (lambda: models.get("resnet51"), ValueError, "unknown model"),
    (lambda: models.get("resnet50", batch=0), ValueError, "batch"),
    (lambda: models.get("resnet50", alpha=0.5), TypeError, "unexpected option"),
    (lambda: models.get("alexnet", resolution=32), ValueError, "layer 'pool5'"),
    (lambda: models.get("mobilenet_v1", resolution=192, rho=0.5), ValueError, "not both"),
    (lambda: models.get("resnet50", variant="v2"), ValueError, "variant"),
    (lambda: models.get("resnet50", resolution=(224, 0)), ValueError, "resolution"),
])
def test_bad_model_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------- the CLI
def _cli(*args):
    code = ("import sys; from cuconv.cli import main; rc = main(sys.argv[1:]); "
            "assert 'cupy' not in sys.modules, 'cuconv cost imported cupy'; sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_cli_json_for_resnet50():
    r = _cli("cost", "resnet50", "--json", "--batch", "2", "--dtype", "fp16")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    t = doc["totals"]
    assert (t["params"], t["macs"]) == (25_557_032, 2 * 4_089_184_256)
    assert t["flops"] == 2 * models.get("resnet50").totals().flops
    assert doc["dtype"] == "float16" and len(doc["layers"]) == len(models.get("resnet50").layers)
    stem = doc["layers"][0]
    assert stem["name"] == "stem.conv" and stem["problem"]["K"] == 64 and stem["output_shape"] == [2, 64, 112, 112]
    assert "bias excluded" in doc["conventions"]["macs"]


def test_cli_compare_list_and_table():
    r = _cli("cost", "--compare", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["architecture"]: row for row in json.loads(r.stdout)["rows"]}
    assert rows["AlexNet"]["book_flops_is"] == "FLOPs" and rows["VGG-16"]["book_flops_is"] == "MACs"
    assert rows["LeNet-5"]["book_flops_is"] == "neither" and rows["ResNet-50"]["book_flops_is"] == "neither"
    assert rows["ResNet-50 (paper v1)"]["book_flops_is"] == "MACs"
    assert rows["EfficientNet-B7"]["params"] == 66_347_960
    text = _cli("cost", "--compare").stdout
    assert "§11.7" in text and "138,357,544" in text
    assert "mobilenet_v1" in _cli("cost", "--list").stdout
    table = _cli("cost", "lenet5")
    assert table.returncode == 0 and "bias excluded" in table.stdout and "61,706" in table.stdout
    opt = _cli("cost", "mobilenet_v1", "-o", "alpha=0.75", "--json")
    assert json.loads(opt.stdout)["totals"]["params"] == 2_585_560
    bad = _cli("cost", "nonet")
    assert bad.returncode == 2 and "unknown model" in bad.stderr


def test_totals_cover_every_layer():
    m = models.get("efficientnet_b0")
    t = m.totals()
    assert t.params == sum(lay.params for lay in m.layers)
    assert t.flops == sum(lay.flops for lay in m.layers)
    assert t.im2col_bytes_max == max(lay.cost.im2col_bytes for lay in m.layers)
    se = [lay for lay in m.layers if lay.type == "scale"]
    assert len(se) == 16 and all(isinstance(lay.layer, C.ChannelScale) for lay in se)

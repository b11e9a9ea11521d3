"""Landmark CNNs (§11) as real layer lists, costed layer by layer with :mod:`cuconv.cost`.

Where torchvision defines a model, the layers here are its architecture exactly (in
evaluation mode: no auxiliary heads, dropout and stochastic depth are identities),
so parameter counts equal torchvision's and MACs equal its published "GFLOPS".
``lenet5`` and ``alexnet_227`` follow the textbook's tables; ``mobilenet_v1`` the paper.

    >>> m = get("resnet50", batch=8)
    >>> m.totals().params, m.totals().macs          # exact integers
    >>> m.distinct_conv_problems()                   # [(Conv2dProblem, count), ...]
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from . import cost as C
from .problem import Conv2dProblem, dtype_name


# ============================================================== the model
@dataclass(frozen=True)
class ModelLayer:
    """One layer of a model: its spec, where its inputs come from, its cost and receptive field."""
    name: str
    layer: object
    inputs: tuple[str, ...]
    cost: C.LayerCost
    rf: tuple            # (rows, cols) of the network input that can reach one output
    jump: tuple          # (rows, cols) input pixels per output step

    @property
    def type(self) -> str:
        return self.cost.kind

    @property
    def input_shape(self):
        return self.cost.input_shape

    @property
    def input_shapes(self):
        return self.cost.input_shapes

    @property
    def output_shape(self):
        return self.cost.output_shape

    @property
    def problem(self) -> Conv2dProblem | None:
        """The convolution of a conv layer (None for other layers)."""
        return self.cost.problem

    @property
    def params(self) -> int:
        return self.cost.params

    @property
    def macs(self) -> int:
        return self.cost.macs

    @property
    def flops(self) -> int:
        return self.cost.flops

    def rf_text(self) -> str:
        def one(v):
            return str(v) if Fraction(v).denominator == 1 else f"{float(v):.3g}"
        return one(self.rf[0]) if self.rf[0] == self.rf[1] else f"{one(self.rf[0])}x{one(self.rf[1])}"


@dataclass(frozen=True)
class Model:
    name: str
    batch: int
    resolution: tuple[int, int]
    dtype: str
    input_shape: tuple
    layers: tuple[ModelLayer, ...]
    source: str = ""

    def totals(self) -> C.CostTotals:
        return C.total_cost((lay.cost for lay in self.layers), self.dtype)

    def layer(self, name: str) -> ModelLayer:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(f"{self.name} has no layer {name!r}")

    def conv_layers(self) -> list[ModelLayer]:
        return [lay for lay in self.layers if lay.problem is not None]

    def conv_problems(self) -> list[tuple[str, Conv2dProblem]]:
        """(layer name, Conv2dProblem) for every convolution, in network order."""
        return [(lay.name, lay.problem) for lay in self.conv_layers()]

    def distinct_conv_problems(self) -> list[tuple[Conv2dProblem, int]]:
        """Each distinct convolution once, in order of first appearance, with how often it occurs."""
        counts: dict[Conv2dProblem, int] = {}
        for _, p in self.conv_problems():
            counts[p] = counts.get(p, 0) + 1
        return list(counts.items())

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)


@dataclass(frozen=True)
class _Tensor:
    shape: tuple
    rf: tuple
    jump: tuple
    extent: tuple        # spatial size of the feature map this tensor was flattened from


class _Net:
    """Builds a Model: each call adds a layer reading the named tensors (default: the last one)."""

    def __init__(self, name: str, batch: int, resolution: tuple[int, int], channels: int, dtype: str):
        self.name, self.batch, self.resolution, self.dtype = name, batch, resolution, dtype
        self.input_shape = (batch, channels) + tuple(resolution)
        self.tensors = {"input": _Tensor(self.input_shape, (1, 1), (1, 1), tuple(resolution))}
        self.layers: list[ModelLayer] = []
        self.last = "input"
        self.source = ""          # a builder may name the definition it followed

    @property
    def shape(self):
        return self.tensors[self.last].shape

    def __call__(self, name: str, layer, *inputs: str) -> str:
        if name in self.tensors:
            raise ValueError(f"{self.name}: duplicate layer name {name!r}")
        srcs = inputs or (self.last,)
        ts = [self.tensors[s] for s in srcs]
        shapes = [t.shape for t in ts]
        try:
            cost = layer.cost(shapes[0] if len(shapes) == 1 else shapes, self.dtype)
        except ValueError as e:
            raise ValueError(f"{self.name} at resolution {self.resolution[0]}x{self.resolution[1]}, "
                             f"layer {name!r}: {e}") from None
        rf, jump, extent = self._receptive_field(layer, ts, cost)
        self.layers.append(ModelLayer(name, layer, tuple(srcs), cost, rf, jump))
        self.tensors[name] = _Tensor(cost.output_shape, rf, jump, extent)
        self.last = name
        return name

    @staticmethod
    def _receptive_field(layer, ts, cost):
        rf = tuple(max(t.rf[i] for t in ts) for i in range(2))
        # The first input is the full-size one (a broadcast SE scale has no positions to step).
        jump = ts[0].jump
        step = layer.rf_kernel_stride(ts[0].shape)
        whole_map = step is None          # Linear: every output sees the whole flattened map
        (kh, kw), (sh, sw) = (ts[0].extent, (1, 1)) if whole_map else step
        rf = (rf[0] + (kh - 1) * jump[0], rf[1] + (kw - 1) * jump[1])
        jump = (jump[0] * sh, jump[1] * sw)
        out = cost.output_shape
        if len(out) == 4:
            extent = tuple(out[2:4])
        else:
            extent = (1, 1) if whole_map else ts[0].extent
        return rf, jump, extent

    def conv_bn_act(self, prefix: str, cin: int, cout: int, k, stride=1, padding=None, groups=1,
                    act: str | None = "relu", bias: bool = False, bn: bool = True) -> str:
        """Conv (no bias by default) → BatchNorm → activation, as torchvision's Conv2dNormActivation."""
        if padding is None:
            padding = (k - 1) // 2
        self(f"{prefix}.conv" if bn or act else prefix, C.Conv2d(cin, cout, k, stride, padding, 1, groups, bias))
        if bn:
            self(f"{prefix}.bn", C.BatchNorm2d(cout))
        if act:
            self(f"{prefix}.{act}", C.Activation(act))
        return self.last

    def classifier_head(self, features: int, num_classes: int, dropout: float | None = None) -> str:
        self("avgpool", C.GlobalAvgPool2d())
        self("flatten", C.Flatten())
        if dropout:
            self("dropout", C.Dropout(dropout))
        self("fc", C.Linear(features, num_classes))
        return self.last

    def build(self, source: str = "") -> Model:
        return Model(self.name, self.batch, tuple(self.resolution), self.dtype, self.input_shape,
                     tuple(self.layers), source)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor``, never below 90% of ``value`` (MobileNet/EfficientNet)."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


# ============================================================== LeNet, AlexNet, VGG
def lenet5(net: _Net, num_classes: int = 10, activation: str = "tanh") -> str:
    """§11.1: Conv(6, 5×5) → AvgPool 2 → Conv(16, 5×5) → AvgPool 2 → FC 120 → FC 84 → FC 10 on 32×32×1.
    The book lists no non-linearity; LeNet-5 squashes with tanh after each conv and hidden FC."""
    net("conv1", C.Conv2d(1, 6, 5))
    net("act1", C.Activation(activation))
    net("pool1", C.AvgPool2d(2, 2))
    net("conv2", C.Conv2d(6, 16, 5))
    net("act2", C.Activation(activation))
    net("pool2", C.AvgPool2d(2, 2))
    net("flatten", C.Flatten())
    net("fc1", C.Linear(net.shape[1], 120))
    net("act3", C.Activation(activation))
    net("fc2", C.Linear(120, 84))
    net("act4", C.Activation(activation))
    return net("fc3", C.Linear(84, num_classes))


def alexnet(net: _Net, num_classes: int = 1000) -> str:
    """torchvision's AlexNet (64-192-384-256-256 channels, from "One weird trick")."""
    for i, (cin, cout, k, s, p, pool) in enumerate([(3, 64, 11, 4, 2, True), (64, 192, 5, 1, 2, True),
                                                     (192, 384, 3, 1, 1, False), (384, 256, 3, 1, 1, False),
                                                     (256, 256, 3, 1, 1, True)], start=1):
        net(f"conv{i}", C.Conv2d(cin, cout, k, s, p))
        net(f"relu{i}", C.Activation("relu"))
        if pool:
            net(f"pool{i}", C.MaxPool2d(3, 2))
    net("avgpool", C.AdaptiveAvgPool2d(6))
    net("flatten", C.Flatten())
    _fc_head(net, 256 * 6 * 6, num_classes, dropout_first=True)
    return net.last


def _fc_head(net: _Net, features: int, num_classes: int, dropout_first: bool) -> None:
    """FC 4096 → FC 4096 → FC classes with ReLU and dropout (AlexNet's and VGG's classifier)."""
    if dropout_first:
        net("dropout6", C.Dropout(0.5))
    net("fc6", C.Linear(features, 4096))
    net("relu6", C.Activation("relu"))
    if not dropout_first:
        net("dropout6", C.Dropout(0.5))
    if dropout_first:
        net("dropout7", C.Dropout(0.5))
    net("fc7", C.Linear(4096, 4096))
    net("relu7", C.Activation("relu"))
    if not dropout_first:
        net("dropout7", C.Dropout(0.5))
    net("fc8", C.Linear(4096, num_classes))


def alexnet_227(net: _Net, num_classes: int = 1000) -> str:
    """§11.2: the paper's network on 227×227 as one tower (96-256-384-384-256, no groups);
    local response normalisation is left out, as in the book's table."""
    for i, (cin, cout, k, s, p, pool) in enumerate([(3, 96, 11, 4, 0, True), (96, 256, 5, 1, 2, True),
                                                     (256, 384, 3, 1, 1, False), (384, 384, 3, 1, 1, False),
                                                     (384, 256, 3, 1, 1, True)], start=1):
        net(f"conv{i}", C.Conv2d(cin, cout, k, s, p))
        net(f"relu{i}", C.Activation("relu"))
        if pool:
            net(f"pool{i}", C.MaxPool2d(3, 2))
    net("flatten", C.Flatten())
    _fc_head(net, net.shape[1], num_classes, dropout_first=False)
    return net.last


VGG_CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def vgg(net: _Net, config: str, num_classes: int = 1000) -> str:
    """torchvision's VGG (no batch norm): 3×3 convs + ReLU, 2×2 max pools, adaptive 7×7 pool, FC head."""
    cin, block, index = 3, 1, 1
    for v in VGG_CONFIGS[config]:
        if v == "M":
            net(f"pool{block}", C.MaxPool2d(2, 2))
            block, index = block + 1, 1
            continue
        net(f"conv{block}_{index}", C.Conv2d(cin, v, 3, padding=1))
        net(f"relu{block}_{index}", C.Activation("relu"))
        cin, index = v, index + 1
    net("avgpool", C.AdaptiveAvgPool2d(7))
    net("flatten", C.Flatten())
    _fc_head(net, 512 * 7 * 7, num_classes, dropout_first=False)
    return net.last


# ============================================================== GoogLeNet
GOOGLENET_INCEPTIONS = [  # name, in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj; "pool" = max pool
    ("inception3a", 192, 64, 96, 128, 16, 32, 32), ("inception3b", 256, 128, 128, 192, 32, 96, 64), "pool",
    ("inception4a", 480, 192, 96, 208, 16, 48, 64), ("inception4b", 512, 160, 112, 224, 24, 64, 64),
    ("inception4c", 512, 128, 128, 256, 24, 64, 64), ("inception4d", 512, 112, 144, 288, 32, 64, 64),
    ("inception4e", 528, 256, 160, 320, 32, 128, 128), "pool2",
    ("inception5a", 832, 256, 160, 320, 32, 128, 128), ("inception5b", 832, 384, 192, 384, 48, 128, 128),
]


def googlenet(net: _Net, num_classes: int = 1000, variant: str = "torchvision") -> str:
    """GoogLeNet / Inception v1 in evaluation mode (no auxiliary classifiers).

    ``variant="torchvision"``: convs without bias + BatchNorm(eps 1e-3) + ReLU, and 3×3
    convolutions in the "5×5" branch (torchvision issue 906), 6,624,904 parameters.
    ``variant="paper"``: Szegedy et al.'s table: biased convs + ReLU, no BN, true 5×5 convs
    (local response normalisation left out; it has no parameters or MACs).
    """
    if variant not in ("torchvision", "paper"):
        raise ValueError(f"googlenet variant must be 'torchvision' or 'paper', got {variant!r}")
    paper = variant == "paper"
    net.source = "Szegedy et al. 2015 (paper)" if paper else "torchvision"

    def basic(prefix, cin, cout, k, stride=1, padding=0, inputs=()):
        net(f"{prefix}.conv", C.Conv2d(cin, cout, k, stride, padding, bias=paper), *inputs)
        if not paper:
            net(f"{prefix}.bn", C.BatchNorm2d(cout))
        return net(f"{prefix}.relu", C.Activation("relu"))

    basic("conv1", 3, 64, 7, 2, 3)
    net("maxpool1", C.MaxPool2d(3, 2, ceil_mode=True))
    basic("conv2", 64, 64, 1)
    basic("conv3", 64, 192, 3, padding=1)
    net("maxpool2", C.MaxPool2d(3, 2, ceil_mode=True))
    pools = 3
    for spec in GOOGLENET_INCEPTIONS:
        if isinstance(spec, str):
            net(f"maxpool{pools}", C.MaxPool2d(3 if spec == "pool" else 2, 2, ceil_mode=True))
            pools += 1
            continue
        name, cin, c1, c3r, c3, c5r, c5, pp = spec
        x = net.last
        b1 = basic(f"{name}.branch1", cin, c1, 1, inputs=(x,))
        basic(f"{name}.branch2.0", cin, c3r, 1, inputs=(x,))
        b2 = basic(f"{name}.branch2.1", c3r, c3, 3, padding=1)
        basic(f"{name}.branch3.0", cin, c5r, 1, inputs=(x,))
        b3 = basic(f"{name}.branch3.1", c5r, c5, 5 if paper else 3, padding=2 if paper else 1)
        net(f"{name}.branch4.pool", C.MaxPool2d(3, 1, 1, ceil_mode=True), x)
        b4 = basic(f"{name}.branch4.1", cin, pp, 1)
        net(f"{name}.concat", C.Concat(), b1, b2, b3, b4)
    net.classifier_head(1024, num_classes, dropout=0.4 if paper else 0.2)
    return net.last


# ============================================================== ResNet
RESNET_BLOCKS = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet34": ("basic", [3, 4, 6, 3]),
                 "resnet50": ("bottleneck", [3, 4, 6, 3]), "resnet101": ("bottleneck", [3, 4, 23, 3]),
                 "resnet152": ("bottleneck", [3, 8, 36, 3])}


def resnet(net: _Net, depth_name: str, num_classes: int = 1000, variant: str = "v1.5") -> str:
    """torchvision's ResNet. ``variant="v1.5"`` (torchvision) strides the bottleneck's 3×3 conv;
    ``variant="v1"`` (He et al.'s paper) strides its first 1×1 instead. Basic blocks are the same in both."""
    if variant not in ("v1.5", "v1"):
        raise ValueError(f"resnet variant must be 'v1.5' or 'v1', got {variant!r}")
    block, counts = RESNET_BLOCKS[depth_name]
    net.source = "He et al. 2016 (v1: stride in the first 1x1)" if variant == "v1" else "torchvision (v1.5)"
    expansion = 4 if block == "bottleneck" else 1
    net.conv_bn_act("stem", 3, 64, 7, 2, 3)
    net("maxpool", C.MaxPool2d(3, 2, 1))
    cin = 64
    for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), counts), start=1):
        for b in range(n):
            stride = 2 if (stage > 1 and b == 0) else 1
            p = f"layer{stage}.{b}"
            x = net.last
            out = planes * expansion
            if block == "basic":
                net(f"{p}.conv1", C.Conv2d(cin, planes, 3, stride, 1, bias=False), x)
                net(f"{p}.bn1", C.BatchNorm2d(planes))
                net(f"{p}.relu1", C.Activation("relu"))
                net(f"{p}.conv2", C.Conv2d(planes, planes, 3, 1, 1, bias=False))
                main = net(f"{p}.bn2", C.BatchNorm2d(planes))
            else:
                s1, s3 = (stride, 1) if variant == "v1" else (1, stride)
                net(f"{p}.conv1", C.Conv2d(cin, planes, 1, s1, bias=False), x)
                net(f"{p}.bn1", C.BatchNorm2d(planes))
                net(f"{p}.relu1", C.Activation("relu"))
                net(f"{p}.conv2", C.Conv2d(planes, planes, 3, s3, 1, bias=False))
                net(f"{p}.bn2", C.BatchNorm2d(planes))
                net(f"{p}.relu2", C.Activation("relu"))
                net(f"{p}.conv3", C.Conv2d(planes, out, 1, bias=False))
                main = net(f"{p}.bn3", C.BatchNorm2d(out))
            shortcut = x
            if stride != 1 or cin != out:
                net(f"{p}.downsample.0", C.Conv2d(cin, out, 1, stride, bias=False), x)
                shortcut = net(f"{p}.downsample.1", C.BatchNorm2d(out))
            net(f"{p}.add", C.Add(), main, shortcut)
            net(f"{p}.relu", C.Activation("relu"))
            cin = out
    net.classifier_head(512 * expansion, num_classes)
    return net.last


# ============================================================== MobileNets, EfficientNet
MOBILENET_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + \
    [(1024, 2), (1024, 1)]


def mobilenet_v1(net: _Net, num_classes: int = 1000, alpha: float = 1.0) -> str:
    """Howard et al. 2017, Table 1: a 3×3/2 conv then 13 depthwise-separable blocks, each conv
    followed by BN + ReLU; global average pool and FC. Width α scales every layer to ⌊α·c⌋
    channels (as Keras does); the resolution multiplier ρ is the input size."""
    if not alpha > 0:
        raise ValueError(f"mobilenet_v1: alpha must be positive, got {alpha}")

    def width(c):
        return max(1, int(c * alpha))

    cin = width(32)
    net.conv_bn_act("conv0", 3, cin, 3, 2, 1)
    for i, (c, s) in enumerate(MOBILENET_V1_BLOCKS, start=1):
        cout = width(c)
        net.conv_bn_act(f"block{i}.dw", cin, cin, 3, s, 1, groups=cin)
        net.conv_bn_act(f"block{i}.pw", cin, cout, 1)
        cin = cout
    net.classifier_head(cin, num_classes)
    return net.last


MOBILENET_V2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                         (6, 160, 3, 2), (6, 320, 1, 1)]   # expansion t, channels c, repeats n, stride s


def mobilenet_v2(net: _Net, num_classes: int = 1000, width_mult: float = 1.0) -> str:
    """torchvision's MobileNetV2: inverted residuals (1×1 expand, 3×3 depthwise, linear 1×1
    project) with ReLU6, last 1×1 conv to 1280 channels."""
    cin = make_divisible(32 * width_mult, 8)
    last = make_divisible(1280 * max(1.0, width_mult), 8)
    net.conv_bn_act("features.0", 3, cin, 3, 2, act="relu6")
    index = 1
    for t, c, n, s in MOBILENET_V2_SETTINGS:
        cout = make_divisible(c * width_mult, 8)
        for i in range(n):
            stride = s if i == 0 else 1
            p = f"features.{index}"
            x = net.last
            hidden = int(round(cin * t))
            if t != 1:
                net.conv_bn_act(f"{p}.expand", cin, hidden, 1, act="relu6")
            net.conv_bn_act(f"{p}.dw", hidden, hidden, 3, stride, groups=hidden, act="relu6")
            y = net.conv_bn_act(f"{p}.project", hidden, cout, 1, act=None)
            if stride == 1 and cin == cout:
                net(f"{p}.add", C.Add(), y, x)
            cin = cout
            index += 1
    net.conv_bn_act(f"features.{index}", cin, last, 1, act="relu6")
    net.classifier_head(last, num_classes, dropout=0.2)
    return net.last


EFFICIENTNET_STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
                       (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
# name: (width multiplier, depth multiplier, resolution, dropout), torchvision's table
EFFICIENTNET_SCALING = {
    "efficientnet_b0": (1.0, 1.0, 224, 0.2), "efficientnet_b1": (1.0, 1.1, 240, 0.2),
    "efficientnet_b2": (1.1, 1.2, 288, 0.3), "efficientnet_b3": (1.2, 1.4, 300, 0.3),
    "efficientnet_b4": (1.4, 1.8, 380, 0.4), "efficientnet_b5": (1.6, 2.2, 456, 0.4),
    "efficientnet_b6": (1.8, 2.6, 528, 0.5), "efficientnet_b7": (2.0, 3.1, 600, 0.5),
}


def efficientnet(net: _Net, name: str, num_classes: int = 1000) -> str:
    """torchvision's EfficientNet-B0…B7: MBConv blocks (1×1 expand, k×k depthwise,
    squeeze-and-excitation with SiLU and sigmoid, linear 1×1 project) with SiLU, compound-scaled."""
    width_mult, depth_mult, _, dropout = EFFICIENTNET_SCALING[name]

    def ch(c):
        return make_divisible(c * width_mult, 8)

    stages = [(t, k, s, ch(ci), ch(co), int(math.ceil(n * depth_mult))) for t, k, s, ci, co, n in EFFICIENTNET_STAGES]
    net.conv_bn_act("features.0", 3, stages[0][3], 3, 2, act="silu")
    for si, (t, k, s, cin0, cout, n) in enumerate(stages, start=1):
        for b in range(n):
            cin, stride = (cin0, s) if b == 0 else (cout, 1)
            p = f"features.{si}.{b}"
            x = net.last
            expanded = make_divisible(cin * t, 8)
            if expanded != cin:
                net.conv_bn_act(f"{p}.expand", cin, expanded, 1, act="silu")
            dw = net.conv_bn_act(f"{p}.dw", expanded, expanded, k, stride, groups=expanded, act="silu")
            squeeze = max(1, cin // 4)
            net(f"{p}.se.avgpool", C.GlobalAvgPool2d())
            net(f"{p}.se.fc1", C.Conv2d(expanded, squeeze, 1))
            net(f"{p}.se.silu", C.Activation("silu"))
            net(f"{p}.se.fc2", C.Conv2d(squeeze, expanded, 1))
            scale = net(f"{p}.se.sigmoid", C.Activation("sigmoid"))
            net(f"{p}.se.scale", C.ChannelScale(), dw, scale)
            y = net.conv_bn_act(f"{p}.project", expanded, cout, 1, act=None)
            if stride == 1 and cin == cout:
                net(f"{p}.add", C.Add(), y, x)
    last_in = stages[-1][4]
    net.conv_bn_act(f"features.{len(stages) + 1}", last_in, 4 * last_in, 1, act="silu")
    net.classifier_head(4 * last_in, num_classes, dropout=dropout)
    return net.last


# ============================================================== registry
@dataclass(frozen=True)
class _Entry:
    build: object           # (net, **kw) -> None
    resolution: int
    channels: int
    title: str
    year: int
    source: str
    options: tuple[str, ...] = ()


def _register():
    r = {
        "lenet5": _Entry(lenet5, 32, 1, "LeNet-5", 1998, "textbook §11.1", ("num_classes", "activation")),
        "alexnet": _Entry(alexnet, 224, 3, "AlexNet (torchvision)", 2012, "torchvision", ("num_classes",)),
        "alexnet_227": _Entry(alexnet_227, 227, 3, "AlexNet (paper, one tower)", 2012, "textbook §11.2",
                              ("num_classes",)),
        "googlenet": _Entry(googlenet, 224, 3, "GoogLeNet", 2014, "torchvision (variant='paper': Szegedy et al.)",
                            ("num_classes", "variant")),
        "mobilenet_v1": _Entry(mobilenet_v1, 224, 3, "MobileNet v1", 2017, "Howard et al. 2017",
                               ("num_classes", "alpha", "rho")),
        "mobilenet_v2": _Entry(mobilenet_v2, 224, 3, "MobileNetV2", 2018, "torchvision",
                               ("num_classes", "width_mult")),
    }
    for name in VGG_CONFIGS:
        r[name] = _Entry(lambda net, _n=name, **kw: vgg(net, _n, **kw), 224, 3, name.upper().replace("VGG", "VGG-"),
                         2014, "torchvision", ("num_classes",))
    for name in RESNET_BLOCKS:
        r[name] = _Entry(lambda net, _n=name, **kw: resnet(net, _n, **kw), 224, 3,
                         "ResNet-" + name[len("resnet"):], 2015, "torchvision (variant='v1': He et al.)",
                         ("num_classes", "variant"))
    for name, (_, _, res, _) in EFFICIENTNET_SCALING.items():
        r[name] = _Entry(lambda net, _n=name, **kw: efficientnet(net, _n, **kw), res, 3,
                         "EfficientNet-" + name[-2:].upper(), 2019, "torchvision", ("num_classes",))
    order = ["lenet5", "alexnet", "alexnet_227", "vgg11", "vgg13", "vgg16", "vgg19", "googlenet",
             "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v1", "mobilenet_v2"] + \
        list(EFFICIENTNET_SCALING)
    return {n: r[n] for n in order}


MODELS = _register()


def names() -> list[str]:
    """The model names :func:`get` accepts."""
    return list(MODELS)


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {name!r}")
    key = name.lower().replace("-", "").replace("_", "")
    for n in MODELS:
        if n.replace("_", "") == key:
            return n
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")


def info(name: str) -> _Entry:
    return MODELS[_canonical(name)]


def _resolution(value, default: int) -> tuple[int, int]:
    if value is None:
        return (default, default)
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"resolution must be an int or (height, width), got {value!r}")
        h, w = value
    else:
        h = w = value
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"resolution must be positive int(s), got {value!r}")
    return (int(h), int(w))


def get(name: str, batch: int = 1, resolution=None, dtype="float32", **kw) -> Model:
    """Build model ``name`` for ``batch`` images of ``resolution`` (int or (H, W); default: the
    model's own) at ``dtype``. Extra keywords are the model's options (see ``info(name).options``),
    e.g. ``alpha``/``rho`` for mobilenet_v1, ``width_mult`` for mobilenet_v2, ``variant`` for
    resnet*/googlenet, ``num_classes`` for all."""
    canon = _canonical(name)
    entry = MODELS[canon]
    if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    unknown = sorted(set(kw) - set(entry.options))
    if unknown:
        raise TypeError(f"{canon} got unexpected option(s) {unknown}; it accepts {list(entry.options)}")
    if "rho" in kw:
        rho = kw.pop("rho")
        if resolution is not None:
            raise ValueError("give mobilenet_v1 either resolution or rho, not both")
        if not rho > 0:
            raise ValueError(f"rho must be positive, got {rho}")
        resolution = max(1, round(entry.resolution * rho))
    res = _resolution(resolution, entry.resolution)
    net = _Net(canon, batch, res, entry.channels, dtype_name(dtype))
    entry.build(net, **kw)
    return net.build(net.source or entry.source)


def distinct_conv_problems(name: str, batch: int = 1, resolution=None, dtype="float32", **kw):
    """Shortcut for ``get(...).distinct_conv_problems()``: [(Conv2dProblem, count), ...]."""
    return get(name, batch, resolution, dtype, **kw).distinct_conv_problems()


__all__ = ["Model", "ModelLayer", "MODELS", "names", "get", "info", "distinct_conv_problems", "make_divisible"]

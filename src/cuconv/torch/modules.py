"""nn.Module drop-ins (subclasses of torch.nn's, forward on cuconv) and ``convert(model)``.

Each drop-in takes its torch.nn parent's arguments and has its parameters, state_dict keys and
initialisation (its ``__init__`` is the parent's); only ``forward`` differs. Options cuconv
cannot run raise ValueError at construction. ``convert(model)`` swaps a model's torch.nn
layers for drop-ins in place, sharing their Parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from . import functional as F


def _refuse(module) -> None:
    """ValueError at construction for an option cuconv cannot run."""
    why = module.refusal(module)
    if why:
        raise ValueError(f"cuconv.torch.{type(module).__name__}: {why}")


class Conv2d(nn.Conv2d):
    """torch.nn.Conv2d on cuconv (padding_mode 'zeros'); ``algo`` picks the forward algorithm."""

    def __init__(self, *args, algo: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.algo = algo
        _refuse(self)

    @staticmethod
    def refusal(m: nn.Conv2d) -> str | None:
        return None if m.padding_mode == "zeros" else f"padding_mode={m.padding_mode!r} (cuconv pads with zeros)"

    def _adopt(self) -> None:
        self.algo = "auto"

    def forward(self, input):  # noqa: A002
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                        algo=self.algo)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.algo == "auto" else f"{s}, algo={self.algo!r}"


class ConvTranspose2d(nn.ConvTranspose2d):
    """torch.nn.ConvTranspose2d on cuconv; ``forward(input, output_size=None)`` as torch's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _refuse(self)

    @staticmethod
    def refusal(m: nn.ConvTranspose2d) -> str | None:
        return None if m.padding_mode == "zeros" else f"padding_mode={m.padding_mode!r} (cuconv pads with zeros)"

    def _adopt(self) -> None:
        pass

    def forward(self, input, output_size=None):  # noqa: A002
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size, 2,
                                              self.dilation)
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                  self.groups, self.dilation)


class MaxPool2d(nn.MaxPool2d):
    """torch.nn.MaxPool2d on cuconv (``return_indices`` included)."""

    @staticmethod
    def refusal(m: nn.MaxPool2d) -> str | None:
        return None

    def _adopt(self) -> None:
        pass

    def forward(self, input):  # noqa: A002
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(nn.AvgPool2d):
    """torch.nn.AvgPool2d on cuconv (count_include_pad, divisor_override, ceil_mode as torch's)."""

    @staticmethod
    def refusal(m: nn.AvgPool2d) -> str | None:
        return None

    def _adopt(self) -> None:
        pass

    def forward(self, input):  # noqa: A002
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """torch.nn.AdaptiveAvgPool2d(1) on cuconv: global average pooling; other output sizes
    raise ValueError at construction."""

    def __init__(self, output_size=1):
        super().__init__(output_size)
        _refuse(self)

    @staticmethod
    def refusal(m: nn.AdaptiveAvgPool2d) -> str | None:
        if F.global_output_size(m.output_size):
            return None
        return f"output_size={m.output_size!r} (cuconv runs output size 1, global average pooling, only)"

    def _adopt(self) -> None:
        pass

    def forward(self, input):  # noqa: A002
        return F.adaptive_avg_pool2d(input, self.output_size)


# Exact torch.nn types -> drop-ins. Subclasses of these are left alone: their forward may differ.
DROP_INS = {nn.Conv2d: Conv2d, nn.ConvTranspose2d: ConvTranspose2d, nn.MaxPool2d: MaxPool2d,
            nn.AvgPool2d: AvgPool2d, nn.AdaptiveAvgPool2d: AdaptiveAvgPool2d}


@dataclass
class ConvertReport:
    """What ``convert`` did: ``converted`` [(qualified name, torch.nn type)], ``skipped``
    [(qualified name, type, why)] (layers of the kinds cuconv has that it cannot run)."""
    converted: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"cuconv.torch.convert: {len(self.converted)} layer(s) converted, {len(self.skipped)} skipped"]
        lines += [f"  skipped {name or '(model)'} ({kind}): {why}" for name, kind, why in self.skipped]
        return "\n".join(lines)


def _drop_in(m: nn.Module, cls):
    """A ``cls`` sharing ``m``'s Parameters, buffers, submodules and hooks (no copies, no init)."""
    new = cls.__new__(cls)
    new.__dict__.update({k: (v.copy() if isinstance(v, (dict, set)) else v) for k, v in m.__dict__.items()})
    new._adopt()
    return new


def _convert_one(m: nn.Module, name: str, report: ConvertReport, memo: dict):
    """The module to put in ``m``'s place (``m`` itself when it stays)."""
    if id(m) in memo:
        return memo[id(m)]
    cls = DROP_INS.get(type(m))
    new = m
    if cls is not None:
        why = cls.refusal(m)
        if why is None:
            new = _drop_in(m, cls)
            report.converted.append((name, type(m).__name__))
        else:
            report.skipped.append((name, type(m).__name__, why))
    elif type(m) not in DROP_INS.values() and isinstance(m, tuple(DROP_INS)):
        report.skipped.append((name, type(m).__name__, f"a subclass of torch.nn.{_base(m)} (its forward may differ)"))
    memo[id(m)] = new
    if new is m:
        for child_name, child in list(m._modules.items()):
            if child is not None:
                replacement = _convert_one(child, f"{name}.{child_name}" if name else child_name, report, memo)
                if replacement is not child:
                    m._modules[child_name] = replacement
    return new


def _base(m) -> str:
    return next(base.__name__ for base in DROP_INS if isinstance(m, base))


def convert(model: nn.Module):
    """Replace, in place, the torch.nn ``Conv2d``, ``ConvTranspose2d``, ``MaxPool2d``,
    ``AvgPool2d`` and ``AdaptiveAvgPool2d(1)`` layers of ``model`` (exact types, e.g.
    torchvision's) by cuconv.torch's drop-ins sharing the same Parameter objects (an optimizer
    made before still updates them; state_dict keys are unchanged). Layers cuconv cannot run
    (padding_mode other than 'zeros', adaptive output sizes other than 1, subclasses of those
    types) are left as they are and listed in the report.

    Returns ``(model, report)``: the model (a new object only when ``model`` itself is such a
    layer) and a ``ConvertReport``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: model must be a torch.nn.Module, got {type(model).__name__}")
    report = ConvertReport()
    return _convert_one(model, "", report, {}), report

"""Compact CNN backbones written in facerig (no torchvision / timm): image -> feature vector.

Two families, both channels-first inside (``(B, 3, S, S)``; :class:`facerig.encoder.FaceEncoder`
converts facerig's channels-last images), global-average pooled to a ``(B, C)`` feature:

* :class:`ResNetBackbone` - a ResNet-18-style stack of basic residual blocks (3x3 convs,
  BatchNorm, ReLU); ``widths`` and ``depths`` set its size.
* :class:`MobileBackbone` - MobileNetV2-style inverted residuals (1x1 expand, 3x3 depthwise,
  1x1 linear projection, residual when the shape allows); ``width`` scales the channels.

Any input size that is a multiple of 32 works (the stride is 32); 128 and 224 are typical.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["ConvBNAct", "BasicBlock", "InvertedResidual", "ResNetBackbone", "MobileBackbone", "make_backbone",
           "ARCHITECTURES"]

ARCHITECTURES = ("mobile", "resnet")


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + optional activation (ReLU6 for mobile blocks, ReLU otherwise)."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: str | None = "relu"):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act == "relu":
            layers.append(nn.ReLU(inplace=True))
        elif act == "relu6":
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with a (projected when needed) identity shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = ConvBNAct(cin, cout, 3, stride)
        self.conv2 = ConvBNAct(cout, cout, 3, 1, act=None)
        self.short = None if (stride == 1 and cin == cout) else ConvBNAct(cin, cout, 1, stride, act=None)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        s = x if self.short is None else self.short(x)
        return self.act(self.conv2(self.conv1(x)) + s)


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hid = cin * expand
        layers = []
        if expand != 1:
            layers.append(ConvBNAct(cin, hid, 1, act="relu6"))
        layers += [ConvBNAct(hid, hid, 3, stride, groups=hid, act="relu6"), ConvBNAct(hid, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNetBackbone(nn.Module):
    """ResNet-style backbone: stem (3x3 stride-2 conv + 3x3 conv + max-pool, stride 4), four stages
    of basic blocks (strides 1, 2, 2, 2), global average pooling.

    Args:
        widths: channels of the four stages (default (32, 64, 128, 256)).
        depths: blocks per stage (default (1, 1, 1, 1): a ResNet-10).

    ``forward(x (B, 3, S, S)) -> (B, widths[-1])``; :attr:`out_features` = ``widths[-1]``.
    """

    def __init__(self, widths=(32, 64, 128, 256), depths=(1, 1, 1, 1)):
        super().__init__()
        if len(widths) != 4 or len(depths) != 4:
            raise ValueError(f"widths, depths: expected 4 stages each, got {widths!r}, {depths!r}")
        w0 = widths[0]
        self.stem = nn.Sequential(ConvBNAct(3, w0, 3, 2), ConvBNAct(w0, w0, 3, 1), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], w0
        for i, (w, d) in enumerate(zip(widths, depths)):
            blocks = []
            for j in range(int(d)):
                blocks.append(BasicBlock(cin, int(w), 2 if (j == 0 and i > 0) else 1))
                cin = int(w)
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_features = cin
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x)).mean((2, 3))


# (expansion t, channels c, repeats n, first stride s), MobileNetV2's table with fewer blocks
_MOBILE_CFG = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 3, 2), (4, 96, 2, 1), (4, 160, 2, 2))


class MobileBackbone(nn.Module):
    """MobileNetV2-style backbone: stem (3x3 stride-2 conv), inverted residual stages (total stride
    32), a 1x1 conv to ``last`` channels, global average pooling.

    Args:
        width: channel multiplier (default 1.0; channels rounded to multiples of 8).
        last: channels of the final 1x1 conv (the feature size).

    ``forward(x (B, 3, S, S)) -> (B, last)``.
    """

    def __init__(self, width: float = 1.0, last: int = 384):
        super().__init__()
        if not width > 0:
            raise ValueError(f"width: expected > 0, got {width!r}")

        def ch(c):
            return max(8, int(round(c * width / 8)) * 8)

        cin = ch(24)
        layers = [ConvBNAct(3, cin, 3, 2, act="relu6")]
        for t, c, n, s in _MOBILE_CFG:
            for j in range(n):
                layers.append(InvertedResidual(cin, ch(c), s if j == 0 else 1, t))
                cin = ch(c)
        layers.append(ConvBNAct(cin, int(last), 1, act="relu6"))
        self.features = nn.Sequential(*layers)
        self.out_features = int(last)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).mean((2, 3))


def make_backbone(arch: str, **kwargs) -> nn.Module:
    """``"mobile"`` -> :class:`MobileBackbone`, ``"resnet"`` -> :class:`ResNetBackbone` (kwargs passed on)."""
    if arch == "mobile":
        return MobileBackbone(**kwargs)
    if arch == "resnet":
        return ResNetBackbone(**kwargs)
    raise ValueError(f"arch: expected one of {ARCHITECTURES}, got {arch!r}")


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """An inference copy of ``module`` with every BatchNorm2d that follows a Conv2d inside an
    ``nn.Sequential`` folded into that convolution (eval-time statistics: ``W' = W * g / sqrt(v + eps)``,
    ``b' = (b - m) * g / sqrt(v + eps) + beta``), the BatchNorm replaced by ``nn.Identity``.

    The copy is in eval mode, does not share parameters with ``module`` and computes the same
    function as ``module.eval()`` (up to float rounding); it is meant for inference only.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    out = copy.deepcopy(module).eval()
    for seq in out.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names[:-1], names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    for p in out.parameters():
        p.requires_grad_(False)
    return out


__all__.append("fuse_conv_bn")


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__.append("count_parameters")

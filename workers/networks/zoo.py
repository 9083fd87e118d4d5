"""Reference architectures written in plain torch (torchvision and timm do not import beside
the pinned CPU torch): what the upload path is tested and benchmarked on, and a starting point
for users. Layouts follow the papers; ``width`` scales every channel count.

- :func:`resnet18`: basic blocks [2, 2, 2, 2]; ``stem="cifar"`` (3x3 conv, stride 1) or
  ``"imagenet"`` (7x7 stride 2 + 3x3 max-pool).
- :func:`mobilenet_v2`: inverted residuals with ReLU6, the (t, c, n, s) table of the paper.
- :func:`efficientnet_b0`: MBConv blocks with squeeze-and-excitation and SiLU (B0's table).
- :class:`ConcatNet`: a small model with a custom ``forward`` (a concat and a residual add).
- :class:`TinyViT`: patch embedding + transformer encoder blocks (layer norm, attention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _c(channels: float) -> int:
    return max(8, int(round(channels / 8)) * 8)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int, width: float = 1.0, stem: str = "cifar") -> None:
        super().__init__()
        widths = [_c(64 * width), _c(128 * width), _c(256 * width), _c(512 * width)]
        if stem == "cifar":
            self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        out: torch.Tensor = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return out


def resnet18(num_classes: int = 10, width: float = 1.0, stem: str = "cifar") -> ResNet18:
    return ResNet18(num_classes, width, stem)


def _conv_bn(
    cin: int, cout: int, k: int, stride: int, groups: int, act: type[nn.Module] | None
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1, 1, 1, nn.ReLU6))
        layers += [
            _conv_bn(hidden, hidden, 3, stride, hidden, nn.ReLU6),
            _conv_bn(hidden, cout, 1, 1, 1, None),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return x + out if self.residual else out


_MBV2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
         (6, 160, 3, 2), (6, 320, 1, 1)]  # fmt: skip


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, width: float = 1.0, first_stride: int = 1) -> None:
        super().__init__()
        cin = _c(32 * width)
        blocks: list[nn.Module] = [_conv_bn(3, cin, 3, first_stride, 1, nn.ReLU6)]
        for t, c, n, s in _MBV2:
            cout = _c(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = _c(1280 * max(1.0, width))
        blocks.append(_conv_bn(cin, last, 1, 1, 1, nn.ReLU6))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        out: torch.Tensor = self.classifier(x)
        return out


def mobilenet_v2(num_classes: int = 10, width: float = 1.0, first_stride: int = 1) -> MobileNetV2:
    """``first_stride`` 1 keeps resolution at 32x32 inputs (CIFAR use); 2 is the paper's."""
    return MobileNetV2(num_classes, width, first_stride)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = torch.sigmoid(self.expand(F.silu(self.reduce(s))))
        return x * s


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand_conv = _conv_bn(cin, hidden, 1, 1, 1, nn.SiLU) if expand != 1 else None
        self.dw = _conv_bn(hidden, hidden, k, stride, hidden, nn.SiLU)
        self.se = SqueezeExcite(hidden, max(1, cin // 4))
        self.project = _conv_bn(hidden, cout, 1, 1, 1, None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x if self.expand_conv is None else self.expand_conv(x)
        out = self.project(self.se(self.dw(out)))
        return x + out if self.residual else out


_B0 = [
    (1, 3, 16, 1, 1),
    (6, 3, 24, 2, 2),
    (6, 5, 40, 2, 2),
    (6, 3, 80, 3, 2),
    (6, 5, 112, 3, 1),
    (6, 5, 192, 4, 2),
    (6, 3, 320, 1, 1),
]  # fmt: skip  (expand, kernel, channels, n, stride)


class EfficientNetB0(nn.Module):
    def __init__(self, num_classes: int, width: float = 1.0, first_stride: int = 1) -> None:
        super().__init__()
        cin = _c(32 * width)
        self.stem = _conv_bn(3, cin, 3, first_stride, 1, nn.SiLU)
        stages = []
        for t, k, c, n, s in _B0:
            cout = _c(c * width)
            blocks = []
            for i in range(n):
                blocks.append(MBConv(cin, cout, k, s if i == 0 else 1, t))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        last = _c(1280 * max(1.0, width))
        self.head = _conv_bn(cin, last, 1, 1, 1, nn.SiLU)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        out: torch.Tensor = self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return out


def efficientnet_b0(
    num_classes: int = 10, width: float = 1.0, first_stride: int = 1
) -> EfficientNetB0:
    return EfficientNetB0(num_classes, width, first_stride)


class ConcatNet(nn.Module):
    """Two branches concatenated, a residual add around a block, a custom ``forward``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.a = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.a_bn = nn.BatchNorm2d(16)
        self.b = nn.Conv2d(in_channels, 16, 5, padding=2, bias=False)
        self.b_bn = nn.BatchNorm2d(16)
        self.mix = nn.Conv2d(32, 32, 3, stride=2, padding=1, bias=False)
        self.mix_bn = nn.BatchNorm2d(32)
        self.res = nn.Conv2d(32, 32, 3, padding=1, bias=False)
        self.res_bn = nn.BatchNorm2d(32)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.a_bn(self.a(x)))
        b = F.hardswish(self.b_bn(self.b(x)))
        y = F.relu(self.mix_bn(self.mix(torch.cat([a, b], dim=1))))
        y = F.relu(y + self.res_bn(self.res(y)))
        out: torch.Tensor = self.head(y.mean(dim=(2, 3)))
        return out


class TinyViT(nn.Module):
    """A small vision transformer (patches, attention, MLP, layer norm): not taken yet."""

    def __init__(self, num_classes: int = 10, dim: int = 64, depth: int = 2, patch: int = 4):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        layer = nn.TransformerEncoderLayer(dim, 4, dim * 2, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        out: torch.Tensor = self.head(self.norm(self.encoder(tokens)).mean(dim=1))
        return out


def export_pt2(model: nn.Module, shape: tuple[int, ...], batch: int | None = None) -> bytes:
    """``model`` saved as a user uploads it: ``torch.export`` with a dynamic batch (or, with
    ``batch``, a static one of that size), then ``torch.export.save``."""
    import io

    dynamic = {"dynamic_shapes": {"x": {0: torch.export.Dim("batch")}}} if batch is None else {}
    ep = torch.export.export(model.eval(), (torch.zeros(batch or 2, *shape),), **dynamic)  # type: ignore[arg-type]
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()

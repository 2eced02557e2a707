"""ResNet backbones (He et al., 2016) with torchvision-compatible parameter names.

No torchvision CPU build exists on every platform metapose targets, so the network is written here,
layer for layer as ``torchvision.models.resnet`` (v1.5: stride on the 3x3 convolution of the
bottleneck). A torchvision ImageNet state dict loads into :class:`ResNet` unchanged apart from its
``fc.*`` classifier, which a pose backbone does not have.
"""

from __future__ import annotations

from torch import Tensor, nn

from metapose.config import RESNET_DEPTHS, RESNET_STAGE_HALVINGS, RESNET_STEM_HALVINGS


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# depth -> (block, blocks per stage), as in the ResNet paper's Table 1.
# The depths a config may name are config.RESNET_DEPTHS, in this order.
ARCHITECTURES: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = (
    dict(
        zip(
            RESNET_DEPTHS,
            (
                (BasicBlock, (2, 2, 2, 2)),
                (BasicBlock, (3, 4, 6, 3)),
                (Bottleneck, (3, 4, 6, 3)),
                (Bottleneck, (3, 4, 23, 3)),
                (Bottleneck, (3, 8, 36, 3)),
            ),
            strict=True,
        )
    )
)

STEM_STRIDE = 2**RESNET_STEM_HALVINGS  # conv1 (stride 2) then max-pool (stride 2)
STAGE_PLANES = (64, 128, 256, 512)


class ResNet(nn.Module):
    """ResNet without its classifier: ``(B, 3, H, W)`` -> ``(B, out_channels, H/32, W/32)``."""

    def __init__(self, depth: int):
        super().__init__()
        if depth not in ARCHITECTURES:
            raise ValueError(f"ResNet depth must be one of {sorted(ARCHITECTURES)}, got {depth}")
        block, layers = ARCHITECTURES[depth]
        self.depth = depth
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, STAGE_PLANES[0], layers[0], stride=1)
        self.layer2 = self._make_layer(block, STAGE_PLANES[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, STAGE_PLANES[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, STAGE_PLANES[3], layers[3], stride=2)
        self.out_channels = STAGE_PLANES[3] * block.expansion
        self.stride = STEM_STRIDE * 2**RESNET_STAGE_HALVINGS
        self.reset_parameters()

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers: list[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def reset_parameters(self) -> None:
        """torchvision's initialisation: He-normal (fan-out) convolutions, unit BatchNorm."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

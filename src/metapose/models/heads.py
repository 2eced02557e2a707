"""SimpleBaseline's head (Xiao, Wu & Wei, ECCV 2018): upsamplings, then 1x1 heatmaps.

Each upsampling doubles the resolution: a stride-2 transposed convolution (no bias) + BatchNorm
+ ReLU, or, ``separable``, a depthwise stride-2 transposed convolution + BatchNorm + ReLU and a
1x1 convolution + BatchNorm + ReLU (the mobile variant of Ultralight-SimplePose). With no
upsamplings the heatmap layer reads the backbone's features directly (Lite-HRNet). Module
indices inside ``deconv_layers`` follow the original release (``deconv_layers.{0,1,2}`` per
dense upsampling), so its weights load by name.
"""

from __future__ import annotations

from torch import nn

HEAD_INIT_STD = 0.001  # SimpleBaseline's normal init of the deconvolutions and final layer


def deconv_padding(kernel: int) -> tuple[int, int]:
    """Padding and output padding that make a stride-2 transposed convolution exactly double."""
    return {4: (1, 0), 3: (1, 1), 2: (0, 0)}[kernel]


def deconv_layers(
    in_channels: int, channels: tuple[int, ...], kernel: int, *, separable: bool = False
) -> nn.Sequential:
    """The upsampling stack: ``(B, in_channels, h, w)`` -> ``(B, channels[-1], h * 2**n, ...)``."""
    padding, output_padding = deconv_padding(kernel)
    layers: list[nn.Module] = []
    for out_channels in channels:
        groups = in_channels if separable else 1
        up_channels = in_channels if separable else out_channels
        layers += [
            nn.ConvTranspose2d(
                in_channels,
                up_channels,
                kernel_size=kernel,
                stride=2,
                padding=padding,
                output_padding=output_padding,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(up_channels),
            nn.ReLU(inplace=True),
        ]
        if separable:
            layers += [
                nn.Conv2d(up_channels, out_channels, kernel_size=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
        in_channels = out_channels
    return nn.Sequential(*layers)


def reset_head(deconvs: nn.Sequential, final_layer: nn.Conv2d) -> None:
    """SimpleBaseline's initialisation: N(0, 0.001) convolutions, unit BatchNorm, zero bias."""
    for m in deconvs.modules():
        if isinstance(m, nn.ConvTranspose2d | nn.Conv2d):
            nn.init.normal_(m.weight, std=HEAD_INIT_STD)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.normal_(final_layer.weight, std=HEAD_INIT_STD)
    if final_layer.bias is not None:
        nn.init.zeros_(final_layer.bias)

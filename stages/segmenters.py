"""Dural-sac segmenters, selectable by name: U-Net, Attention U-Net, MultiResUNet, and the
Inception dual-output U-Net (a second, auxiliary mask from the bottleneck).

Each returns logits (N, 1, H, W); the dual-output net returns (main, auxiliary) while training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SegmenterConfig:
    architecture: str = "unet"  # unet | attention_unet | multires_unet | inception_unet
    base_width: int = 16
    depth: int = 4  # number of down-sampling steps
    out_channels: int = 1  # 1: the dural sac (sigmoid); more: classes (softmax), as the level locator
    #: "batch", or "group": GroupNorm in groups of four channels, which keeps no running statistics
    #: of training batches (half of them random-contrast renders) to misfit the images in use.
    norm: str = "batch"


def norm_layer(kind: str, channels: int) -> nn.Module:
    """BatchNorm, or GroupNorm with four channels per group where the width allows."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, max(1, channels // 4)), channels)
    raise ValueError(f"unknown norm {kind!r} (batch or group)")


def _conv_norm(cin: int, cout: int, k: int = 3, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), norm_layer(norm, cout),
                         nn.ReLU(inplace=True))


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str = "batch"):
        super().__init__(_conv_norm(cin, cout, norm=norm), _conv_norm(cout, cout, norm=norm))


class MultiResBlock(nn.Module):
    """MultiResUNet block: a chain of 3x3 convs approximating 3x3, 5x5 and 7x7, plus a 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, norm: str = "batch"):
        super().__init__()
        c1, c2 = cout // 6, cout // 3
        c3 = cout - c1 - c2
        conv = partial(_conv_norm, norm=norm)
        self.a, self.b, self.c = conv(cin, c1), conv(c1, c2), conv(c2, c3)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), norm_layer(norm, cout))

    def forward(self, x):
        a = self.a(x)
        b = self.b(a)
        c = self.c(b)
        return F.relu(torch.cat([a, b, c], 1) + self.shortcut(x))


class ResPath(nn.Module):
    """MultiResUNet skip path: residual convs that narrow the encoder-decoder semantic gap."""

    def __init__(self, channels: int, length: int, norm: str = "batch"):
        super().__init__()
        self.convs = nn.ModuleList(_conv_norm(channels, channels, norm=norm) for _ in range(length))
        self.shortcuts = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(length))

    def forward(self, x):
        for conv, shortcut in zip(self.convs, self.shortcuts):
            x = F.relu(conv(x) + shortcut(x))
        return x


class InceptionBlock(nn.Module):
    """Parallel 1x1, 3x3 and dilated 3x3 branches (a 5x5 field), concatenated."""

    def __init__(self, cin: int, cout: int, norm: str = "batch"):
        super().__init__()
        c = cout // 3
        self.b1 = _conv_norm(cin, c, 1, norm)
        self.b3 = _conv_norm(cin, c, 3, norm)
        self.b5 = nn.Sequential(nn.Conv2d(cin, cout - 2 * c, 3, padding=2, dilation=2, bias=False),
                                norm_layer(norm, cout - 2 * c), nn.ReLU(inplace=True))
        self.merge = _conv_norm(cout, cout, norm=norm)

    def forward(self, x):
        return self.merge(torch.cat([self.b1(x), self.b3(x), self.b5(x)], 1))


class AttentionGate(nn.Module):
    """Additive attention (Oktay et al. 2018): the decoder's signal weighs the skip features."""

    def __init__(self, skip: int, gate: int, inner: int):
        super().__init__()
        self.w_skip = nn.Conv2d(skip, inner, 1)
        self.w_gate = nn.Conv2d(gate, inner, 1)
        self.psi = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(inner, 1, 1), nn.Sigmoid())

    def forward(self, skip, gate):
        return skip * self.psi(self.w_skip(skip) + self.w_gate(gate))


_BLOCKS = {"unet": DoubleConv, "attention_unet": DoubleConv, "multires_unet": MultiResBlock,
           "inception_unet": InceptionBlock}
ARCHITECTURES = tuple(_BLOCKS)


class Segmenter(nn.Module):
    """An encoder-decoder whose block, skip path and outputs depend on the architecture."""

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        if config.architecture not in _BLOCKS:
            raise ValueError(f"unknown segmenter {config.architecture!r}; choose from {', '.join(ARCHITECTURES)}")
        self.config = config
        block = partial(_BLOCKS[config.architecture], norm=config.norm)
        widths = [config.base_width * 2**i for i in range(config.depth + 1)]
        self.down = nn.ModuleList()
        cin = 1
        for w in widths:
            self.down.append(block(cin, w))
            cin = w
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                for i in reversed(range(config.depth)))
        self.decode = nn.ModuleList(block(2 * widths[i], widths[i]) for i in reversed(range(config.depth)))
        if config.architecture == "attention_unet":
            self.gates = nn.ModuleList(AttentionGate(widths[i], widths[i], max(widths[i] // 2, 4))
                                       for i in reversed(range(config.depth)))
        if config.architecture == "multires_unet":
            self.paths = nn.ModuleList(ResPath(widths[i], config.depth - i, config.norm)
                                       for i in reversed(range(config.depth)))
        self.head = nn.Conv2d(widths[0], config.out_channels, 1)
        if config.architecture == "inception_unet":
            self.aux_head = nn.Conv2d(widths[-1], config.out_channels, 1)

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        bottleneck = x
        for k, (up, decode) in enumerate(zip(self.up, self.decode)):
            x = up(x)
            skip = skips[-2 - k]
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            if self.config.architecture == "attention_unet":
                skip = self.gates[k](skip, x)
            elif self.config.architecture == "multires_unet":
                skip = self.paths[k](skip)
            x = decode(torch.cat([skip, x], 1))
        logits = self.head(x)
        if self.config.architecture == "inception_unet" and self.training:
            aux = F.interpolate(self.aux_head(bottleneck), size=size, mode="bilinear", align_corners=False)
            return logits, aux
        return logits

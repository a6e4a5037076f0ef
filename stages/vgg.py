"""The paper's VGG classifier: 10 conv layers, 4 max-pools, global average pool, 1 FC layer."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

#: conv layers per block; a max-pool follows each block: 2+2+3+3 = 10 convs, 4 pools.
BLOCKS = (2, 2, 3, 3)


@dataclass(frozen=True)
class VGGConfig:
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)  # channels per block (VGG's)
    num_outputs: int = 4  # 1 for the binary level head (BCE), 4 for Schizas grades
    batch_norm: bool = True  # not in the 2014 VGG; makes training from scratch stable
    dropout: float = 0.3


class VGGClassifier(nn.Module):
    def __init__(self, config: VGGConfig):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for width, n_convs in zip(config.widths, BLOCKS):
            for _ in range(n_convs):
                layers.append(nn.Conv2d(channels, width, 3, padding=1, bias=not config.batch_norm))
                if config.batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU(inplace=True))
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(channels, config.num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(self.features(x)).flatten(1)))

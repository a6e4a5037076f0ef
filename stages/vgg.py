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
    # "slice": the patch keeps the slice's percentile scaling; "patch": each patch is rescaled by
    # its own percentiles first, so what the model reads is the sac against its surroundings,
    # not how bright the canal came out in a field of view full of other things.
    input_norm: str = "slice"
    input_percentiles: tuple[float, float] = (1.0, 99.0)


def patch_normalise(x: torch.Tensor, percentiles: tuple[float, float], clip: float = 1.5) -> torch.Tensor:
    """Each sample (B, C, H, W) scaled so its low and high percentiles become 0 and 1 (order
    statistics by ``kthvalue``: a quarter of ``torch.quantile``'s time on a batch of patches)."""
    flat = x.reshape(len(x), -1)
    n = flat.shape[1]
    low, high = (flat.kthvalue(min(n, max(1, round(p / 100 * n))), dim=1).values.view(-1, 1, 1, 1)
                 for p in percentiles)
    return ((x - low) / (high - low).clamp(min=1e-6)).clamp(0, clip)


class VGGClassifier(nn.Module):
    def __init__(self, config: VGGConfig):
        super().__init__()
        if config.input_norm not in ("slice", "patch"):
            raise ValueError(f"unknown input_norm {config.input_norm!r}")
        self.config = config
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
        if self.config.input_norm == "patch":
            x = patch_normalise(x, self.config.input_percentiles)
        return self.fc(self.dropout(self.pool(self.features(x)).flatten(1)))

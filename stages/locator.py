"""The sagittal level locator at inference: per-pixel probabilities of vertebral body, disc,
sacrum and background on sagittal slices, back on each slice's own grid. Naming the levels
from them needs the slices' geometry and lives in ``grading``."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stages.configs import LocatorConfig
from stages.detector import input_scale, resample


@torch.no_grad()
def column_probabilities(model: nn.Module, config: LocatorConfig, images: list[np.ndarray],
                         spacings: list[tuple[float, float]], device: str | torch.device | None = None
                         ) -> list[np.ndarray]:
    """(classes, rows, columns) probabilities for each normalised sagittal slice (display frame;
    ``device`` None: the model's own)."""
    model.eval()
    device = device or next(model.parameters()).device
    out = []
    for image, spacing in zip(images, spacings):
        small = resample(np.asarray(image, np.float32), input_scale(image.shape, spacing, config))
        rows, cols = small.shape
        pad = (-rows % 16, -cols % 16)  # the U-Net halves the grid four times
        x = F.pad(torch.from_numpy(small)[None, None], (0, pad[1], 0, pad[0])).to(device)
        probs = torch.softmax(model(x)[..., :rows, :cols].float(), dim=1)
        probs = F.interpolate(probs, size=image.shape, mode="bilinear", align_corners=False)[0]
        out.append(probs.cpu().numpy())
    return out

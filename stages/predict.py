"""Batched inference on patches: level / grade probabilities and sac probability maps."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _batched(model: nn.Module, patches: np.ndarray, batch_size: int, device) -> list[torch.Tensor]:
    """Runs under the caller's grad mode and autocast (see stages.inference.predict_slices);
    ``device`` None means the model's own."""
    model.eval()
    device = device or next(model.parameters()).device
    outputs = []
    for start in range(0, len(patches), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(patches[start:start + batch_size], np.float32))[:, None].to(device)
        out = model(x)
        outputs.append((out[0] if isinstance(out, tuple) else out).float().cpu())
    return outputs


@torch.no_grad()
def classify(model: nn.Module, patches: np.ndarray, batch_size: int = 64, device=None) -> np.ndarray:
    """Class probabilities (N, C). A one-logit binary head gives [P(class 0), P(class 1)]."""
    if len(patches) == 0:
        return np.zeros((0, 2), np.float32)
    logits = torch.cat(_batched(model, patches, batch_size, device))
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], 1).numpy()
    return torch.softmax(logits, 1).numpy()


@torch.no_grad()
def segment(model: nn.Module, patches: np.ndarray, batch_size: int = 32, device=None) -> np.ndarray:
    """Sac probability maps (N, P, P)."""
    if len(patches) == 0:
        return np.zeros((0, 0, 0), np.float32)
    return torch.sigmoid(torch.cat(_batched(model, patches, batch_size, device))[:, 0]).numpy()


def mask_area(probabilities: np.ndarray, pixel_area_mm2: float | np.ndarray) -> np.ndarray:
    """Sac area (mm²): pixels with probability >= 0.5 times the patch pixel area (SPEC's DSCA).

    Summing probabilities instead would add the small background probabilities of thousands of
    pixels: on phantoms that overstated areas by ~30% while Dice was already 0.97.
    """
    return (probabilities >= 0.5).reshape(len(probabilities), -1).sum(1) * np.asarray(pixel_area_mm2)


def box_iou(a, b) -> float:
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0

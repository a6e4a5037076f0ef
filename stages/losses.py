"""Segmentation losses: weighted BCE (positive 20 : negative 1, the DSCA paper), Dice, focal, BCE+Dice."""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("weighted_bce", "dice", "focal", "bce_dice")


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 20.0) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(pos_weight))


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    prob = torch.sigmoid(logits)
    dims = tuple(range(1, logits.ndim))
    intersection = (prob * target).sum(dims)
    return (1 - (2 * intersection + eps) / (prob.sum(dims) + target.sum(dims) + eps)).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 0.75) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)
    weight = alpha * target + (1 - alpha) * (1 - target)
    return (weight * (1 - p_t) ** gamma * bce).mean()


def segmentation_loss(name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if name == "weighted_bce":
        return weighted_bce(logits, target)
    if name == "dice":
        return soft_dice_loss(logits, target)
    if name == "focal":
        return focal_loss(logits, target)
    if name == "bce_dice":
        return F.binary_cross_entropy_with_logits(logits, target) + soft_dice_loss(logits, target)
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")

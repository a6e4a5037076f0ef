"""Stand-in models for tests that need known outputs, not trained weights."""
from __future__ import annotations

import torch


class FixedBoxes(torch.nn.Module):
    """A 'detector' that returns the same boxes (x0, y0, x1, y1, detector pixels) and scores for
    every image, as torchvision's detectors return them."""

    def __init__(self, boxes: list[tuple[float, float, float, float]], scores: list[float]):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a parameter, so the model has a device
        self.boxes, self.scores = torch.tensor(boxes), torch.tensor(scores)

    def forward(self, images):
        return [{"boxes": self.boxes, "scores": self.scores} for _ in images]

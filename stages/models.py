"""Build each stage's network from its config (no weights: see bundle.py)."""
from __future__ import annotations

import torch

from stages.configs import STAGES, StageConfigs
from stages.detector import build_detector
from stages.segmenters import Segmenter
from stages.vgg import VGGClassifier


def build_model(stage: str, configs: StageConfigs, backbone_weights=None) -> torch.nn.Module:
    if stage == "detector":
        return build_detector(configs.detector, backbone_weights)
    if stage in ("level", "grade"):
        return VGGClassifier(getattr(configs, stage))
    if stage == "segmenter":
        return Segmenter(configs.segmenter)
    if stage == "locator":
        return Segmenter(configs.locator.network)
    raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")

"""Canal detector: torchvision Faster R-CNN with a ResNet50-FPN backbone, two classes.

Built from the same parts as ``torchvision.models.detection.fasterrcnn_resnet50_fpn`` (which it
equals with default settings), so that local ImageNet backbone weights get the same frozen
BatchNorm and trainable layers. Nothing is ever downloaded. Slices are resized so their longer
side is ``input_size`` and replicated to three channels; boxes come back in slice pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import misc as misc_nn_ops

LABELS = ("background", "canal")


@dataclass(frozen=True)
class DetectorConfig:
    input_size: int = 160
    #: One canal per slice, 10-40 px at the input size: anchors from 16 px, few proposals.
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)
    rpn_pre_nms_top_n_train: int = 300
    rpn_post_nms_top_n_train: int = 100
    rpn_pre_nms_top_n_test: int = 200
    rpn_post_nms_top_n_test: int = 20
    rpn_batch_size_per_image: int = 64
    box_batch_size_per_image: int = 32
    box_detections_per_img: int = 1
    box_score_thresh: float = 0.05
    pretrained_backbone: bool = False  # frozen BatchNorm and 3 trainable layers, as torchvision does
    trainable_backbone_layers: int = 5

    def torchvision_defaults(self) -> "DetectorConfig":
        """torchvision's own detection settings (for side-by-side speed comparisons)."""
        return DetectorConfig(input_size=self.input_size, anchor_sizes=(32, 64, 128, 256, 512),
                              rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=2000,
                              rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000,
                              rpn_batch_size_per_image=256, box_batch_size_per_image=512,
                              box_detections_per_img=100, pretrained_backbone=self.pretrained_backbone,
                              trainable_backbone_layers=self.trainable_backbone_layers)


def load_backbone_weights(path: Path | str) -> dict[str, torch.Tensor]:
    """ImageNet ResNet50 weights from a local file (safetensors, or a tensors-only torch file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: backbone weights not found (they are never downloaded)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def build_detector(config: DetectorConfig, backbone_weights: Path | str | None = None) -> FasterRCNN:
    pretrained = config.pretrained_backbone or backbone_weights is not None
    norm_layer = misc_nn_ops.FrozenBatchNorm2d if pretrained else torch.nn.BatchNorm2d
    body = resnet50(weights=None, norm_layer=norm_layer)
    if backbone_weights is not None:
        state = {k: v for k, v in load_backbone_weights(backbone_weights).items() if not k.startswith("fc.")}
        missing, unexpected = body.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith("fc.")]:
            raise ValueError(f"{backbone_weights}: not ResNet50 weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
    trainable = min(config.trainable_backbone_layers, 3) if pretrained else config.trainable_backbone_layers
    backbone = _resnet_fpn_extractor(body, trainable)
    anchors = AnchorGenerator(tuple((s,) for s in config.anchor_sizes), ((0.5, 1.0, 2.0),) * len(config.anchor_sizes))
    return FasterRCNN(
        backbone,
        num_classes=len(LABELS),
        min_size=config.input_size,
        max_size=config.input_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=config.rpn_batch_size_per_image,
        box_batch_size_per_image=config.box_batch_size_per_image,
        box_detections_per_img=config.box_detections_per_img,
        box_score_thresh=config.box_score_thresh,
    )


def detector_input(image: np.ndarray, input_size: int) -> tuple[np.ndarray, float]:
    """The slice resized so its longer side is ``input_size``; returns it and the scale used."""
    rows, cols = image.shape
    scale = input_size / max(rows, cols)
    if scale == 1.0:
        return np.ascontiguousarray(image, np.float32), 1.0
    size = (max(1, round(rows * scale)), max(1, round(cols * scale)))
    tensor = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None]
    resized = F.interpolate(tensor, size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized[0, 0].numpy(), scale


def to_model_input(image: np.ndarray) -> torch.Tensor:
    """(H, W) grey -> (3, H, W): ResNet expects three channels."""
    return torch.from_numpy(np.ascontiguousarray(image, np.float32))[None].expand(3, -1, -1)


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # slice pixels
    score: float


def set_detection_limits(model: FasterRCNN, rpn_pre_nms_top_n: int | None = None,
                         rpn_post_nms_top_n: int | None = None, detections_per_img: int | None = None) -> None:
    """Change the test-time proposal and detection counts of a built detector (None keeps them)."""
    if rpn_pre_nms_top_n is not None:
        model.rpn._pre_nms_top_n["testing"] = rpn_pre_nms_top_n
    if rpn_post_nms_top_n is not None:
        model.rpn._post_nms_top_n["testing"] = rpn_post_nms_top_n
    if detections_per_img is not None:
        model.roi_heads.detections_per_img = detections_per_img


@torch.no_grad()
def detect(model: FasterRCNN, images: list[np.ndarray], input_size: int, batch_size: int = 8,
           device: str | torch.device | None = None) -> list[Detection | None]:
    """The top-scoring canal box of each slice, or None where the detector found none
    (``device`` None: the model's own)."""
    model.eval()
    device = device or next(model.parameters()).device
    results: list[Detection | None] = []
    for start in range(0, len(images), batch_size):
        chunk = [detector_input(img, input_size) for img in images[start:start + batch_size]]
        outputs = model([to_model_input(img).to(device) for img, _ in chunk])
        for (_, scale), out in zip(chunk, outputs):
            if len(out["boxes"]) == 0:
                results.append(None)
                continue
            best = int(torch.argmax(out["scores"]))
            box = (out["boxes"][best].float().cpu().numpy() / scale).tolist()
            results.append(Detection(tuple(float(v) for v in box), float(out["scores"][best])))
    return results

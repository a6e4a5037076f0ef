"""Canal detector: torchvision Faster R-CNN with a ResNet50-FPN backbone, two classes.

Built from the same parts as ``torchvision.models.detection.fasterrcnn_resnet50_fpn`` (which it
equals with default settings), so that local ImageNet backbone weights get the same frozen
BatchNorm and trainable layers. Nothing is ever downloaded.

Slices reach it at a fixed pixel size in millimetres (``pixel_mm``), not a fixed matrix: a
canal is then always about the same number of pixels, whether the field of view is 200 mm of
lumbar spine or 450 mm of abdomen. Larger fields are shrunk to ``max_side``. The model's own
transform only normalises and batches (it never resizes), and training uses square crops of
``train_crop`` pixels, so a step costs the same whatever the slice. Boxes come back in slice
pixels. ``fpn_channels`` and ``representation_size`` default to torchvision's (256, 1024); the
CPU profiles halve the cost of the pyramid and box head with 128 and 256.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

LABELS = ("background", "canal")


@dataclass(frozen=True)
class DetectorConfig:
    pixel_mm: float = 1.4  # slices are resampled to this pixel size
    max_side: int = 288  # ... unless that makes them larger than this (then coarser)
    train_crop: int = 160  # square training crops (pixels at pixel_mm)
    fpn_channels: int = 256
    representation_size: int = 1024
    #: One canal per slice, ~10-25 px at 1.4 mm: anchors from 16 px, few proposals.
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
    #: Normalisation of a backbone trained from scratch: "batch" (torchvision's) or "group" (32
    #: groups, as He et al. 2019 train detectors from scratch): it keeps no running statistics of
    #: training batches, which mix scanner-like slices with random-contrast renders and so fit
    #: neither kind of slice in use. Ignored with ImageNet weights (frozen BatchNorm).
    backbone_norm: str = "batch"

    def torchvision_defaults(self) -> "DetectorConfig":
        """torchvision's own detection settings (for side-by-side speed comparisons)."""
        return DetectorConfig(pixel_mm=self.pixel_mm, max_side=self.max_side, train_crop=self.train_crop,
                              fpn_channels=256, representation_size=1024, anchor_sizes=(32, 64, 128, 256, 512),
                              rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=2000,
                              rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000,
                              rpn_batch_size_per_image=256, box_batch_size_per_image=512,
                              box_detections_per_img=100, pretrained_backbone=self.pretrained_backbone,
                              trainable_backbone_layers=self.trainable_backbone_layers,
                              backbone_norm=self.backbone_norm)


class FixedScaleTransform(GeneralizedRCNNTransform):
    """torchvision's transform without the resize: inputs already arrive at the model's scale."""

    def resize(self, image, target=None):
        return image, target


def load_backbone_weights(path: Path | str) -> dict[str, torch.Tensor]:
    """ImageNet ResNet50 weights from a local file (safetensors, or a tensors-only torch file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: backbone weights not found (they are never downloaded)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _fpn_backbone(body: torch.nn.Module, trainable_layers: int, out_channels: int) -> BackboneWithFPN:
    """torchvision's ResNet-FPN extractor with a choice of pyramid width."""
    layers = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        layers.append("bn1")
    for name, parameter in body.named_parameters():
        if all(not name.startswith(layer) for layer in layers):
            parameter.requires_grad_(False)
    return_layers = {f"layer{k}": str(v) for v, k in enumerate((1, 2, 3, 4))}
    in_channels = [256, 512, 1024, 2048]
    return BackboneWithFPN(body, return_layers, in_channels, out_channels, extra_blocks=LastLevelMaxPool())


def _norm_layer(config: DetectorConfig, pretrained: bool):
    if pretrained:
        return misc_nn_ops.FrozenBatchNorm2d  # ImageNet statistics, as torchvision does
    if config.backbone_norm == "batch":
        return torch.nn.BatchNorm2d
    if config.backbone_norm == "group":
        return partial(torch.nn.GroupNorm, 32)
    raise ValueError(f"unknown detector backbone_norm {config.backbone_norm!r} (batch or group)")


def build_detector(config: DetectorConfig, backbone_weights: Path | str | None = None) -> FasterRCNN:
    pretrained = config.pretrained_backbone or backbone_weights is not None
    norm_layer = _norm_layer(config, pretrained)
    body = resnet50(weights=None, norm_layer=norm_layer)
    if backbone_weights is not None:
        state = {k: v for k, v in load_backbone_weights(backbone_weights).items() if not k.startswith("fc.")}
        missing, unexpected = body.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith("fc.")]:
            raise ValueError(f"{backbone_weights}: not ResNet50 weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
    trainable = min(config.trainable_backbone_layers, 3) if pretrained else config.trainable_backbone_layers
    backbone = _fpn_backbone(body, trainable, config.fpn_channels)
    anchors = AnchorGenerator(tuple((s,) for s in config.anchor_sizes), ((0.5, 1.0, 2.0),) * len(config.anchor_sizes))
    model = FasterRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(config.fpn_channels * 7 * 7, config.representation_size),
        box_predictor=FastRCNNPredictor(config.representation_size, len(LABELS)),
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=config.rpn_batch_size_per_image,
        box_batch_size_per_image=config.box_batch_size_per_image,
        box_detections_per_img=config.box_detections_per_img,
        box_score_thresh=config.box_score_thresh,
    )
    model.transform = FixedScaleTransform(min_size=1, max_size=1, image_mean=[0.485, 0.456, 0.406],
                                          image_std=[0.229, 0.224, 0.225])
    return model


def input_scale(shape: tuple[int, int], spacing: tuple[float, float], config: DetectorConfig) -> tuple[float, float]:
    """(row, column) scale from slice pixels to detector pixels: ``pixel_mm`` per pixel, unless
    that would exceed ``max_side``."""
    rows, cols = shape
    scale_r, scale_c = spacing[0] / config.pixel_mm, spacing[1] / config.pixel_mm
    shrink = min(1.0, config.max_side / max(rows * scale_r, cols * scale_c))
    return scale_r * shrink, scale_c * shrink


def resample(image: np.ndarray, scale: tuple[float, float], mode: str = "bilinear") -> np.ndarray:
    """``image`` resized by (row, column) factors; ``mode`` 'nearest' for label maps."""
    rows, cols = image.shape
    size = (max(1, round(rows * scale[0])), max(1, round(cols * scale[1])))
    if size == (rows, cols):
        return np.ascontiguousarray(image)
    tensor = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None]
    if mode == "nearest":
        out = F.interpolate(tensor, size=size, mode="nearest-exact")
        return out[0, 0].numpy().astype(image.dtype)
    return F.interpolate(tensor, size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0].numpy()


def detector_input(image: np.ndarray, spacing: tuple[float, float], config: DetectorConfig
                   ) -> tuple[np.ndarray, tuple[float, float]]:
    """The slice at the detector's pixel size, and the (row, column) scale used."""
    scale = input_scale(image.shape, spacing, config)
    return resample(np.asarray(image, np.float32), scale), scale


def scale_box(box, scale: tuple[float, float]) -> tuple[float, float, float, float]:
    """A box (x0, y0, x1, y1) multiplied by the (row, column) scale."""
    x0, y0, x1, y1 = box
    return (x0 * scale[1], y0 * scale[0], x1 * scale[1], y1 * scale[0])


def to_model_input(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W) grey -> (3, H, W): ResNet expects three channels."""
    tensor = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(image, np.float32))
    return tensor[None].expand(3, -1, -1)


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


MIDLINE_BAND = 0.2  # the canal's centre lies within this fraction of the body's width of its middle
SKIN_DEPTH_MM = 15.0  # ... and deeper than this under the skin (back muscles and fat are thicker, even when thin)
#: ... and at least this far in front of the skin of the back. Skin to ligamentum flavum is 25-80 mm
#: in adults and the canal's centre lies ~7 mm further in; a box on the back's skin or fat lay 5-17 mm
#: from it on a thin volunteer. In phantoms the nearest canal was 27 mm from it (20 patients), except
#: where the field of view cuts the back off at the canal (1 of 410 demo-cohort slices lost).
BACK_DEPTH_MM = 25.0


def body_silhouette(image: np.ndarray) -> np.ndarray:
    """The patient's cross-section on a normalised slice: tissue brighter than a tenth of the
    99th percentile, holes filled (CSF, fat or bowel that read dark on some sequence are inside
    it), the largest piece only (arms, coil and table parts are not)."""
    tissue = image > 0.1 * float(np.percentile(image, 99))
    pieces, n = ndimage.label(ndimage.binary_fill_holes(ndimage.binary_closing(tissue, iterations=2)))
    if n == 0:
        return tissue
    largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(pieces), pieces, range(1, n + 1))))
    return pieces == largest


def body_midline(silhouette: np.ndarray) -> tuple[float, float] | None:
    """(middle column, width) of the patient's cross-section; None when it is empty."""
    columns = np.nonzero(silhouette.mean(0) > 0.05)[0]
    if len(columns) < 2:
        return None
    left, right = np.percentile(columns, [2, 98])
    return float(left + right) / 2, float(right - left)


def depth_behind(silhouette: np.ndarray, x: np.ndarray, y: np.ndarray, row_mm: float) -> np.ndarray:
    """Millimetres from each point (x, y) straight back to the skin of the back (display frame:
    posterior is down the rows; the bottom of the field of view counts as skin)."""
    rows = np.arange(silhouette.shape[0])[:, None]
    outside_below = ~silhouette[:, x] & (rows >= y[None, :])
    first = np.where(outside_below.any(0), outside_below.argmax(0), silhouette.shape[0])
    return (first - y) * row_mm


def _plausible(boxes: np.ndarray, image: np.ndarray, spacing: tuple[float, float], band: float) -> np.ndarray:
    """Which boxes (x0, y0, x1, y1) could be the canal: centre well inside the patient (``SKIN_DEPTH_MM``;
    the edge of the field of view counts as skin), well in front of the back (``BACK_DEPTH_MM``) and
    near the body's left-right middle. The canal always is; the air behind the back, the skin and
    fat of the back, bowel or a kidney, which a detector trained on phantoms may box on an
    unfamiliar scanner, are not."""
    silhouette = body_silhouette(image)
    midline = body_midline(silhouette)
    if midline is None:
        return np.ones(len(boxes), bool)
    middle, width = midline
    depth_mm = ndimage.distance_transform_edt(np.pad(silhouette, 1), sampling=spacing)[1:-1, 1:-1]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    rows = np.clip(cy.astype(int), 0, image.shape[0] - 1)
    cols = np.clip(cx.astype(int), 0, image.shape[1] - 1)
    return ((np.abs(cx - middle) <= band * width) & (depth_mm[rows, cols] >= SKIN_DEPTH_MM)
            & (depth_behind(silhouette, cols, rows, spacing[0]) >= BACK_DEPTH_MM))


@torch.no_grad()
def detect_candidates(model: FasterRCNN, images: list[np.ndarray], spacings: list[tuple[float, float]],
                      config: DetectorConfig, batch_size: int = 8, device: str | torch.device | None = None,
                      midline_band: float | None = MIDLINE_BAND) -> list[list[Detection]]:
    """Every slice's plausible canal boxes, best first: deep inside the body and near its midline
    (``midline_band`` None: anywhere), as many as the model's detection limit allows (``device``
    None: the model's own). Slices of one size are batched together."""
    model.eval()
    device = device or next(model.parameters()).device
    prepared = [detector_input(img, sp, config) for img, sp in zip(images, spacings)]
    results: list[list[Detection]] = [[] for _ in images]
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, (img, _) in enumerate(prepared):
        by_shape.setdefault(img.shape, []).append(i)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            outputs = model([to_model_input(prepared[i][0]).to(device) for i in chunk])
            for i, out in zip(chunk, outputs):
                boxes, scores = out["boxes"].float().cpu().numpy(), out["scores"].float().cpu().numpy()
                image, scale = prepared[i]
                if midline_band is not None and len(boxes):
                    keep = _plausible(boxes, image, (spacings[i][0] / scale[0], spacings[i][1] / scale[1]),
                                      midline_band)
                    boxes, scores = boxes[keep], scores[keep]
                results[i] = [Detection(tuple(float(v) for v in scale_box(boxes[k], (1 / scale[0], 1 / scale[1]))),
                                        float(scores[k])) for k in np.argsort(-scores, kind="stable")]
    return results


def detect(model: FasterRCNN, images: list[np.ndarray], spacings: list[tuple[float, float]], config: DetectorConfig,
           batch_size: int = 8, device: str | torch.device | None = None,
           midline_band: float | None = MIDLINE_BAND) -> list[Detection | None]:
    """The top-scoring plausible canal box of each slice, or None where the detector found none."""
    found = detect_candidates(model, images, spacings, config, batch_size, device, midline_band)
    return [boxes[0] if boxes else None for boxes in found]


#: Thresholds a detector's validation may suggest, and what a wrong box costs against a right one kept.
THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(1, 11))  # 0.05 ... 0.5
WRONG_BOX_COST = 2.0


def operating_threshold(scores, ious, grid: tuple[float, ...] = THRESHOLD_GRID,
                        wrong_cost: float = WRONG_BOX_COST) -> float:
    """A threshold for the detector from its validation slices' top boxes (score, IoU with the
    true box): the value of ``grid`` that keeps the most right boxes (IoU >= 0.5) less
    ``wrong_cost`` times the wrong ones, the highest among equals.

    Suggested to the user, not applied: a detector trained briefly from scratch can end
    unsure of its own right boxes (grade-demo's with seed 1 scored its right boxes 0.46-0.48,
    so grade-study's 0.5 found no canal), but lowering the threshold for every such detector
    cost more wrong boxes than it gained right ones on held-out phantoms (docs/STAGES_BENCHMARK.md,
    "Stop 29"). A detector sure of its right boxes gets 0.5, the highest value here."""
    s, right = np.asarray(scores, float), np.asarray(ious, float) >= 0.5
    if not len(s):
        return max(grid)

    def gain(t: float) -> float:
        kept = s >= t
        return float(np.sum(kept & right) - wrong_cost * np.sum(kept & ~right))
    return max(grid, key=lambda t: (gain(t), t))


def box_iou(a, b) -> float:
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0

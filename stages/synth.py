"""Randomised contrast from label maps (SynthSeg-style domain randomisation), batched in torch.

Each sample gets its own image from its label map: every label's mean intensity drawn
independently (SynthSeg: U(0, 250) before normalisation, here U(0, 1)), a within-label spread
with smooth texture, random blobs of unrelated intensity (distractors), blur and down/up-sampling
(thick slices, low resolution), a multiplicative bias field, gamma, Gaussian noise and,
sometimes, inversion of the foreground. A model trained on such images cannot rely on any one
contrast, so it has to learn shape and context: what transfers to scanners it has never seen.

Works on whole batches (B, H, W) so a batch of 32 patches costs a few milliseconds, not the
~70 ms per patch of a per-sample library transform (cornucopia 0.5.1's SynthFromLabelTransform,
measured on this project's two cores). ``contrast_pairs`` keeps chosen label pairs apart (for
example CSF and rootlets, whose contrast is the Schizas grade) so randomisation never makes a
label unlearnable. Label values are whatever the label maps use; nothing here knows anatomy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

MAX_LABELS = 256


@dataclass(frozen=True)
class SynthConfig:
    probability: float = 0.5  # share of training samples rendered from their label map
    texture: tuple[float, float] = (0.0, 0.15)  # within-label spread, fraction of the range
    distractors: tuple[int, int] = (0, 4)  # random blobs per image
    blur_px: tuple[float, float] = (0.0, 1.2)
    downsample: tuple[float, float] = (1.0, 2.5)  # along one random axis: thick-slice / low-res look
    bias: float = 0.35  # SD of the log bias field
    gamma_sd: float = 0.4  # gamma = exp(N(0, sd))
    noise: tuple[float, float] = (0.0, 0.06)
    invert_probability: float = 0.15
    contrast_pairs: tuple[tuple[int, int], ...] = ()  # label pairs kept at least min_contrast apart
    min_contrast: float = 0.25
    # Share of label-mapped samples (rendered or stored) whose ``unresolved_labels`` region is
    # replaced by its own local mean: what a coarse series shows of structures below its resolution.
    unresolved_probability: float = 0.0
    unresolved_labels: tuple[int, ...] = ()
    unresolved_sigma_px: tuple[float, float] = (1.5, 4.0)


def _smooth_noise(batch: int, shape: tuple[int, int], cells: int, generator: torch.Generator | None) -> torch.Tensor:
    """Smooth random fields (B, H, W), unit-ish SD: a coarse grid of normals, upsampled."""
    coarse = torch.randn(batch, 1, cells, cells, generator=generator)
    return F.interpolate(coarse, size=shape, mode="bicubic", align_corners=False)[:, 0]


def _uniform(batch: int, low: float, high: float, generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(batch, generator=generator)


def _separate(lut: torch.Tensor, pairs: tuple[tuple[int, int], ...], gap: float) -> torch.Tensor:
    """Push each pair's intensities apart (keeping their order) until they differ by ``gap``."""
    for a, b in pairs:
        diff = lut[:, b] - lut[:, a]
        close = diff.abs() < gap
        sign = torch.where(diff >= 0, 1.0, -1.0)
        middle = ((lut[:, a] + lut[:, b]) / 2).clamp(gap / 2, 1 - gap / 2)
        lut[:, a] = torch.where(close, middle - sign * gap / 2, lut[:, a])
        lut[:, b] = torch.where(close, middle + sign * gap / 2, lut[:, b])
    return lut


def _distractors(images: torch.Tensor, count: tuple[int, int], generator) -> torch.Tensor:
    batch, rows, cols = images.shape
    y = torch.linspace(-1, 1, rows).view(1, rows, 1)
    x = torch.linspace(-1, 1, cols).view(1, 1, cols)
    n = int(torch.randint(count[0], count[1] + 1, (1,), generator=generator))
    for _ in range(n):
        cy, cx = (torch.rand(2, batch, 1, 1, generator=generator) * 2 - 1)
        ry, rx = 0.03 + 0.15 * torch.rand(2, batch, 1, 1, generator=generator)
        value = torch.rand(batch, 1, 1, generator=generator)
        blob = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
        images = torch.where(blob, value, images)
    return images


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W), edges replicated."""
    batch, rows, cols = images.shape
    radius = max(1, int(round(2.5 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    k = (k / k.sum()).view(1, 1, -1)
    flat = images.reshape(batch * rows, 1, cols)
    flat = F.conv1d(F.pad(flat, (radius, radius), mode="replicate"), k)
    images = flat.reshape(batch, rows, cols).transpose(1, 2).reshape(batch * cols, 1, rows)
    images = F.conv1d(F.pad(images, (radius, radius), mode="replicate"), k)
    return images.reshape(batch, cols, rows).transpose(1, 2)


def unresolve(images: torch.Tensor, labels: torch.Tensor, region_labels: tuple[int, ...], sigma: float) -> torch.Tensor:
    """Inside the region (e.g. CSF and rootlets: the sac), each pixel becomes the region's own
    local mean over ``sigma`` pixels; outside, the image is untouched. A sparse rootlet bundle in
    CSF becomes a bright sac with at most a faint mottle, a packed one stays grey: the Schizas
    contrast that survives a series too coarse to show single rootlets. The region's edges stay
    sharp, so nothing else about the slice changes."""
    region = torch.isin(labels, torch.tensor(region_labels, dtype=labels.dtype)).float()
    local = _gaussian_blur(images * region, sigma) / _gaussian_blur(region, sigma).clamp(min=1e-3)
    return torch.where(region > 0, local, images)


def unresolve_share(images: torch.Tensor, labels: torch.Tensor, cfg: SynthConfig,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """``unresolve`` on a random share (``cfg.unresolved_probability``) of the batch."""
    if cfg.unresolved_probability <= 0 or not cfg.unresolved_labels:
        return images
    chosen = torch.nonzero(torch.rand(len(images), generator=generator) < cfg.unresolved_probability)[:, 0]
    if len(chosen):
        sigma = float(_uniform(1, *cfg.unresolved_sigma_px, generator))
        images = images.clone()
        images[chosen] = unresolve(images[chosen], labels[chosen], cfg.unresolved_labels, sigma)
    return images


def _degrade_resolution(images: torch.Tensor, cfg: SynthConfig, generator) -> torch.Tensor:
    batch, rows, cols = images.shape
    factor = float(_uniform(1, *cfg.downsample, generator))
    if factor > 1.05:
        along_rows = bool(torch.rand(1, generator=generator) < 0.5)
        small = (max(2, round(rows / factor)), cols) if along_rows else (rows, max(2, round(cols / factor)))
        images = F.interpolate(images[:, None], size=small, mode="area")
        images = F.interpolate(images, size=(rows, cols), mode="bilinear", align_corners=False)[:, 0]
    sigma = float(_uniform(1, *cfg.blur_px, generator))
    if sigma > 0.2:
        images = _gaussian_blur(images, sigma)
    return images


def render_random(labels: torch.Tensor, cfg: SynthConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images (B, H, W) in [0, 1] from integer label maps (B, H, W); label 0 is the air around
    the body and stays near black (a real MR background), unless it too is drawn."""
    labels = labels.long().clamp(0, MAX_LABELS - 1)
    batch, rows, cols = labels.shape
    lut = torch.rand(batch, MAX_LABELS, generator=generator)
    lut[:, 0] = 0.05 * torch.rand(batch, generator=generator)
    if cfg.contrast_pairs:
        lut = _separate(lut, cfg.contrast_pairs, cfg.min_contrast)
    means = torch.gather(lut, 1, labels.view(batch, -1)).view(batch, rows, cols)
    spread = torch.rand(batch, MAX_LABELS, generator=generator) * (cfg.texture[1] - cfg.texture[0]) + cfg.texture[0]
    spread = torch.gather(spread, 1, labels.view(batch, -1)).view(batch, rows, cols)
    images = means + spread * (0.6 * _smooth_noise(batch, (rows, cols), max(4, rows // 6), generator)
                               + 0.4 * torch.randn(batch, rows, cols, generator=generator))
    if cfg.distractors[1] > 0:
        images = _distractors(images, cfg.distractors, generator)
    images = _degrade_resolution(images, cfg, generator)
    images = images * torch.exp(cfg.bias * _smooth_noise(batch, (rows, cols), 4, generator))
    images = images.clamp(min=0)
    low = images.flatten(1).amin(1).view(batch, 1, 1)
    high = images.flatten(1).amax(1).view(batch, 1, 1)
    images = (images - low) / (high - low).clamp(min=1e-6)
    gamma = torch.exp(cfg.gamma_sd * torch.randn(batch, 1, 1, generator=generator))
    images = images.clamp(min=1e-6) ** gamma
    invert = (torch.rand(batch, 1, 1, generator=generator) < cfg.invert_probability) & (labels > 0)
    images = torch.where(invert, 1 - images, images)
    sd = _uniform(batch, *cfg.noise, generator).view(batch, 1, 1)
    images = images + sd * torch.randn(batch, rows, cols, generator=generator)
    return images.clamp(0, 1)

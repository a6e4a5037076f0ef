"""Square patches around the canal box, with the exact mapping back to image pixels and mm."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PatchGeometry:
    """Patch pixel (i, j) covers image x in [x0 + j*step, x0 + (j+1)*step), same for y with i."""

    x0: float
    y0: float
    step: float  # image pixels per patch pixel (same along rows and columns)
    size: int

    def to_image(self, col: np.ndarray | float, row: np.ndarray | float) -> tuple:
        """Image pixel coordinates (x, y) of patch coordinates (edges, not centres)."""
        return self.x0 + np.asarray(col) * self.step, self.y0 + np.asarray(row) * self.step

    def pixel_area_mm2(self, spacing: tuple[float, float]) -> float:
        return self.step * spacing[0] * self.step * spacing[1]

    def box_in_patch(self, box) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = box
        return ((x0 - self.x0) / self.step, (y0 - self.y0) / self.step,
                (x1 - self.x0) / self.step, (y1 - self.y0) / self.step)


def patch_geometry(box, size: int, margin: float) -> PatchGeometry:
    """A square around the box centre, ``1 + 2*margin`` times the box's longer side."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0, 4.0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return PatchGeometry(cx - side / 2, cy - side / 2, side / size, size)


def extract_patches(image: np.ndarray, geometries: list[PatchGeometry], mode: str = "bilinear") -> np.ndarray:
    """Resample ``image`` (rows, cols) into each geometry's square; outside the image is 0.

    One ``grid_sample`` call for all boxes of a slice: exact sub-pixel placement, no rounding.
    """
    if not geometries:
        return np.zeros((0, 0, 0), np.float32)
    rows, cols = image.shape
    size = geometries[0].size
    centres = (torch.arange(size, dtype=torch.float32) + 0.5)
    grids = []
    for g in geometries:
        x = g.x0 + centres * g.step - 0.5  # image pixel centre coordinates
        y = g.y0 + centres * g.step - 0.5
        gx = (x + 0.5) / cols * 2 - 1  # align_corners=False normalisation
        gy = (y + 0.5) / rows * 2 - 1
        grids.append(torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1))
    source = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    source = source.expand(len(geometries), 1, rows, cols)
    out = F.grid_sample(source, torch.stack(grids), mode=mode, padding_mode="zeros", align_corners=False)
    return out[:, 0].numpy()


def paste_patch(patch: np.ndarray, geometry: PatchGeometry, shape: tuple[int, int]) -> np.ndarray:
    """Resample a patch map (e.g. sac probability) back onto the slice grid; 0 outside the patch."""
    rows, cols = shape
    out = np.zeros(shape, np.float32)
    x_end, y_end = geometry.x0 + geometry.size * geometry.step, geometry.y0 + geometry.size * geometry.step
    c0, c1 = max(0, int(np.floor(geometry.x0))), min(cols, int(np.ceil(x_end)) + 1)
    r0, r1 = max(0, int(np.floor(geometry.y0))), min(rows, int(np.ceil(y_end)) + 1)
    if c0 >= c1 or r0 >= r1:
        return out
    x = torch.arange(c0, c1, dtype=torch.float32)
    y = torch.arange(r0, r1, dtype=torch.float32)
    gx = (x + 0.5 - geometry.x0) / (geometry.size * geometry.step) * 2 - 1
    gy = (y + 0.5 - geometry.y0) / (geometry.size * geometry.step) * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
    source = torch.from_numpy(np.ascontiguousarray(patch, np.float32))[None, None]
    out[r0:r1, c0:c1] = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0].numpy()
    return out

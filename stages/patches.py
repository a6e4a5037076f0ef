"""Square patches around the canal box (square in millimetres, whatever the pixel spacing),
with the exact mapping back to image pixels and mm."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PatchGeometry:
    """Patch pixel (i, j) covers image x in [x0 + j*step_x, x0 + (j+1)*step_x) and y in
    [y0 + i*step_y, y0 + (i+1)*step_y) (pixel-edge coordinates)."""

    x0: float
    y0: float
    step_x: float  # image pixels per patch pixel along columns
    step_y: float  # ... along rows
    size: int

    def to_image(self, col: np.ndarray | float, row: np.ndarray | float) -> tuple:
        """Image pixel coordinates (x, y) of patch coordinates (edges, not centres)."""
        return self.x0 + np.asarray(col) * self.step_x, self.y0 + np.asarray(row) * self.step_y

    def pixel_area_mm2(self, spacing: tuple[float, float]) -> float:
        return self.step_y * spacing[0] * self.step_x * spacing[1]

    def box_in_patch(self, box) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = box
        return ((x0 - self.x0) / self.step_x, (y0 - self.y0) / self.step_y,
                (x1 - self.x0) / self.step_x, (y1 - self.y0) / self.step_y)

    def widened(self, pad: int) -> "PatchGeometry":
        """The same sampling, ``pad`` patch pixels larger on every side."""
        return PatchGeometry(self.x0 - pad * self.step_x, self.y0 - pad * self.step_y, self.step_x, self.step_y,
                             self.size + 2 * pad)


def patch_geometry(box, size: int, margin: float, spacing: tuple[float, float] = (1.0, 1.0)) -> PatchGeometry:
    """A square (in mm) around the box centre, ``1 + 2*margin`` times the box's longer side."""
    x0, y0, x1, y1 = (float(v) for v in box)
    row_mm, col_mm = spacing
    side = max((x1 - x0) * col_mm, (y1 - y0) * row_mm, 4.0 * min(spacing)) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return PatchGeometry(cx - side / col_mm / 2, cy - side / row_mm / 2, side / col_mm / size, side / row_mm / size,
                         size)


def _grid(g: PatchGeometry, rows: int, cols: int) -> torch.Tensor:
    centres = torch.arange(g.size, dtype=torch.float32) + 0.5
    x = g.x0 + centres * g.step_x  # image coordinates of patch pixel centres (edge convention)
    y = g.y0 + centres * g.step_y
    gx = x / cols * 2 - 1  # align_corners=False normalisation
    gy = y / rows * 2 - 1
    return torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)


def extract_patches(image: np.ndarray, geometries: list[PatchGeometry], mode: str = "bilinear") -> np.ndarray:
    """Resample ``image`` (rows, cols) into each geometry's square; outside the image is 0.

    One ``grid_sample`` call for all boxes of a slice: exact sub-pixel placement, no rounding.
    """
    if not geometries:
        return np.zeros((0, 0, 0), np.float32)
    rows, cols = image.shape
    source = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    source = source.expand(len(geometries), 1, rows, cols)
    grids = torch.stack([_grid(g, rows, cols) for g in geometries])
    out = F.grid_sample(source, grids, mode=mode, padding_mode="zeros", align_corners=False)
    return out[:, 0].numpy()


def paste_patch(patch: np.ndarray, geometry: PatchGeometry, shape: tuple[int, int]) -> np.ndarray:
    """Resample a patch map (e.g. sac probability) back onto the slice grid; 0 outside the patch."""
    rows, cols = shape
    out = np.zeros(shape, np.float32)
    width, height = geometry.size * geometry.step_x, geometry.size * geometry.step_y
    c0, c1 = max(0, int(np.floor(geometry.x0))), min(cols, int(np.ceil(geometry.x0 + width)) + 1)
    r0, r1 = max(0, int(np.floor(geometry.y0))), min(rows, int(np.ceil(geometry.y0 + height)) + 1)
    if c0 >= c1 or r0 >= r1:
        return out
    x = torch.arange(c0, c1, dtype=torch.float32)
    y = torch.arange(r0, r1, dtype=torch.float32)
    gx = (x + 0.5 - geometry.x0) / width * 2 - 1
    gy = (y + 0.5 - geometry.y0) / height * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
    source = torch.from_numpy(np.ascontiguousarray(patch, np.float32))[None, None]
    out[r0:r1, c0:c1] = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0].numpy()
    return out

"""Lossless reorientation between a slice as stored and the display frame the models see.

A stored slice may be upside down, mirrored or transposed relative to the usual display
(axial: anterior up, the patient's right on the image's left). Every model is trained and run
in the display frame; :class:`DisplayTransform` takes images there and brings boxes and masks
back, exactly: flips and a transpose only, no resampling.

Boxes are (x0, y0, x1, y1) in pixel-edge coordinates: the image spans [0, columns] x [0, rows]
and pixel (r, c) covers [c, c + 1) x [r, r + 1), as torchvision's boxes do.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DisplayTransform:
    transpose: bool = False  # applied first: stored rows become display columns
    flip_rows: bool = False  # then: display rows reversed
    flip_cols: bool = False  # display columns reversed

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Stored -> display."""
        out = image.T if self.transpose else image
        if self.flip_rows:
            out = out[::-1, :]
        if self.flip_cols:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def invert(self, image: np.ndarray) -> np.ndarray:
        """Display -> stored."""
        out = image
        if self.flip_cols:
            out = out[:, ::-1]
        if self.flip_rows:
            out = out[::-1, :]
        return np.ascontiguousarray(out.T if self.transpose else out)

    def display_shape(self, stored_shape: tuple[int, int]) -> tuple[int, int]:
        return (stored_shape[1], stored_shape[0]) if self.transpose else tuple(stored_shape)

    def spacing(self, stored_spacing: tuple[float, float]) -> tuple[float, float]:
        """(row, column) spacing in the display frame."""
        return (stored_spacing[1], stored_spacing[0]) if self.transpose else tuple(stored_spacing)

    def indices_to_stored(self, rows: np.ndarray, cols: np.ndarray, stored_shape: tuple[int, int]
                          ) -> tuple[np.ndarray, np.ndarray]:
        """Stored (row, column) indices of display-frame pixel indices."""
        display_rows, display_cols = self.display_shape(stored_shape)
        rows = display_rows - 1 - np.asarray(rows) if self.flip_rows else np.asarray(rows)
        cols = display_cols - 1 - np.asarray(cols) if self.flip_cols else np.asarray(cols)
        return (cols, rows) if self.transpose else (rows, cols)

    def indices_to_display(self, rows: np.ndarray, cols: np.ndarray, stored_shape: tuple[int, int]
                           ) -> tuple[np.ndarray, np.ndarray]:
        """Display-frame (row, column) indices of stored pixel indices (the inverse of the above)."""
        rows, cols = (np.asarray(cols), np.asarray(rows)) if self.transpose else (np.asarray(rows), np.asarray(cols))
        display_rows, display_cols = self.display_shape(stored_shape)
        return (display_rows - 1 - rows if self.flip_rows else rows, display_cols - 1 - cols if self.flip_cols else cols)

    def box_to_display(self, box, stored_shape: tuple[int, int]) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = box
        if self.transpose:
            x0, y0, x1, y1 = y0, x0, y1, x1
        rows, cols = self.display_shape(stored_shape)
        if self.flip_rows:
            y0, y1 = rows - y1, rows - y0
        if self.flip_cols:
            x0, x1 = cols - x1, cols - x0
        return (float(x0), float(y0), float(x1), float(y1))

    def box_to_stored(self, box, stored_shape: tuple[int, int]) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = box
        rows, cols = self.display_shape(stored_shape)
        if self.flip_cols:
            x0, x1 = cols - x1, cols - x0
        if self.flip_rows:
            y0, y1 = rows - y1, rows - y0
        if self.transpose:
            x0, y0, x1, y1 = y0, x0, y1, x1
        return (float(x0), float(y0), float(x1), float(y1))

    def points_to_display(self, points, stored_shape: tuple[int, int]) -> np.ndarray:
        """(N, 2) pixel-edge (x, y) points, stored -> display (polygon outlines)."""
        xy = np.asarray(points, float).reshape(-1, 2)
        x, y = (xy[:, 1], xy[:, 0]) if self.transpose else (xy[:, 0], xy[:, 1])
        rows, cols = self.display_shape(stored_shape)
        return np.stack([cols - x if self.flip_cols else x, rows - y if self.flip_rows else y], axis=1)

    def points_to_stored(self, points, stored_shape: tuple[int, int]) -> np.ndarray:
        """(N, 2) pixel-edge (x, y) points, display -> stored."""
        xy = np.asarray(points, float).reshape(-1, 2)
        rows, cols = self.display_shape(stored_shape)
        x = cols - xy[:, 0] if self.flip_cols else xy[:, 0]
        y = rows - xy[:, 1] if self.flip_rows else xy[:, 1]
        return np.stack([y, x] if self.transpose else [x, y], axis=1)


IDENTITY = DisplayTransform()

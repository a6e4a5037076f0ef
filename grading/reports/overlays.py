"""Per-slice overlay PNGs: the whole slice with the canal box, and a zoom with the sac outline."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from matplotlib import font_manager
from PIL import Image, ImageDraw, ImageFont

from stages.atomic import write_atomic

PANEL = 320
GRADE_COLOURS = {"A": (80, 200, 120), "B": (250, 210, 60), "C": (250, 140, 40), "D": (230, 60, 60)}


@lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont:
    """DejaVu Sans from matplotlib's own files: it has the '²' that PIL's built-in font lacks."""
    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 13)


def _grey(image: np.ndarray) -> np.ndarray:
    high = float(np.percentile(image, 99.5)) or 1.0
    return (np.clip(image / high, 0, 1) * 255).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def render_overlay(image: np.ndarray, box, mask: np.ndarray | None, caption: list[str], grade: str) -> Image.Image:
    grey = _grey(image)
    rows, cols = grey.shape
    whole_scale = PANEL / max(rows, cols)
    whole = Image.fromarray(grey).resize((round(cols * whole_scale), round(rows * whole_scale)), Image.BILINEAR)
    canvas = Image.new("RGB", (2 * PANEL + 10, PANEL + 18 * len(caption) + 12), (0, 0, 0))
    canvas.paste(whole.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(canvas)
    colour = GRADE_COLOURS.get(grade, (120, 170, 255))
    if box is not None:
        x0, y0, x1, y1 = box
        draw.rectangle([x0 * whole_scale, y0 * whole_scale, x1 * whole_scale, y1 * whole_scale], outline=colour, width=2)
        side = 2.6 * max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        c0, r0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        c1, r1 = int(min(cols, cx + side / 2)), int(min(rows, cy + side / 2))
        zoom = PANEL / max(c1 - c0, r1 - r0)
        size = (max(1, round((c1 - c0) * zoom)), max(1, round((r1 - r0) * zoom)))
        crop = Image.fromarray(grey[r0:r1, c0:c1]).resize(size, Image.BICUBIC).convert("RGB")
        if mask is not None and mask.any():
            big = np.asarray(Image.fromarray(mask[r0:r1, c0:c1].astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
            pixels = np.asarray(crop).copy()
            pixels[_outline(big)] = (255, 60, 60)
            crop = Image.fromarray(pixels)
        canvas.paste(crop, (PANEL + 10, 0))
        draw.rectangle([PANEL + 10 + (x0 - c0) * zoom, (y0 - r0) * zoom, PANEL + 10 + (x1 - c0) * zoom,
                        (y1 - r0) * zoom], outline=colour, width=1)
    for k, line in enumerate(caption):
        draw.text((6, PANEL + 4 + 18 * k), line, fill=(235, 235, 235), font=_font())
    return canvas


def write_overlay(path: Path, *args, **kwargs) -> Path:
    """zlib level 1: a fifth of the default level's time for files ~10% larger."""
    picture = render_overlay(*args, **kwargs)
    return write_atomic(path, lambda tmp: picture.save(tmp, format="PNG", compress_level=1))

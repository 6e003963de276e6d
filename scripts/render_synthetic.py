"""Renders synthetic B-scans as a PNG grid: one row per scan, image | label overlay.

Usage::

    python scripts/render_synthetic.py --out docs/images/synthetic_samples.png --n 6 --seed 0
"""

from __future__ import annotations

import argparse
import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from octseg.data.synthetic import CLASS_NAMES, generate_bscan
from octseg.utils.config import repo_root
from octseg.utils.io import atomic_write_bytes

log = logging.getLogger("render_synthetic")

# Fixed RGB colour per label 0..9 (vitreous transparent-black .. fluid cyan).
LABEL_COLOURS = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [245, 130, 48],
        [255, 225, 25],
        [60, 180, 75],
        [0, 130, 200],
        [145, 30, 180],
        [240, 50, 230],
        [128, 128, 0],
        [70, 240, 240],
    ],
    dtype=np.float32,
)
LEGEND_HEIGHT = 22


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blends the label colours over the grey image (vitreous left uncoloured).

    Args:
        image: uint8 ``[H, W]``.
        labels: integer ``[H, W]`` in 0..9.
        alpha: colour opacity.

    Returns:
        uint8 RGB ``[H, W, 3]``.
    """
    grey = np.repeat(image[..., None].astype(np.float32), 3, axis=2)
    colour = LABEL_COLOURS[labels]
    weight = np.where(labels[..., None] == 0, 0.0, alpha)
    return np.clip((1 - weight) * grey + weight * colour, 0, 255).astype(np.uint8)


def legend(width: int) -> np.ndarray:
    """A strip naming each label's colour."""
    strip = Image.new("RGB", (width, LEGEND_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    x = 4
    for name, colour in zip(CLASS_NAMES, LABEL_COLOURS.astype(int), strict=True):
        draw.rectangle([x, 5, x + 11, 16], fill=tuple(colour), outline=(0, 0, 0))
        draw.text((x + 15, 5), name, fill=(0, 0, 0))
        x += 20 + int(draw.textlength(name))
    return np.asarray(strip)


def render_grid(
    n: int, seed: int, height: int, width: int, fluid_probability: float, scale: float = 1.0
) -> Image.Image:
    """Stacks ``n`` scans (indices 0..n-1 of ``seed``) as rows of image | overlay, each row
    resized by ``scale``, with a colour legend at the bottom."""
    rows = []
    for index in range(n):
        image, labels = generate_bscan(seed, index, height, width, fluid_probability)
        pair = np.concatenate(
            [
                np.repeat(image[..., None], 3, axis=2),
                np.full((height, 4, 3), 255, np.uint8),
                overlay(image, labels),
            ],  # fmt: skip
            axis=1,
        )
        if scale != 1.0:
            row = Image.fromarray(pair)
            size = (round(row.width * scale), round(row.height * scale))
            pair = np.asarray(row.resize(size, Image.Resampling.LANCZOS))
        rows += [pair, np.full((4, pair.shape[1], 3), 255, np.uint8)]
    grid = np.concatenate(rows + [legend(rows[0].shape[1])], axis=0)
    return Image.fromarray(grid)


def to_palette(grid: Image.Image) -> Image.Image:
    """256-colour version (a third of the RGB file size, little visible loss): a median-cut
    palette of the grid plus the exact label colours, so the legend stays true."""
    n_fixed = len(LABEL_COLOURS) + 2  # label colours, black, white
    adaptive = grid.quantize(256 - n_fixed, method=Image.Quantize.MEDIANCUT).getpalette()
    fixed = LABEL_COLOURS.astype(int).ravel().tolist() + [0, 0, 0, 255, 255, 255]
    palette = Image.new("P", (1, 1))
    palette.putpalette(adaptive[: 3 * (256 - n_fixed)] + fixed)
    return grid.quantize(palette=palette, dither=Image.Dither.NONE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = repo_root() / "docs" / "images" / "synthetic_samples.png"
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--n", type=int, default=6, help="number of scans (rows)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=496)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--fluid-probability", type=float, default=0.6)
    parser.add_argument("--scale", type=float, default=0.5, help="resize factor of the PNG")
    parser.add_argument("--no-palette", dest="palette", action="store_false",
                        help="save full RGB instead of a 256-colour palette")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    grid = render_grid(
        args.n, args.seed, args.height, args.width, args.fluid_probability, args.scale
    )
    if args.palette:
        grid = to_palette(grid)
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG", optimize=True)
    atomic_write_bytes(args.out, buffer.getvalue())
    log.info("Wrote %s (%d x %d, %.0f KB)", args.out, grid.width, grid.height,
             len(buffer.getvalue()) / 1024)  # fmt: skip


if __name__ == "__main__":
    main()

"""Pictures: image grids (more to come: schedules, forward process, denoising animations)."""
from __future__ import annotations

import os

import numpy as np


def image_grid(images, ncols=None, pad=2):
    """Tile (N, 28, 28[, 1]) images in [0, 1] into one 2-D array with ``pad`` pixels between."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"image_grid: expected images of shape (N, H, W) or (N, H, W, 1), "
                         f"received {images.shape}")
    n, h, w = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad), np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = img
    return grid


def save_grid(images, path, ncols=None, scale=2):
    """Save images in [0, 1] as one PNG grid (each pixel enlarged ``scale`` times)."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    grid = image_grid(images, ncols)
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    plt.imsave(path, np.clip(grid, 0, 1), cmap="gray", vmin=0, vmax=1)
    return path

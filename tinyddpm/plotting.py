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


ENLARGE_UP_TO = 4_000_000  # pixels: a larger grid (thousands of images) is saved unenlarged


def save_grid(images, path, ncols=None, scale=2):
    """Save images in [0, 1] as one grid picture (each pixel enlarged ``scale`` times, unless
    the grid has more than ENLARGE_UP_TO pixels), of the type the suffix of ``path`` names (.png
    by default), written atomically. The grey levels are 8-bit: a grid of 100,000 images takes
    about 0.4 GB on the way, not the tens of GB of a float RGBA picture."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ._files import atomic_write

    grid = image_grid(images, ncols)
    if grid.size * scale ** 2 > ENLARGE_UP_TO:
        scale = 1
    # the grey colormap's 256 levels: value v in [0, 1] -> level floor(256 v), at most 255
    levels = np.minimum(np.clip(grid, 0, 1) * 256, 255).astype(np.uint8)
    levels = levels.repeat(scale, axis=0).repeat(scale, axis=1)
    kind = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    rgb = np.repeat(levels[..., None], 3, axis=2)
    return atomic_write(path, lambda f: plt.imsave(f, rgb, format=kind))


def _pyplot():
    import matplotlib
    if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    """``fig`` to ``path`` (its type from the suffix: .png, .pdf, .svg, ...), written atomically
    (:func:`tinyddpm._files.atomic_write`): a failed write keeps the previous file."""
    from ._files import atomic_write

    kind = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    return atomic_write(path, lambda f: fig.savefig(f, format=kind, dpi=100,
                                                    bbox_inches="tight"))


def plot_forward_process(image, alpha_cumprod, steps, path, seed=0):
    """One real image noised to several t with the shortcut q(x_t | x_0), side by side.

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, with x_0 the image scaled to [-1, 1].
    """
    from .diffusion import q_sample

    plt = _pyplot()
    x0 = np.asarray(image, np.float32).reshape(28, 28) * 2 - 1
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, len(steps), figsize=(1.6 * len(steps), 2.0))
    for ax, t in zip(axes, steps):
        xt = q_sample(x0, int(t), alpha_cumprod, rng=rng)
        ax.imshow(np.clip((xt + 1) / 2, 0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"t = {t}", fontsize=9)
        ax.axis("off")
    fig.suptitle("Forward process: a little Gaussian noise at every step", fontsize=10)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_schedules(T, path):
    """The signal factor alpha_bar_t of the linear and the cosine schedules, t = 0..T."""
    from .schedule import linear_schedule, variance_schedule

    plt = _pyplot()
    t = np.arange(T + 1)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(t, linear_schedule(T)[1], label="linear")
    ax.plot(t, variance_schedule(T)[1], label="cosine")
    ax.set_xlabel("time step t")
    ax.set_ylabel(r"$\bar\alpha_t$ (signal kept)")
    ax.set_title("Variance schedules")
    ax.legend()
    _save(fig, path)
    plt.close(fig)
    return path


def save_animation(frames, path, fps=12, ncols=None, scale=3):
    """An animated GIF of image grids: ``frames`` is a list of (N, 28, 28[, 1]) arrays in [0, 1]."""
    from PIL import Image  # Pillow comes with matplotlib

    from ._files import atomic_write

    pictures = []
    for frame in frames:
        grid = np.clip(image_grid(frame, ncols), 0, 1)
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
        pictures.append(Image.fromarray((grid * 255).astype(np.uint8), mode="L"))
    durations = [int(1000 / fps)] * (len(pictures) - 1) + [2000]  # hold the result
    return atomic_write(path, lambda f: pictures[0].save(
        f, format="GIF", save_all=True, append_images=pictures[1:], duration=durations, loop=0))

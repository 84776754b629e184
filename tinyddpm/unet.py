"""The book's U-Net (Géron, *Hands-On Machine Learning*, 3rd ed., chapter 17), layer by layer.

Inputs: ``{"X_noisy": (N, 28, 28, 1) float32, "time": (N,) int}``; output: the predicted noise,
(N, 28, 28, 1). 280,369 weights, of which 1,376 are BatchNorm moving statistics.
"""
from __future__ import annotations

import numpy as np

from . import nn, ops
from .model import Model


class DownBlock(nn.Module):
    """[ReLU, SeparableConv 3x3, BatchNorm] x 2 -> cross-skip; MaxPool 3x3/2; + Conv1x1/2(skip);
    + Dense(time encoding)."""

    def __init__(self, width):
        super().__init__()
        self.sep1, self.bn1 = nn.SeparableConv2D(width, 3, padding="same"), nn.BatchNormalization()
        self.sep2, self.bn2 = nn.SeparableConv2D(width, 3, padding="same"), nn.BatchNormalization()
        self.pool = nn.MaxPooling2D(3, strides=2, padding="same")
        self.skip_conv = nn.Conv2D(width, 1, strides=2, padding="same")
        self.time_dense = nn.Dense(width)

    def forward(self, z, skip, time_enc):
        z = self.bn1(self.sep1(ops.relu(z)))
        z = self.bn2(self.sep2(ops.relu(z)))
        cross_skip = z
        z = self.pool(z) + self.skip_conv(skip)
        z = z + _per_pixel(self.time_dense(time_enc))
        return z, cross_skip


class UpBlock(nn.Module):
    """[ReLU, Conv2DTranspose 3x3, BatchNorm] x 2; UpSample x2; + Conv1x1(UpSample(skip))
    (computed as UpSample(Conv1x1(skip)), identical);
    + Dense(time encoding); concatenate the cross-skip."""

    def __init__(self, width):
        super().__init__()
        self.tconv1, self.bn1 = nn.Conv2DTranspose(width, 3, padding="same"), nn.BatchNormalization()
        self.tconv2, self.bn2 = nn.Conv2DTranspose(width, 3, padding="same"), nn.BatchNormalization()
        self.up = nn.UpSampling2D(2)
        self.skip_up = nn.UpSampling2D(2)
        self.skip_conv = nn.Conv2D(width, 1, padding="same")
        self.time_dense = nn.Dense(width)

    def forward(self, z, skip, time_enc, cross_skip):
        z = self.bn1(self.tconv1(ops.relu(z)))
        z = self.bn2(self.tconv2(ops.relu(z)))
        # The book applies Conv1x1 to UpSample(skip). A 1x1 convolution acts on each pixel alone
        # and nearest up-sampling only copies pixels, so UpSample(Conv1x1(skip)) is the same
        # result (same weights) for a quarter of the arithmetic.
        z = self.up(z) + self.skip_up(self.skip_conv(skip))
        z = z + _per_pixel(self.time_dense(time_enc))
        return ops.concatenate([z, cross_skip], axis=-1)


def _per_pixel(v):
    """(N, C) -> (N, 1, 1, C), to add to every pixel."""
    return ops.reshape(v, (v.shape[0], 1, 1, v.shape[1]))


class DiffusionUNet(Model):
    """The book's U-Net; see ``../DESIGN.md`` "The reference model"."""

    def __init__(self, T=4000, embed_size=64, widths=(32, 64, 128)):
        super().__init__()
        self.config = {"T": int(T), "embed_size": int(embed_size), "widths": list(widths)}
        self.time_encoding = nn.TimeEncoding(T, embed_size)
        first = widths[0] // 2
        self.pad = nn.ZeroPadding2D(3)
        self.conv_in = nn.Conv2D(first, 3)
        self.bn_in = nn.BatchNormalization()
        self.time_in = nn.Dense(first)
        self.down = [DownBlock(w) for w in widths]
        self.up = [UpBlock(w) for w in (*reversed(widths[:-1]), first)]
        for i, block in enumerate(self.down):
            setattr(self, f"down{i}", block)
        for i, block in enumerate(self.up):
            setattr(self, f"up{i}", block)
        self.conv_out = nn.Conv2D(1, 3, padding="same")
        self.crop = nn.Cropping2D(2)

    def forward(self, inputs):
        x, time = _unpack(inputs)
        time_enc = self.time_encoding(time)
        z = ops.relu(self.bn_in(self.conv_in(self.pad(x))))
        z = z + _per_pixel(self.time_in(time_enc))
        skip, cross_skips = z, []
        for block in self.down:
            z, cross = block(z, skip, time_enc)
            cross_skips.append(cross)
            skip = z
        for block, cross in zip(self.up, reversed(cross_skips)):
            z = block(z, skip, time_enc, cross)
            skip = z
        return self.crop(self.conv_out(z))

    def __call__(self, inputs):
        return self.forward(inputs)


def _unpack(inputs):
    if not isinstance(inputs, dict) or set(inputs) != {"X_noisy", "time"}:
        got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(f"the diffusion model takes {{'X_noisy': (N, 28, 28, 1) float32, "
                         f"'time': (N,) int}}, received {got}")
    x, time = inputs["X_noisy"], np.asarray(inputs["time"])
    n = np.shape(x.data if hasattr(x, "data") else x)[0]
    if time.shape != (n,):
        raise ValueError(f"the diffusion model: 'time' must have shape ({n},) to match X_noisy, "
                         f"received {time.shape}")
    return x, time


def build_diffusion_model(T=4000, embed_size=64, seed=None):
    """The slide's ``build_diffusion_model()``: the book's U-Net, built (weights created)."""
    if seed is not None:
        nn.set_seed(seed)
    model = DiffusionUNet(T, embed_size)
    model.eval()  # build on a dummy batch without touching the BatchNorm statistics
    model({"X_noisy": np.zeros((1, 28, 28, 1), np.float32), "time": np.zeros(1, np.int64)})
    return model.train()

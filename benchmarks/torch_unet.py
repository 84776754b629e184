"""A faithful PyTorch port of the book's U-Net: tinyddpm's peer in ``bench_model.py``.

Same layers, same shapes, same weights (280,369 with BatchNorm's running statistics) as
``tinyddpm.unet.DiffusionUNet`` (``/work/shared/DESIGN.md``, "The reference model"), in torch's
NCHW convention (run it in ``channels_last`` memory format if that is faster). Keras semantics
written out for torch:

* BatchNormalization(momentum=0.99, epsilon=1e-3)  ->  BatchNorm2d(momentum=0.01, eps=1e-3)
  (torch's momentum weighs the new batch, Keras' the old average);
* SeparableConv2D  ->  depthwise Conv2d(groups=C, bias=False) then a 1x1 Conv2d with bias;
* Conv2DTranspose 3x3 'same', stride 1  ->  ConvTranspose2d(padding=1);
* MaxPooling2D(3, strides=2, padding='same')  ->  Keras' asymmetric padding written as an explicit
  ``F.pad(..., value=-inf)`` (0 before, 1 after for even sizes), then ``max_pool2d(3, 2)``;
* Conv2D 1x1, strides=2, 'same' on an even size needs no padding: ``Conv2d(1, stride=2)``;
* the time encoding is the fixed (T+1, 64) sin/cos table of ``tinyddpm.nn.TimeEncoding``; each
  block's Dense layer maps the row of time step t to one value per channel, added to every pixel.

The up blocks compute the book's ``Conv1x1(UpSample(skip))`` as ``UpSample(Conv1x1(skip))``, as
tinyddpm does: a 1x1 convolution acts on each pixel alone and nearest up-sampling only copies
pixels, so the result is identical (same weights) for a quarter of that layer's arithmetic. Both
frameworks thus run the same graph; ``book_order=True`` gives the literal order.

:func:`load_tinyddpm_state` copies a tinyddpm ``model.state_dict()`` into the port:

    conv kernel          (kh, kw, Cin, Cout)  ->  weight (Cout, Cin, kh, kw)
    transposed kernel    (kh, kw, Cout, Cin)  ->  weight (Cin, Cout, kh, kw)
    depthwise kernel     (kh, kw, C, 1)       ->  weight (C, 1, kh, kw)
    Dense kernel         (in, out)            ->  Linear weight (out, in)
    gamma, beta, moving_mean, moving_variance ->  weight, bias, running_mean, running_var
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def keras_same_pads(size, kernel, stride):
    """(before, after) padding of Keras' 'same' rule along one axis: out = ceil(size / stride),
    total = max((out - 1) stride + kernel - size, 0), the odd pixel going after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def batch_norm(channels):
    """Keras BatchNormalization(momentum=0.99, epsilon=1e-3) in torch's terms."""
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


def per_pixel(v):
    """(N, C) -> (N, C, 1, 1), to add to every pixel."""
    return v[:, :, None, None]


def upsample(x):
    """UpSampling2D(2): nearest neighbour, each pixel becomes a 2 x 2 block."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def max_pool_same(x, pool=3, stride=2):
    """MaxPooling2D(pool, strides=stride, padding='same'), Keras' padding made explicit."""
    pt, pb = keras_same_pads(x.shape[2], pool, stride)
    pl, pr = keras_same_pads(x.shape[3], pool, stride)
    return F.max_pool2d(F.pad(x, (pl, pr, pt, pb), value=-math.inf), pool, stride)


class TimeEncoding(nn.Module):
    """table[t, 2i] = sin(t / 10000^(2i/d)),  table[t, 2i+1] = cos(t / 10000^(2i/d)),  t = 0..T.

    A fixed buffer (not trained, not saved, not counted as a weight), as in tinyddpm."""

    def __init__(self, T=4000, embed_size=64):
        super().__init__()
        t = np.arange(T + 1)[:, None]
        rate = 10000.0 ** (np.arange(0, embed_size, 2) / embed_size)
        table = np.empty((T + 1, embed_size))
        table[:, 0::2], table[:, 1::2] = np.sin(t / rate), np.cos(t / rate)
        self.register_buffer("table", torch.from_numpy(table.astype(np.float32)), persistent=False)

    def forward(self, time):
        return self.table[time]


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D(filters, 3, padding='same'): depthwise 3x3 (no bias), pointwise 1x1."""

    def __init__(self, c_in, filters, kernel_size=3):
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, kernel_size, padding=kernel_size // 2,
                                   groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, filters, 1)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class DownBlock(nn.Module):
    """[ReLU, SeparableConv 3x3, BatchNorm] x 2 -> cross-skip; MaxPool 3x3/2 same;
    + Conv1x1/2(skip); + Dense(time encoding)."""

    def __init__(self, c_in, width, embed_size):
        super().__init__()
        self.sep1, self.bn1 = SeparableConv2d(c_in, width), batch_norm(width)
        self.sep2, self.bn2 = SeparableConv2d(width, width), batch_norm(width)
        self.skip_conv = nn.Conv2d(c_in, width, 1, stride=2)  # 'same' pads nothing here
        self.time_dense = nn.Linear(embed_size, width)

    def forward(self, z, skip, time_enc):
        z = self.bn1(self.sep1(F.relu(z)))
        z = self.bn2(self.sep2(F.relu(z)))
        cross_skip = z
        z = max_pool_same(z) + self.skip_conv(skip)
        return z + per_pixel(self.time_dense(time_enc)), cross_skip


class UpBlock(nn.Module):
    """[ReLU, Conv2DTranspose 3x3, BatchNorm] x 2; UpSample x2; + Conv1x1(UpSample(skip));
    + Dense(time encoding); concatenate the cross-skip on channels."""

    def __init__(self, c_in, width, embed_size, book_order=False):
        super().__init__()
        self.tconv1, self.bn1 = nn.ConvTranspose2d(c_in, width, 3, padding=1), batch_norm(width)
        self.tconv2, self.bn2 = nn.ConvTranspose2d(width, width, 3, padding=1), batch_norm(width)
        self.skip_conv = nn.Conv2d(c_in, width, 1)
        self.time_dense = nn.Linear(embed_size, width)
        self.book_order = book_order

    def forward(self, z, skip, time_enc, cross_skip):
        z = self.bn1(self.tconv1(F.relu(z)))
        z = self.bn2(self.tconv2(F.relu(z)))
        if self.book_order:
            skip = self.skip_conv(upsample(skip))
        else:  # identical result, a quarter of the arithmetic (see the module docstring)
            skip = upsample(self.skip_conv(skip))
        z = upsample(z) + skip + per_pixel(self.time_dense(time_enc))
        return torch.cat([z, cross_skip], dim=1)


class TorchUNet(nn.Module):
    """The book's U-Net: ``model(x, t)`` with x (N, 1, 28, 28) float32 and t (N,) int64 -> the
    predicted noise (N, 1, 28, 28). Submodule names follow tinyddpm's, for the weight copy."""

    def __init__(self, T=4000, embed_size=64, widths=(32, 64, 128), book_order=False):
        super().__init__()
        first = widths[0] // 2
        self.time_encoding = TimeEncoding(T, embed_size)
        self.conv_in = nn.Conv2d(1, first, 3)  # after ZeroPadding2D(3): 34 -> 32, 'valid'
        self.bn_in = batch_norm(first)
        self.time_in = nn.Linear(embed_size, first)
        c = first
        for i, width in enumerate(widths):
            setattr(self, f"down{i}", DownBlock(c, width, embed_size))
            c = width
        cross_channels = list(reversed(widths))
        for i, width in enumerate((*reversed(widths[:-1]), first)):
            setattr(self, f"up{i}", UpBlock(c, width, embed_size, book_order))
            c = width + cross_channels[i]  # after the concatenation: 192, 96, 48
        self.conv_out = nn.Conv2d(c, 1, 3, padding=1)
        self.n_down, self.n_up = len(widths), len(widths)

    def forward(self, x, time):
        time_enc = self.time_encoding(time)
        z = F.relu(self.bn_in(self.conv_in(F.pad(x, (3, 3, 3, 3)))))
        z = z + per_pixel(self.time_in(time_enc))
        skip, cross_skips = z, []
        for i in range(self.n_down):
            z, cross = getattr(self, f"down{i}")(z, skip, time_enc)
            cross_skips.append(cross)
            skip = z
        for i in range(self.n_up):
            z = getattr(self, f"up{i}")(z, skip, time_enc, cross_skips[-1 - i])
            skip = z
        return self.conv_out(z)[:, :, 2:-2, 2:-2]  # Cropping2D(2): 32 -> 28


def count_params(model):
    """Weights as Keras counts them: parameters plus BatchNorm's running mean and variance
    (not torch's ``num_batches_tracked`` counter)."""
    params = sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for name, b in model.named_buffers()
                if name.endswith(("running_mean", "running_var")))
    return params + stats


def _torch_name(name):
    """The port's state-dict key for a tinyddpm state-dict key."""
    path, _, leaf = name.rpartition(".")
    if leaf == "depthwise_kernel":
        return f"{path}.depthwise.weight"
    if leaf == "pointwise_kernel":
        return f"{path}.pointwise.weight"
    if leaf == "bias" and path.split(".")[-1].startswith("sep"):
        return f"{path}.pointwise.bias"
    return f"{path}." + {"kernel": "weight", "gamma": "weight", "beta": "bias",
                         "moving_mean": "running_mean",
                         "moving_variance": "running_var"}.get(leaf, leaf)


def _torch_layout(leaf, array):
    """A tinyddpm weight array rearranged to torch's layout (see the module docstring)."""
    if leaf == "depthwise_kernel":          # (kh, kw, C, 1) -> (C, 1, kh, kw)
        return np.transpose(array, (2, 3, 0, 1))
    if array.ndim == 4:  # conv (kh, kw, Cin, Cout) -> (Cout, Cin, kh, kw), and likewise
        return np.transpose(array, (3, 2, 0, 1))  # transposed (kh,kw,Cout,Cin) -> (Cin,Cout,kh,kw)
    if array.ndim == 2:                     # Dense (in, out) -> Linear (out, in)
        return array.T
    return array


@torch.no_grad()
def load_tinyddpm_state(model, state):
    """Copy a tinyddpm ``DiffusionUNet.state_dict()`` (NumPy arrays) into ``model``, strictly:
    every weight and running statistic of the port must be set, with matching shapes."""
    own = model.state_dict()
    filled = set()
    for name, array in state.items():
        key = _torch_name(name)
        if key not in own:
            raise KeyError(f"tinyddpm weight {name!r}: no {key!r} in the torch port")
        value = torch.from_numpy(np.ascontiguousarray(_torch_layout(name.rpartition(".")[2],
                                                                    np.asarray(array))))
        if value.shape != own[key].shape:
            raise ValueError(f"{name} -> {key}: shape {tuple(value.shape)} vs the port's "
                             f"{tuple(own[key].shape)}")
        own[key] = value.to(own[key].dtype)
        filled.add(key)
    missing = [k for k in own if k not in filled and not k.endswith("num_batches_tracked")]
    if missing:
        raise KeyError(f"the torch port has weights tinyddpm's state does not set: {missing}")
    model.load_state_dict(own, strict=True)
    return model

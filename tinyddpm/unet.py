"""The book's U-Net (Géron, *Hands-On Machine Learning*, 3rd ed., chapter 17), layer by layer.

Inputs: ``{"X_noisy": (N, 28, 28, 1) float32, "time": (N,) int}``; output: the predicted noise,
(N, 28, 28, 1). 280,369 weights, of which 1,376 are BatchNorm moving statistics.
"""
from __future__ import annotations

import numpy as np

from . import nn, ops
from .model import Model
from .schedule import schedule_spec


class DownBlock(nn.Module):
    """[ReLU, SeparableConv 3x3, BatchNorm] x 2 -> cross-skip; MaxPool 3x3/2; + Conv1x1/2(skip);
    + Dense(time encoding)."""

    def __init__(self, width):
        super().__init__()
        self.sep1, self.bn1 = nn.SeparableConv2D(width, 3, padding="same"), nn.BatchNormalization()
        self.sep2, self.bn2 = nn.SeparableConv2D(width, 3, padding="same"), nn.BatchNormalization()
        nn.fold_batchnorm(self.sep1, self.bn1)  # at inference: folded into the weights
        nn.fold_batchnorm(self.sep2, self.bn2)
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
        nn.fold_batchnorm(self.tconv1, self.bn1)
        nn.fold_batchnorm(self.tconv2, self.bn2)
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


def _class_embedding_init(shape):
    """Class rows ~ N(0, 0.5), as large as the time encoding's entries (RMS 0.71): Keras' tiny
    U(-0.05, 0.05) left the class signal drowned by the time encoding (after one epoch of
    fine-tuning the shipped model, samples matched the requested class at chance level, 11%).
    The "no class" row starts at zero, so a conditional model fine-tuned from an unconditional
    one starts out predicting exactly what it did."""
    table = nn.normal(shape, 0.5)
    table[-1] = 0
    return table


def _per_pixel(v):
    """(N, C) -> (N, 1, 1, C), to add to every pixel."""
    return ops.reshape(v, (v.shape[0], 1, 1, v.shape[1]))


class DiffusionUNet(Model):
    """The book's U-Net; see ``../DESIGN.md`` "The reference model"."""

    def __init__(self, T=4000, embed_size=64, widths=(32, 64, 128), image_shape=(28, 28, 1),
                 num_classes=None, schedule=None):
        super().__init__()
        self.config = {"T": int(T), "embed_size": int(embed_size), "widths": list(widths),
                       "schedule": schedule_spec(schedule)}  # the model owns its schedule
        self.image_shape = tuple(int(v) for v in image_shape)
        # options beyond the book enter the config only when used (the book's config unchanged)
        if self.image_shape != (28, 28, 1):
            self.config["image_shape"] = list(self.image_shape)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.time_encoding = nn.TimeEncoding(T, embed_size)
        if self.num_classes is not None:
            # class-conditional: a learned vector per class, plus one for "no class" (index
            # num_classes), added to the time encoding (classifier-free guidance, Ho & Salimans)
            self.config["num_classes"] = self.num_classes
            self.class_embedding = nn.Embedding(self.num_classes + 1, embed_size,
                                                _class_embedding_init)
        first = widths[0] // 2
        pad, crop = _pad_and_crop(self.image_shape[:2], len(widths))
        self.pad = nn.ZeroPadding2D(pad)
        self.conv_in = nn.Conv2D(first, 3)
        self.bn_in = nn.BatchNormalization()
        nn.fold_batchnorm(self.conv_in, self.bn_in)
        self.time_in = nn.Dense(first)
        self.down = [DownBlock(w) for w in widths]
        self.up = [UpBlock(w) for w in (*reversed(widths[:-1]), first)]
        for i, block in enumerate(self.down):
            setattr(self, f"down{i}", block)
        for i, block in enumerate(self.up):
            setattr(self, f"up{i}", block)
        self.conv_out = nn.Conv2D(self.image_shape[2], 3, padding="same")
        self.crop = nn.Cropping2D(crop)

    @property
    def conditional(self):
        return self.num_classes is not None

    def forward(self, inputs):
        x, time, label = _unpack(inputs, self.image_shape, self.config["T"], self.num_classes)
        time_enc = self.time_encoding(time)
        if label is not None:
            time_enc = time_enc + self.class_embedding(label)
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


def _pad_and_crop(hw, depth):
    """Zero padding before the valid 3x3 stem conv, and the crop after the last conv.

    The stem's output must have a side divisible by 2**depth (one halving per down block):
    28 -> pad 3 each side -> 34 -> valid conv -> 32 -> crop 2 each side -> 28 (the book), and
    7 (a 7x7 latent) -> pad 1 top/left, 2 bottom/right -> 10 -> 8 -> crop 0 and 1 -> 7.
    """
    pad, crop = [], []
    for n in hw:
        size = -(-n // 2 ** depth) * 2 ** depth
        before = (size + 2 - n) // 2
        pad.append((before, size + 2 - n - before))
        crop.append((before - 1, size - n - (before - 1)))
    return tuple(pad), tuple(crop)


def _unpack(inputs, image_shape, T, num_classes=None):
    """The model's inputs, checked (:func:`check_inputs`): X_noisy (N, *image_shape) floats,
    time (N,) whole numbers in 0..T, label (N,) in 0..num_classes (num_classes = "no class").
    Returns (X_noisy, time, label) (label None for a model without classes)."""
    keys = {"X_noisy", "time"} | ({"label"} if num_classes is not None else set())
    shape = ", ".join(map(str, image_shape))
    if not isinstance(inputs, dict) or set(inputs) != keys:
        got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        label = (f", 'label': (N,) int in 0..{num_classes} ({num_classes} = no class)"
                 if num_classes is not None else "")
        raise ValueError(f"the diffusion model takes {{'X_noisy': (N, {shape}) float32, "
                         f"'time': (N,) int{label}}}, received {got}")
    from .tensor import Tensor

    x = inputs["X_noisy"]
    x_array = x.data if isinstance(x, Tensor) else x
    indices = {}
    for name in keys - {"X_noisy"}:
        value = inputs[name]
        value = np.asarray(value.data if isinstance(value, Tensor) else value)
        indices[name] = (value, value.shape, value.dtype.name,
                         np.issubdtype(value.dtype, np.integer),
                         lambda value=value: (value.min(), value.max()))
    x_dtype = getattr(x_array, "dtype", None)
    check_inputs(np.shape(x_array), None if x_dtype is None else np.dtype(x_dtype).name,
                 x_dtype is None or np.dtype(x_dtype).kind == "f",
                 {k: v[1:] for k, v in indices.items()}, image_shape, T, num_classes)
    return x, indices["time"][0], indices["label"][0] if "label" in indices else None


def check_inputs(x_shape, x_dtype, x_floats, indices, image_shape, T, num_classes=None):
    """The checks (and messages) of a diffusion U-Net's inputs, for every form they come in:
    tinyddpm's arrays, :class:`tinyddpm.export.OnnxModel`'s, the torch twin's tensors.

    ``x_shape``: X_noisy's shape, which must be (N, *image_shape); ``x_dtype``, ``x_floats``:
    its dtype's name and whether it is a float type (an int or bool image is refused);
    ``indices``: {"time": ..., "label": ...} each as (shape, dtype name, whether whole numbers,
    ``bounds()`` -> (min, max), called only when the rest holds). Time steps must lie in
    0..T, labels in 0..num_classes (num_classes: "no class").

    Raises
    ------
    ValueError
        The first input that is wrong, named, with what it must be.
    """
    shape = ", ".join(map(str, image_shape))
    if len(x_shape) != 4 or tuple(x_shape[1:]) != tuple(image_shape):
        raise ValueError(f"the diffusion model: 'X_noisy' must have shape (N, {shape}), "
                         f"received {tuple(x_shape)}")
    if not x_floats:
        raise ValueError(f"the diffusion model: 'X_noisy' must hold floats (float32), received "
                         f"dtype {x_dtype}: convert with .astype(np.float32)")
    n = x_shape[0]
    for name, high in (("time", T), ("label", num_classes)):
        if name not in indices:
            continue
        value_shape, dtype, whole, bounds = indices[name]
        if tuple(value_shape) != (n,):
            raise ValueError(f"the diffusion model: {name!r} must have shape ({n},) to match "
                             f"X_noisy, received {tuple(value_shape)}")
        if not whole:
            raise ValueError(f"the diffusion model: {name!r} must hold whole numbers, received "
                             f"dtype {dtype}")
        if n:
            low, top = bounds()
            if low < 0 or top > high:
                raise ValueError(f"the diffusion model: {name!r} must lie in 0..{high}, "
                                 f"received values in {low}..{top}")


def build_diffusion_model(T=4000, embed_size=64, seed=None, num_classes=None, schedule=None):
    """The slide's ``build_diffusion_model()``: the book's U-Net, built (weights created).

    ``T`` and ``schedule`` (None: the slides' cosine schedule; see
    :func:`~tinyddpm.schedule.schedule_spec`) are recorded in ``model.config`` and its
    checkpoints: the samplers use them, and ``fit`` refuses data prepared with another schedule.

    ``num_classes=10``: the class-conditional variant for classifier-free guidance (a learned
    class embedding, plus a "no class" entry, added to the time encoding; inputs gain a
    ``"label"`` array). The book's model is ``num_classes=None``.
    """
    _check_T("build_diffusion_model", T)
    if seed is not None:
        nn.set_seed(seed)
    model = DiffusionUNet(T, embed_size, num_classes=num_classes, schedule=schedule)
    model(dummy_inputs(model))  # build, in inference mode (a Model's default, as in Keras)
    return model


def _check_T(builder, T):
    """T: a whole number of diffusion steps in 1..100,000 (a checkpoint's bound too; the time
    encoding holds T rows)."""
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or not 1 <= T <= 100_000:
        raise ValueError(f"{builder}: T must be a whole number of steps in 1..100,000, got {T!r}")


def dummy_inputs(model, n=1):
    """Zero inputs of the right shapes for ``model`` (to build it)."""
    inputs = {"X_noisy": np.zeros((n, *model.image_shape), np.float32),
              "time": np.zeros(n, np.int64)}
    if getattr(model, "num_classes", None) is not None:
        inputs["label"] = np.full(n, model.num_classes, np.int64)
    return inputs

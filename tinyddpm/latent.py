"""Latent diffusion (the slides' last part): diffuse in a small latent space, then decode.

1. An :class:`Autoencoder` compresses a 28x28x1 image to a 7x7x4 latent (4x fewer numbers) and
   back; it is trained alone, to reconstruct its input (mean absolute error).
2. Latent-scale normalisation: each latent channel is shifted and scaled to mean 0 and standard
   deviation 1 over the training set, so the latents suit the unit Gaussian the diffusion process
   ends in (what Stable Diffusion's ``scale_factor`` does).
3. A :class:`LatentDiffusion` model: a small U-Net over the 7x7x4 latents (same layers, same
   cosine schedule, same ``prepare_batch``), with the frozen autoencoder inside it. ``generate``
   and ``generate_ddim`` run their usual loops on latents and decode the result::

       ae = build_autoencoder(seed=0)
       ae.compile(loss="mae", optimizer=Nadam())
       ae.fit(image_batches(X_train, 32, shuffle=True, seed=0), epochs=5)
       ae.fit_latent_scale(X_train)
       model = build_latent_model(ae, seed=0)
       Z = ae.encode(X_train)                                  # (N, 7, 7, 4), normalised
       model.compile(loss=Huber(), optimizer=Nadam())
       model.fit(prepare_dataset(Z, 32, shuffle=True, scale=False), epochs=20)
       images = generate_ddim(model.eval(), 64, steps=50)     # (64, 28, 28, 1) in [0, 1]

The command line does all of it: ``python -m tinyddpm train-latent``.
"""
from __future__ import annotations

import math

import numpy as np

from . import nn
from .diffusion import _images_nhwc01
from .model import Model
from .tensor import no_grad
from .unet import DiffusionUNet

LATENT_SHAPE = (7, 7, 4)


class Autoencoder(Model):
    """28x28x1 images in [-1, 1] -> (7, 7, 4) latents -> images.

    Encoder: Conv 3x3 (w0) -> Conv 3x3 stride 2 (w1, 14x14) -> Conv 3x3 (w1) -> Conv 3x3 stride 2
    (w2, 7x7) -> Conv 3x3 (4 channels, no activation). Decoder: Conv 3x3 (w2) x 2 -> UpSample x2
    -> Conv 3x3 (w1) x 2 -> UpSample x2 -> Conv 3x3 (w0) -> Conv 3x3 (1 channel). ReLU inside.
    ``forward`` (used by ``fit``) reconstructs; ``encode``/``decode`` work on NumPy arrays and
    apply the latent normalisation.
    """

    def __init__(self, widths=(16, 32, 64), latent_channels=4):
        super().__init__()
        w0, w1, w2 = widths
        self.config = {"widths": list(widths), "latent_channels": int(latent_channels)}
        conv = lambda w, s=1, act="relu": nn.Conv2D(w, 3, strides=s, padding="same",  # noqa: E731
                                                   activation=act)
        self.encoder = nn.Sequential([conv(w0), conv(w1, 2), conv(w1), conv(w2, 2),
                                      conv(latent_channels, act=None)])
        self.decoder = nn.Sequential([conv(w2), conv(w2), nn.UpSampling2D(2), conv(w1), conv(w1),
                                      nn.UpSampling2D(2), conv(w0), conv(1, act=None)])
        # latent normalisation z = (raw - mean) / std, per channel; bound = max |z| seen
        self.register_buffer("latent_mean", np.zeros(latent_channels, np.float32))
        self.register_buffer("latent_std", np.ones(latent_channels, np.float32))
        self.register_buffer("latent_bound", np.array(5.0, np.float32))

    def forward(self, x):
        return self.decoder(self.encoder(x))

    @property
    def latent_shape(self):
        return (7, 7, self.config["latent_channels"])

    def encode(self, images, batch_size=256):
        """Images (N, 28, 28[, 1]), uint8 or float in [0, 1] -> normalised latents (N, 7, 7, C).

        Raises ValueError for images of another size (the latents would not fit the decoder)."""
        X = _images_nhwc01(images)
        if X.shape[1:] != (28, 28, 1):
            raise ValueError(f"encode: images must have shape (N, 28, 28) or (N, 28, 28, 1), "
                             f"got {np.shape(images)}")
        X = X * 2 - 1
        raw = self._batched(self.encoder, X, batch_size)
        return ((raw - self.latent_mean) / self.latent_std).astype(np.float32)

    def decode(self, Z, batch_size=256):
        """Normalised latents (N, 7, 7, C) -> images (N, 28, 28, 1) float32 in [0, 1]."""
        Z = np.asarray(Z, np.float32)
        if Z.ndim != 4 or Z.shape[1:] != self.latent_shape:
            raise ValueError(f"decode: latents must have shape (N, {', '.join(map(str, self.latent_shape))}), "
                             f"got {Z.shape}")
        X = self._batched(self.decoder, Z * self.latent_std + self.latent_mean, batch_size)
        return np.clip((X + 1) / 2, 0, 1).astype(np.float32)

    def reconstruct(self, images, batch_size=256):
        """decode(encode(images)), in [0, 1]."""
        return self.decode(self.encode(images, batch_size), batch_size)

    def fit_latent_scale(self, images, batch_size=256):
        """Set the per-channel latent mean and standard deviation from ``images`` (training set)."""
        self.latent_mean = np.zeros(self.config["latent_channels"], np.float32)
        self.latent_std = np.ones(self.config["latent_channels"], np.float32)
        raw = self.encode(images, batch_size)
        self.latent_mean = raw.mean(axis=(0, 1, 2)).astype(np.float32)
        self.latent_std = raw.std(axis=(0, 1, 2)).astype(np.float32) + 1e-6
        Z = (raw - self.latent_mean) / self.latent_std
        self.latent_bound = np.array(np.abs(Z).max(), np.float32)
        return self.latent_mean, self.latent_std

    def _batched(self, net, X, batch_size):
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                out = [net(X[i:i + batch_size]).data for i in range(0, len(X), batch_size)]
        finally:
            self.train(was_training)  # as Model.predict: back to the mode it was in
        return np.concatenate(out) if out else np.zeros((0, *self.latent_shape), np.float32)


def build_autoencoder(widths=(16, 32, 64), latent_channels=4, seed=None):
    """The autoencoder, built (weights created)."""
    if seed is not None:
        nn.set_seed(seed)
    ae = Autoencoder(widths, latent_channels)
    ae(np.zeros((1, 28, 28, 1), np.float32))
    return ae


class ImageBatches:
    """(X, X) batches of images in [-1, 1] for training the autoencoder to reconstruct.

    Shuffled afresh each epoch from ``SeedSequence([seed, epoch])``, so a resumed run sees the
    same batches (``set_epoch``), like :func:`tinyddpm.prepare_dataset`.
    """

    def __init__(self, X, batch_size=32, shuffle=False, seed=0):
        self.X = _images_nhwc01(X)
        self.batch_size, self.shuffle, self.seed, self.epoch = int(batch_size), shuffle, seed, 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return math.ceil(len(self.X) / self.batch_size)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        n = len(self.X)
        order = (np.random.default_rng(np.random.SeedSequence([self.seed, epoch])).permutation(n)
                 if self.shuffle else np.arange(n))
        for start in range(0, n, self.batch_size):
            X = self.X[order[start:start + self.batch_size]] * 2 - 1
            yield X, X


def image_batches(X, batch_size=32, shuffle=False, seed=0):
    """Autoencoder training batches: see :class:`ImageBatches`."""
    return ImageBatches(X, batch_size, shuffle, seed)


class LatentDiffusion(Model):
    """A DDPM over the autoencoder's latents: the U-Net predicts the noise of a noisy latent.

    Inputs ``{"X_noisy": (N, 7, 7, 4), "time": (N,)}`` like the pixel model; the autoencoder
    inside is frozen (``trainable = False``) and only used by ``decode_samples``, which
    :func:`tinyddpm.generate` and :func:`tinyddpm.generate_ddim` call on their final latents.
    """

    def __init__(self, autoencoder, T=4000, embed_size=64, widths=(64, 128), schedule=None):
        super().__init__()
        self.autoencoder = autoencoder
        self.autoencoder.trainable = False
        self.unet = DiffusionUNet(T, embed_size, widths, image_shape=autoencoder.latent_shape,
                                  schedule=schedule)
        self.image_shape = autoencoder.latent_shape
        self.config = {"latent": True, "unet": self.unet.config, "autoencoder": autoencoder.config}
        self.config["T"] = self.unet.config["T"]
        self.config["schedule"] = self.unet.config["schedule"]

    def forward(self, inputs):
        return self.unet(inputs)

    @property
    def x0_bound(self):
        """DDIM clips its latent x_0 estimate to [-bound, bound] (the largest |z| in training)."""
        return float(self.autoencoder.latent_bound)

    def decode_samples(self, Z):
        return self.autoencoder.decode(Z)


def build_latent_model(autoencoder, T=4000, embed_size=64, widths=(64, 128), seed=None,
                       schedule=None):
    """The latent diffusion model over ``autoencoder``'s latents, built (weights created)."""
    if seed is not None:
        nn.set_seed(seed)
    model = LatentDiffusion(autoencoder, T, embed_size, widths, schedule)
    model({"X_noisy": np.zeros((1, *model.image_shape), np.float32),
           "time": np.zeros(1, np.int64)})  # build, in inference mode (a Model's default)
    return model


def model_from_checkpoint(path):
    """Build the :class:`LatentDiffusion` model a checkpoint was saved from and load it.

    Returns ``(model, header)``; the architecture (autoencoder widths, U-Net widths, T) comes from
    the checkpoint's header, so any ``train-latent`` checkpoint loads.
    """
    from .checkpoint import (CheckpointError, checkpoint_kind, describe_kind, load_checkpoint,
                             read_checkpoint)

    header = read_checkpoint(path)[0]
    config = header.get("config") or {}
    if checkpoint_kind(header) != "latent":
        raise CheckpointError(f"{str(path)!r} is not a latent diffusion model: it "
                              f"{describe_kind(path, header)}")
    try:
        ae_cfg, unet_cfg = config["autoencoder"], config["unet"]
        ae = build_autoencoder(ae_cfg["widths"], ae_cfg["latent_channels"])
        model = build_latent_model(ae, unet_cfg["T"], unet_cfg["embed_size"], unet_cfg["widths"],
                                   schedule=unet_cfg.get("schedule"))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{str(path)!r}: the latent model's config is not valid "
                              f"({type(e).__name__}: {e})") from None
    model.compile()  # an optimizer to receive the saved state, so training can resume
    header = load_checkpoint(path, model, model.optimizer)
    return model, header


def autoencoder_from_checkpoint(path):
    """Build the :class:`Autoencoder` a checkpoint holds (phase 1 of ``train-latent``,
    ``<checkpoint>.autoencoder.npz``; or one saved from Python) and load its weights, in
    inference mode. Returns ``(autoencoder, header)``; the architecture comes from the header.

    Raises
    ------
    CheckpointError
        The file is not a readable checkpoint, holds another model, or its config does not
        describe an autoencoder.
    """
    from .checkpoint import (CheckpointError, checkpoint_kind, describe_kind, load_checkpoint,
                             read_checkpoint)

    header = read_checkpoint(path)[0]
    if checkpoint_kind(header) != "autoencoder":
        raise CheckpointError(f"{str(path)!r} is not an autoencoder: it "
                              f"{describe_kind(path, header)}")
    config = header.get("config") or {}
    try:
        ae = build_autoencoder(config["widths"], config["latent_channels"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{str(path)!r}: the autoencoder's config is not valid "
                              f"({type(e).__name__}: {e})") from None
    return ae.eval(), load_checkpoint(path, ae)


def training_latents(model, n=12_800, data_dir=None):
    """The normalised latents of the first ``n`` training images (for BatchNorm re-estimation)."""
    from .data import load_fashion_mnist, split_train_valid

    (X_full, _), _ = load_fashion_mnist(data_dir)
    X_train, _ = split_train_valid(X_full)
    return model.autoencoder.encode(X_train[:n])

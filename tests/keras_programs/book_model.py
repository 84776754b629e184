"""The reference U-Net (DESIGN.md, "The reference model") written once with the functional API
for any Keras-like module: ``build(tf.keras, tf.gather)`` or ``build(tinyddpm.keras, take)``.
Every layer gets a name, so the two models' weights can be matched by name.

    python tests/keras_programs/book_model.py OUT.npz   # Keras: weights, inputs and outputs

The time encoding is a ``Layer`` subclass with ``call()``, the pattern the book uses; the only
framework function it needs, ``gather``, is passed in (``tf.gather`` or ``numpy.take``).
"""
import itertools
import os
import sys

import numpy as np


def time_encoding_layer(keras, gather):
    class TimeEncoding(keras.layers.Layer):
        """table[t, 2i] = sin(t / 10000^(2i/d)), table[t, 2i+1] = cos(...), t = 0..T."""

        def __init__(self, T, embed_size, **kwargs):
            super().__init__(**kwargs)
            t = np.arange(T + 1)[:, None]
            rate = 10000.0 ** (np.arange(0, embed_size, 2) / embed_size)
            table = np.empty((T + 1, embed_size), np.float32)
            table[:, 0::2], table[:, 1::2] = np.sin(t / rate), np.cos(t / rate)
            self.table = table

        def call(self, time):
            return gather(self.table, time)
    return TimeEncoding


def build(keras, gather, T=4000, embed_size=64):
    L = keras.layers
    counter = itertools.count()

    def name(kind):
        return f"{kind}_{next(counter)}"

    X = L.Input(shape=[28, 28, 1], name="X_noisy")
    time = L.Input(shape=[], dtype="int32", name="time")
    encoding = time_encoding_layer(keras, gather)(T, embed_size, name="time_encoding")(time)

    def plus_time(Z, width):
        per_image = L.Dense(width, name=name("dense"))(encoding)
        return per_image[:, None, None, :] + Z  # the same vector added to every pixel

    Z = L.ZeroPadding2D((3, 3), name=name("pad"))(X)
    Z = L.Conv2D(16, 3, name=name("conv"))(Z)
    Z = L.BatchNormalization(name=name("bn"))(Z)
    Z = L.Activation("relu", name=name("relu"))(Z)
    Z = plus_time(Z, 16)
    skip, crosses = Z, []
    for width in (32, 64, 128):
        for _ in range(2):
            Z = L.Activation("relu", name=name("relu"))(Z)
            Z = L.SeparableConv2D(width, 3, padding="same", name=name("sepconv"))(Z)
            Z = L.BatchNormalization(name=name("bn"))(Z)
        crosses.append(Z)
        Z = L.MaxPooling2D(3, strides=2, padding="same", name=name("pool"))(Z)
        link = L.Conv2D(width, 1, strides=2, padding="same", name=name("conv"))(skip)
        Z = plus_time(L.add([Z, link], name=name("add")), width)
        skip = Z
    for width in (64, 32, 16):
        for _ in range(2):
            Z = L.Activation("relu", name=name("relu"))(Z)
            Z = L.Conv2DTranspose(width, 3, padding="same", name=name("tconv"))(Z)
            Z = L.BatchNormalization(name=name("bn"))(Z)
        Z = L.UpSampling2D(2, name=name("up"))(Z)
        link = L.Conv2D(width, 1, padding="same", name=name("conv"))(
            L.UpSampling2D(2, name=name("up"))(skip))
        Z = plus_time(L.add([Z, link], name=name("add")), width)
        Z = L.concatenate([Z, crosses.pop()], axis=-1, name=name("concat"))
        skip = Z
    out = L.Conv2D(1, 3, padding="same", name=name("conv"))(Z)[:, 2:-2, 2:-2]
    return keras.Model(inputs=[X, time], outputs=[out])


def inputs(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 28, 28, 1)).astype(np.float32),
            rng.integers(1, 4001, n).astype(np.int32))


def main(out):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    keras = tf.keras
    keras.utils.set_random_seed(0)
    model = build(keras, tf.gather)
    rng = np.random.default_rng(1)
    arrays = {}
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):  # statistics away from 0 and 1
            c = weights[0].shape
            weights = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c),
                       rng.uniform(0.5, 1.5, c)]
            layer.set_weights([w.astype(np.float32) for w in weights])
        elif weights:  # biases away from 0
            layer.set_weights([weights[0]] + [rng.normal(0, 0.1, w.shape).astype(np.float32)
                                              for w in weights[1:]])
        for i, w in enumerate(layer.get_weights()):
            arrays[f"{layer.name}/{i}"] = w
    x, t = inputs()
    arrays["x"], arrays["t"] = x, t
    arrays["inference"] = model({"X_noisy": x, "time": t}, training=False).numpy()
    arrays["count_params"] = np.array(model.count_params())
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1])

"""``tinyddpm.keras``: the ``tf.keras`` names the book's chapter 17 uses, over tinyddpm's engine.

    from tinyddpm import keras          # instead of: import tensorflow as tf; keras = tf.keras
    X = keras.layers.Input(shape=[28, 28, 1], name="X_noisy")
    Z = keras.layers.Conv2D(16, 3)(X)
    model = keras.Model(inputs=[X], outputs=[Z])

``layers`` re-exports tinyddpm's layers (one implementation of each, in ``tinyddpm.nn``) and adds
``Input``, the ``Layer`` base class with ``call()``, ``Add``/``Concatenate`` and ``add``/
``concatenate``; ``models`` holds ``Model`` (functional, or subclassed with ``call()``) and
``Sequential``; ``losses``, ``optimizers`` and ``callbacks`` are tinyddpm's own modules. What is
left out is listed in the README ("Coming from Keras"); an argument tinyddpm does not know fails
with an error that names it.
"""
from .. import callbacks, losses, optimizers  # noqa: F401
from . import layers, models  # noqa: F401
from .layers import Input  # noqa: F401
from .models import Model, Sequential, load_model  # noqa: F401

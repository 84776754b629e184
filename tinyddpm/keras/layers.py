"""Keras' ``layers`` namespace: tinyddpm's layers, ``Input``, and the ``Layer`` base class."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..nn import (Activation, BatchNormalization, Conv2D, Conv2DTranspose, Cropping2D,  # noqa
                  Dense, Dropout, Embedding, Flatten, GroupNormalization, MaxPooling2D, Module,
                  Reshape, SeparableConv2D, UpSampling2D, ZeroPadding2D, _takes_training)
from ..symbolic import Input, SymbolicTensor  # noqa: F401
from ..tensor import as_tensor


def _shape(x):
    """Keras' input_shape for ``build``: a tuple, or a list of them for several inputs."""
    if isinstance(x, (list, tuple)):
        return [_shape(v) for v in x]
    if isinstance(x, dict):
        return {k: _shape(v) for k, v in x.items()}
    return tuple(np.shape(getattr(x, "data", x)))


class Layer(Module):
    """Keras' ``Layer``: subclass it, create weights with ``add_weight`` in ``__init__`` or in
    ``build(input_shape)`` (called once, on the first input), and compute in ``call(inputs)``
    (``call(inputs, training=None)`` receives the mode). ``name``, ``dtype`` (NumPy's names)
    and ``trainable`` as in Keras; any other argument is an error that names it."""

    def __init__(self, trainable=True, name=None, dtype=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}: tinyddpm's Layer does not take "
                            f"{', '.join(sorted(kwargs))} (it takes trainable, name, dtype)")
        super().__init__(name)
        if dtype is not None:
            self.dtype = np.dtype(dtype).type
        self.trainable = trainable

    def _enter(self, x):
        if not self.built:
            self.build(_shape(x))
            self.built = True
        return x

    def build(self, input_shape):
        """Create the weights for inputs of ``input_shape`` (override it)."""

    def forward(self, inputs, *args, **kwargs):
        if _takes_training(type(self).call):
            kwargs.setdefault("training", self.training)
        return self.call(inputs, *args, **kwargs)

    def call(self, inputs):
        """The layer's computation (override it)."""
        return inputs

    def add_weight(self, *args, name=None, shape=None, initializer="glorot_uniform",
                   trainable=True, dtype=None):
        """A weight, as Keras' ``add_weight(name, shape, initializer=..., trainable=...)``
        (Keras 2 puts the name first, Keras 3 the shape: both work). Untrainable weights are
        buffers: saved, never trained."""
        for arg in args:
            if isinstance(arg, str):
                name = arg
            else:
                shape = arg
        name = name or f"weight{len(self._parameters) + len(self._buffers)}"
        shape = tuple(shape or ())
        if trainable:
            return super().add_weight(name, shape, initializer)
        value = super().add_weight(name, shape, initializer).data
        del self._parameters[name]
        self.register_buffer(name, value.astype(dtype or self.dtype))
        return getattr(self, name)


class Add(Layer):
    """The sum of a list of inputs of one shape (Keras' ``Add``)."""

    def call(self, inputs):
        total = as_tensor(inputs[0])
        for x in inputs[1:]:
            total = total + x
        return total


class Concatenate(Layer):
    """A list of inputs joined along ``axis`` (Keras' ``Concatenate``, default the channels)."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def call(self, inputs):
        return ops.concatenate([as_tensor(x) for x in inputs], axis=self.axis)


def add(inputs, **kwargs):
    """``Add()(inputs)``, as Keras' ``layers.add``."""
    return Add(**kwargs)(inputs)


def concatenate(inputs, axis=-1, **kwargs):
    """``Concatenate(axis)(inputs)``, as Keras' ``layers.concatenate``."""
    return Concatenate(axis=axis, **kwargs)(inputs)

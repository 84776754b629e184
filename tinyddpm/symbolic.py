"""The functional API's placeholders, as Keras' ``Input``: build a model by calling layers on
symbolic tensors, then ``Model(inputs, outputs)`` replays the calls on real data.

    X = Input(shape=[28, 28, 1], name="X_noisy")
    Z = Conv2D(16, 3)(X)                  # a SymbolicTensor: the call is recorded
    Z = Z[:, 2:-2, 2:-2] + 1              # slicing and arithmetic are recorded too

A :class:`SymbolicTensor` carries the value its computation gives on a batch of one (zeros at
the inputs): calling a layer on it builds the layer's weights and tells the output's shape, as
Keras does with its symbolic shapes. Layers run on that batch in inference mode with no graph, so
no BatchNorm statistic moves. :func:`trace` lists the recorded calls from the inputs to the
outputs, in an order that can run them; :func:`run` runs them on real inputs.
"""
from __future__ import annotations

import itertools

import numpy as np


_created = itertools.count()


class SymbolicTensor:
    """A value a functional model will compute: ``shape`` (batch dimension None), ``dtype``, and
    how to compute it (``fn(*args, **kwargs)`` over other symbolic tensors; none for an input)."""

    def __init__(self, value, fn=None, args=(), kwargs=None, name=None):
        self.value, self.fn, self.args, self.kwargs = value, fn, args, kwargs or {}
        self.name = name
        self.seq = next(_created)  # made after everything it is computed from

    @property
    def shape(self):
        return (None, *np.shape(_data(self.value))[1:])

    @property
    def dtype(self):
        return np.asarray(_data(self.value)).dtype

    def __repr__(self):
        name = f" name={self.name!r}" if self.name else ""
        return f"<SymbolicTensor shape={self.shape} dtype={self.dtype}{name}>"

    def __array__(self, *args, **kwargs):
        raise TypeError("a symbolic tensor (made from Input) holds no data: build "
                        "Model(inputs, outputs) and call the model on arrays")

    def __getitem__(self, index):
        return apply(_getitem, self, index)

    # the symbolic tensor always goes first, so a Python number never sets the dtype
    def __add__(self, other): return apply(_add, self, other)
    def __radd__(self, other): return apply(_add, self, other)
    def __sub__(self, other): return apply(_sub, self, other)
    def __rsub__(self, other): return apply(_rsub, self, other)
    def __mul__(self, other): return apply(_mul, self, other)
    def __rmul__(self, other): return apply(_mul, self, other)
    def __truediv__(self, other): return apply(_div, self, other)
    def __rtruediv__(self, other): return apply(_rdiv, self, other)
    def __pow__(self, other): return apply(_pow, self, other)
    def __neg__(self): return apply(_mul, self, -1.0)


def _data(value):
    return getattr(value, "data", value)


def _tensor(x):
    from .tensor import as_tensor
    return as_tensor(x)


def _getitem(x, index): return _tensor(x)[index]
def _add(x, y): return _tensor(x) + y
def _sub(x, y): return _tensor(x) - y
def _mul(x, y): return _tensor(x) * y
def _div(x, y): return _tensor(x) / y
def _rsub(x, y): return y - _tensor(x)
def _rdiv(x, y): return y / _tensor(x)
def _pow(x, y): return _tensor(x) ** y

#: the operations a recorded graph may hold besides layer calls (all a saved model can name)
OPERATIONS = {f.__name__: f for f in (_getitem, _add, _sub, _mul, _div, _rsub, _rdiv, _pow)}


def Input(shape, name=None, dtype="float32", batch_size=None):  # noqa: N802 - Keras' name
    """A model input of ``shape`` (without the batch dimension; ``[]`` for one number a
    sample, such as the time step), ``dtype`` (NumPy's names: ``"float32"``, ``"int32"``).
    ``name`` is the key of this input when the model is called on a dict."""
    if batch_size is not None:
        raise TypeError("Input: batch_size is not supported (the batch size is free)")
    shape = tuple(int(s) for s in shape)
    return SymbolicTensor(np.zeros((1, *shape), np.dtype(dtype)), name=name)


def involves(*values):
    """Whether any of ``values`` (or an item of a list/tuple among them) is symbolic."""
    for v in values:
        if isinstance(v, SymbolicTensor) or (
                isinstance(v, (list, tuple)) and any(isinstance(i, SymbolicTensor) for i in v)):
            return True
    return False


def _map(structure, fn):
    if isinstance(structure, SymbolicTensor):
        return fn(structure)
    if isinstance(structure, (list, tuple)):
        return type(structure)(_map(s, fn) for s in structure)
    if isinstance(structure, dict):
        return {k: _map(v, fn) for k, v in structure.items()}
    return structure


def apply(fn, *args, **kwargs):
    """Record ``fn(*args, **kwargs)`` over symbolic tensors; returns its SymbolicTensor."""
    from .tensor import no_grad

    with no_grad():
        value = fn(*_map(args, lambda t: t.value), **_map(kwargs, lambda t: t.value))
    return SymbolicTensor(value, fn, args, kwargs)


def record(layer, x, *args, training=None, **kwargs):
    """A layer called on symbolic tensors: build it on the batch of one (inference mode) and
    record the call (with ``training`` if one was given)."""
    if training is not None:
        kwargs["training"] = training
    with layer.mode(False):
        return apply(layer, x, *args, **kwargs)


def trace(outputs):
    """The symbolic tensors ``outputs`` depend on, in the order they were made (so each comes
    after those it is computed from, and the layers in the order the code called them)."""
    found, todo = {}, list(outputs)
    while todo:
        t = todo.pop()
        if id(t) not in found:
            found[id(t)] = t
            _map((t.args, t.kwargs), lambda s: todo.append(s) or s)
    return sorted(found.values(), key=lambda t: t.seq)


def run(order, feeds):
    """Compute every tensor of ``order`` (from :func:`trace`) given ``feeds``: {id(input):
    value}; returns {id(tensor): value}."""
    values = dict(feeds)
    for t in order:
        if id(t) in values:
            continue
        if t.fn is None:
            raise ValueError(f"the model needs its input {t.name or t!r}")
        values[id(t)] = t.fn(*_map(t.args, lambda s: values[id(s)]),
                             **_map(t.kwargs, lambda s: values[id(s)]))
    return values

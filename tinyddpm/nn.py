"""Layers, Keras-style: ``Conv2D(16, 3)`` builds its weights from the first input it sees.

A :class:`Module` owns named :class:`Parameter` s (trained), buffers (plain arrays such as
BatchNorm's moving statistics, saved but not trained) and sub-modules, all found by attribute
assignment, as in PyTorch. Every layer checks its input (rank, channels, dtype, NaN) and says
which layer, what it expected and what it received.
"""
from __future__ import annotations

import contextlib
import functools

import numpy as np

from . import functional as F
from . import ops, symbolic
from .tensor import Tensor, as_tensor, is_grad_enabled

_rng = np.random.default_rng()

#: Set to False to skip the NaN/inf scan of the inputs that enter a layer from outside the graph.
CHECK_FINITE = True


def set_seed(seed):
    """Seed the generator behind weight initialisation (and NumPy's global one) for reproducibility.

    ``seed``: a whole number in 0 .. 2**32 - 1 (NumPy's global generator takes no more), or
    None for fresh entropy; ValueError otherwise."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or not 0 <= seed < 2 ** 32):
        raise ValueError(f"seed must be a whole number in 0..{2 ** 32 - 1}, got {seed!r}")
    global _rng
    _rng = np.random.default_rng(seed)
    np.random.seed(seed)


def normal(shape, stddev=1.0, dtype=np.float32):
    """N(0, stddev^2) initial values, from the seeded generator (see :func:`set_seed`)."""
    return (_rng.standard_normal(shape) * stddev).astype(dtype)


def glorot_uniform(shape, dtype=np.float32, rng=None):
    """Keras' default kernel initialiser: U(-l, l), l = sqrt(6 / (fan_in + fan_out)).

    For a conv kernel (kh, kw, in, out): fan_in = kh*kw*in, fan_out = kh*kw*out.
    """
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return (rng or _rng).uniform(-limit, limit, size=shape).astype(dtype)


def _fans(shape):
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    if len(shape) < 2:
        return (shape[0] if shape else 1,) * 2
    return shape[-2] * receptive, shape[-1] * receptive


#: Keras' initialisers by name: shape -> float64 values
INITIALIZERS = {
    "glorot_uniform": lambda shape: glorot_uniform(shape, np.float64),
    "glorot_normal": lambda shape: _rng.normal(0, np.sqrt(2 / sum(_fans(shape))), shape),
    "he_normal": lambda shape: _rng.normal(0, np.sqrt(2 / _fans(shape)[0]), shape),
    "he_uniform": lambda shape: _rng.uniform(-1, 1, shape) * np.sqrt(6 / _fans(shape)[0]),
    "random_normal": lambda shape: _rng.normal(0, 0.05, shape),
    "random_uniform": lambda shape: _rng.uniform(-0.05, 0.05, shape),
    "zeros": np.zeros,
    "ones": np.ones,
}


def _pair_same(value, what, layer):
    """A stride or pool size given as n or (n, n); (n, m) with n != m is not supported."""
    pair = value if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or pair[0] != pair[1] or int(pair[0]) != pair[0] or pair[0] < 1:
        raise ValueError(f"{layer}: {what} must be a whole number >= 1 or a pair of equal ones, "
                         f"got {value!r}")
    return int(pair[0])


class Parameter(Tensor):
    """A tensor that a :class:`Module` trains (``requires_grad`` is always on)."""
    __slots__ = ()

    def __init__(self, data, dtype=None, name=None):
        super().__init__(data, requires_grad=True, dtype=dtype, name=name)


_TAKES_TRAINING = {}


def _takes_training(forward):
    """Whether a ``forward`` (or Keras-style ``call``) has a ``training`` parameter."""
    if forward not in _TAKES_TRAINING:
        import inspect
        try:
            _TAKES_TRAINING[forward] = "training" in inspect.signature(forward).parameters
        except (TypeError, ValueError):
            _TAKES_TRAINING[forward] = False
    return _TAKES_TRAINING[forward]


def _modules_in(container, prefix):
    """(path, module) for every Module in a nest of lists, tuples and dicts."""
    items = container.items() if isinstance(container, dict) else enumerate(container)
    for k, item in items:
        if isinstance(item, Module):
            yield f"{prefix}.{k}", item
        elif isinstance(item, (list, tuple, dict)):
            yield from _modules_in(item, f"{prefix}.{k}")


class _TrackedList(list):
    """A list attribute of a Module that re-registers its layers when it changes (Keras'
    habit: ``self.blocks = []`` then ``self.blocks.append(Block())``)."""

    def _changed(self):
        owner, key = self._owner
        owner._relist(key)

    def _wrap(name):  # noqa: N805 - builds the methods below
        def method(self, *args, **kwargs):
            out = getattr(list, name)(self, *map(self._track, args), **kwargs)
            self._changed()
            return out
        return method

    def _track(self, value):
        return _track(value, *self._owner)

    for _name in ("append", "extend", "insert", "__setitem__", "__delitem__", "__iadd__", "pop",
                  "remove", "clear", "sort", "reverse"):
        locals()[_name] = _wrap(_name)
    del _name


class _TrackedDict(dict):
    """A dict attribute of a Module that re-registers its layers when it changes."""

    def __setitem__(self, k, v):
        super().__setitem__(k, _track(v, *self._owner))
        self._owner[0]._relist(self._owner[1])

    def __delitem__(self, k):
        super().__delitem__(k)
        self._owner[0]._relist(self._owner[1])

    def update(self, *args, **kwargs):
        for k, v in dict(*args, **kwargs).items():
            self[k] = v


def _track(value, owner, key):
    """``value`` with its lists and dicts (at any depth) made to report changes to ``owner``."""
    if isinstance(value, (list, dict)) and value and not any(
            isinstance(v, (Module, list, tuple, dict))
            for v in (value.values() if isinstance(value, dict) else value)):
        return value  # no layers in it (weights shapes, names, ...): left as it is
    if isinstance(value, list):
        tracked = _TrackedList(_track(v, owner, key) for v in value)
    elif isinstance(value, dict):
        tracked = _TrackedDict({k: _track(v, owner, key) for k, v in value.items()})
    elif isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_track(v, owner, key) for v in value)
    else:
        return value
    tracked._owner = (owner, key)
    return tracked


class Module:
    """Base class of layers and models.

    Subclasses set parameters, buffers and sub-modules as attributes (usually in ``build``) and
    implement ``forward``. ``__call__`` builds on first use, checks the input, then forwards.
    """

    #: rank of the input tensor the layer accepts (None: any)
    input_ndim = None

    def __init_subclass__(cls, **kwargs):
        """Every layer remembers the arguments it was made with (``init_args``), so a saved
        model can be rebuilt from a description (``tinyddpm.keras.models.load_model``)."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def recording(self, *args, **kw):
            if "init_args" not in self.__dict__:  # the most derived class's call comes first
                object.__setattr__(self, "init_args", (args, kw))
            init(self, *args, **kw)
        cls.__init__ = recording
    #: whether the input's float dtype must equal the layer's (layers with weights)
    match_dtype = True

    def __init__(self, name=None):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        self.training = True
        self.trainable = True  # False: training leaves this module's weights alone
        self.built = False
        self.name = name
        self.input_channels = None
        self.dtype = np.float32

    def __setattr__(self, key, value):
        if key in self._buffers and not isinstance(value, (Parameter, Module)):
            object.__setattr__(self, key, np.asarray(value))  # updating a buffer keeps it one
            return
        if key == "trainable" and "_modules" in self.__dict__:
            for child in self._modules.values():  # as in Keras: freezing a layer freezes all
                child.trainable = value           # of its sub-layers
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(key, None)
        if isinstance(value, (list, tuple, dict)) and "_modules" in self.__dict__:
            value = _track(value, self, key)  # layers kept in containers are sub-modules too
        object.__setattr__(self, key, value)
        if isinstance(value, Parameter):
            for other in [k for k, p in self._parameters.items() if p is value]:
                del self._parameters[other]  # one name a weight (add_weight's, then this one)
            self._parameters[key] = value
        elif isinstance(value, Module):
            self._attach(key, value)
        elif "_modules" in self.__dict__:
            self._relist(key)

    def _relist(self, key):
        """(Re-)register the modules held, at any depth, in the container ``self.key`` (named
        key.0, key.1.0, key.name, ...), except those with an attribute name of their own."""
        for listed in [k for k in self._modules if k.startswith(f"{key}.")]:
            del self._modules[listed]
        value = self.__dict__.get(key)
        if not isinstance(value, (list, tuple, dict)):
            return
        for path, item in _modules_in(value, key):
            if not any(m is item for m in self._modules.values()):
                self._attach(path, item)

    def _attach(self, key, module):
        for other in [k for k, m in self._modules.items() if m is module and "." in k]:
            del self._modules[other]  # listed first, now an attribute of its own: one name
        if module.name is None:
            module.name = key
        if "training" in self.__dict__ and module.training != self.training:
            module.train(self.training)  # a sub-module follows its parent's mode
        if self.__dict__.get("trainable") is False:
            module.trainable = False  # and a frozen parent's freeze
        self._modules[key] = module

    def register_buffer(self, key, array):
        """A named array that is saved with the weights but not trained."""
        self._buffers[key] = None
        object.__setattr__(self, key, np.asarray(array))

    def add_weight(self, key, shape, initializer="glorot_uniform"):
        """A trained weight of ``shape``; ``initializer``: a Keras name (see
        :data:`INITIALIZERS`) or a function of the shape."""
        if isinstance(initializer, str):
            if initializer not in INITIALIZERS:
                raise ValueError(f"{self._label()}: unknown initializer {initializer!r}; choose "
                                 f"one of {sorted(INITIALIZERS)}, or pass a function of the shape")
            initializer = INITIALIZERS[initializer]
        data = np.asarray(initializer(tuple(shape)), dtype=self.dtype)
        setattr(self, key, Parameter(data, name=key))
        return getattr(self, key)

    def get_weights(self):
        """Every weight as a NumPy array, module by module (trained ones, then the others), as
        Keras' ``get_weights``."""
        self._require_built("get_weights()")
        return [np.array(getattr(w, "data", w)) for _, w in self._named_weights()]

    def set_weights(self, weights):
        """Put ``weights`` (a list as :meth:`get_weights` gives) into the weights, in order."""
        own = self._named_weights()
        if len(weights) != len(own):
            raise ValueError(f"{self._label()}: set_weights needs {len(own)} arrays, got "
                             f"{len(weights)}")
        state = self.state_dict()  # load_state_dict checks each shape, naming the weight
        state.update((name, np.asarray(new)) for (name, _), new in zip(own, weights))
        self.load_state_dict(state)

    def _named_weights(self):
        out = []
        for path, m in self.named_modules():
            for k in (*m._parameters, *m._buffers):
                out.append((f"{path}.{k}" if path else k, getattr(m, k)))
        return out

    # --- traversal ---------------------------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for key, module in self._modules.items():
            yield from module.named_modules(f"{prefix}.{key}" if prefix else key)

    def named_parameters(self):
        for path, module in self.named_modules():
            for key in module._parameters:
                yield (f"{path}.{key}" if path else key), getattr(module, key)

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_trainable_parameters(self, prefix=""):
        """The parameters training updates: all but those inside a module whose ``trainable`` is
        False (as in Keras, e.g. the frozen autoencoder of a latent diffusion model)."""
        if not self.trainable:
            return
        for key in self._parameters:
            yield (f"{prefix}.{key}" if prefix else key), getattr(self, key)
        for key, module in self._modules.items():
            yield from module.named_trainable_parameters(f"{prefix}.{key}" if prefix else key)

    def named_buffers(self):
        for path, module in self.named_modules():
            for key in module._buffers:
                yield (f"{path}.{key}" if path else key), getattr(module, key)

    def count_params(self):
        """Number of weights, trained or not (BatchNorm's moving statistics count, as in Keras)."""
        self._require_built("count_params()")
        return sum(p.size for p in self.parameters()) + sum(b.size for _, b in self.named_buffers())

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def train(self, mode=True):
        """Training mode (``mode=True``) or inference mode for this module and all below it."""
        for _, module in self.named_modules():
            module.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    @contextlib.contextmanager
    def mode(self, training):
        """Run a block in training (True) or inference (False) mode, then put every sub-module
        back in the mode it was in."""
        if self.training == bool(training):
            yield self
            return
        saved = [(m, m.training) for _, m in self.named_modules()]
        self.train(training)
        try:
            yield self
        finally:
            for m, was in saved:
                m.training = was

    def astype(self, dtype):
        """Convert every parameter and buffer (e.g. to float64 for gradient checks), in place."""
        for _, module in self.named_modules():
            module.dtype = np.dtype(dtype).type
            for p in module._parameters.values():
                p.data = p.data.astype(dtype)
            for key in module._buffers:
                object.__setattr__(module, key, getattr(module, key).astype(dtype))
        return self

    # --- saving and loading ------------------------------------------------------------------
    def state_dict(self):
        """{name: array copy} of every parameter and buffer."""
        self._require_built("state_dict()")
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        state.update({name: np.array(b) for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state):
        """Copy arrays into the parameters and buffers; names and shapes must match exactly."""
        self._require_built("load_state_dict()")
        own = dict(self.named_parameters())
        own_buffers = dict(self.named_buffers())
        expected = set(own) | set(own_buffers)
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(f"{self._label()}: state does not match the model: missing "
                             f"{missing or 'nothing'}, unexpected {unexpected or 'nothing'}")
        for name in sorted(expected):
            current = own[name].data if name in own else own_buffers[name]
            value = np.asarray(state[name])
            if value.shape != current.shape:
                raise ValueError(f"{self._label()}: '{name}' has shape {value.shape} in the "
                                 f"state but {current.shape} in the model")
        for name, p in own.items():
            p.data = np.array(state[name], dtype=p.dtype)
        for path, module in self.named_modules():
            for key in module._buffers:
                full = f"{path}.{key}" if path else key
                object.__setattr__(module, key, np.array(state[full], dtype=module.dtype))

    # --- calling -----------------------------------------------------------------------------
    def __call__(self, x, *args, training=None, **kwargs):
        """Build on first use, check the input, then ``forward``; ``training``, as in Keras:
        None keeps the current mode, True or False sets it for this call. Called on a symbolic
        tensor (``Input``, the functional API), it records the call instead."""
        if symbolic.involves(x, args):
            return symbolic.record(self, x, *args, training=training, **kwargs)
        if training is not None and bool(training) != self.training:
            with self.mode(training):
                return self(x, *args, **kwargs)
        if _takes_training(type(self).forward):  # forward(x, training=None), as Keras' call
            kwargs.setdefault("training", self.training)
        return self.forward(self._enter(x), *args, **kwargs)

    def _enter(self, x):
        """The input, checked (and, on first use, the weights built for it)."""
        if self.input_ndim is not None:
            x = self._check_input(x)
            if not self.built:
                self.build(x.shape)
                self.input_channels = x.shape[-1]
                self.built = True
            elif self.input_channels is not None and x.shape[-1] != self.input_channels:
                raise ValueError(f"{self._label()}: expected input of shape "
                                 f"{self._expected_shape()}, received {x.shape}")
        return x

    def build(self, input_shape):
        """Create the weights for an input of this shape (layers with weights override this)."""

    def forward(self, x):  # pragma: no cover - interface
        raise NotImplementedError

    def _label(self):
        return f"{type(self).__name__} '{self.name or type(self).__name__.lower()}'"

    def _expected_shape(self):
        dims = {2: "(N, {})", 4: "(N, H, W, {})"}.get(self.input_ndim, "(..., {})")
        return dims.format(self.input_channels if self.input_channels is not None else "C")

    def _require_built(self, what):
        if not all(m.built or m.input_ndim is None for _, m in self.named_modules()):
            raise RuntimeError(f"{self._label()}: {what} needs the weights, which are created on "
                               "the first call: call the model on an input batch first")

    def _check_input(self, x):
        data = x.data if isinstance(x, Tensor) else np.asarray(x)
        if data.dtype.kind != "f":
            raise TypeError(f"{self._label()}: expected a float input of shape "
                            f"{self._expected_shape()}, received dtype {data.dtype} with shape "
                            f"{data.shape}: convert with .astype(np.float32)")
        if self.match_dtype and data.dtype != self.dtype:
            raise TypeError(f"{self._label()}: expected {np.dtype(self.dtype).name} input, "
                            f"received {data.dtype} (shape {data.shape}); convert the input "
                            f"with .astype(), or the layer with .astype()")
        if data.ndim != self.input_ndim:
            raise ValueError(f"{self._label()}: expected input of shape "
                             f"{self._expected_shape()} (rank {self.input_ndim}), received "
                             f"{data.shape} (rank {data.ndim})")
        # Only data from outside the graph is scanned (a tensor an op made came from checked
        # inputs; a NaN born inside the model shows in the loss, where training stops on it).
        # One cheap sum first; the exact scan runs only when the sum is not finite.
        from_op = isinstance(x, Tensor) and x.from_op
        if (CHECK_FINITE and not from_op and not np.isfinite(data.sum())
                and not np.isfinite(data).all()):
            bad = "NaN" if np.isnan(data).any() else "infinite values"
            raise ValueError(f"{self._label()}: input of shape {data.shape} contains {bad}")
        return x if isinstance(x, Tensor) else Tensor(data)

    def __repr__(self):
        lines = [f"{type(self).__name__}("]
        for key, module in self._modules.items():
            lines.append(f"  ({key}): " + repr(module).replace("\n", "\n  "))
        return "\n".join(lines) + ")" if len(lines) > 1 else f"{type(self).__name__}()"


# -------------------------------------------------------------------------------------------------
# activations
# -------------------------------------------------------------------------------------------------
ACTIVATIONS = {None: None, "linear": None, "relu": ops.relu, "sigmoid": ops.sigmoid,
               "tanh": ops.tanh, "silu": ops.silu, "swish": ops.silu}


def get_activation(activation):
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of "
                         f"{sorted(k for k in ACTIVATIONS if k)} or pass a function")
    return ACTIVATIONS[activation]


def _activate(y, activation):
    return y if activation is None else activation(y)


class Activation(Module):
    """Applies an activation function: ``Activation("relu")``."""

    def __init__(self, activation, name=None):
        super().__init__(name)
        self.activation = get_activation(activation)
        self.built = True

    def forward(self, x):
        x = as_tensor(x)
        return _activate(x, self.activation)


# -------------------------------------------------------------------------------------------------
# layers with weights
# -------------------------------------------------------------------------------------------------
class Dense(Module):
    """y = activation(x @ kernel + bias), kernel (in, units) Glorot-uniform, bias zeros."""
    input_ndim = 2

    def __init__(self, units, activation=None, use_bias=True, name=None):
        super().__init__(name)
        self.units, self.use_bias = int(units), use_bias
        self.activation = get_activation(activation)

    def build(self, input_shape):
        self.add_weight("kernel", (input_shape[-1], self.units))
        self.bias = self.add_weight("bias", (self.units,), "zeros") if self.use_bias else None

    def forward(self, x):
        y = ops.matmul(x, self.kernel)
        if self.bias is not None:
            y = y + self.bias
        return _activate(y, self.activation)


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value), int(value))


class Conv2D(Module):
    """2-D convolution, NHWC; kernel (kh, kw, C_in, filters); ``padding`` 'valid' or 'same'."""
    input_ndim = 4

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None,
                 use_bias=True, name=None):
        super().__init__(name)
        self.filters, self.kernel_size = int(filters), _pair(kernel_size)
        self.strides = _pair_same(strides, "strides", type(self).__name__)
        if padding not in ("valid", "same"):
            raise ValueError(f"Conv2D: padding must be 'valid' or 'same', got {padding!r}")
        self.padding, self.use_bias = padding, use_bias
        self.activation = get_activation(activation)

    def build(self, input_shape):
        self.add_weight("kernel", (*self.kernel_size, input_shape[-1], self.filters))
        self.bias = self.add_weight("bias", (self.filters,), "zeros") if self.use_bias else None

    def forward(self, x):
        kernel, bias, bn = _fold_batchnorm_into(self, self.kernel, self.bias, axis=3)
        y = F.conv2d(x, kernel, bias, stride=self.strides, padding=self.padding)
        y.normalized_by = bn
        return _activate(y, self.activation)


class Conv2DTranspose(Module):
    """Transposed convolution, kernel (kh, kw, filters, C_in) as in Keras; ``strides`` s
    multiplies the size by s (see :func:`tinyddpm.functional.conv2d_transpose`)."""
    input_ndim = 4

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None,
                 use_bias=True, name=None):
        super().__init__(name)
        self.strides = _pair_same(strides, "strides", "Conv2DTranspose")
        self.filters, self.kernel_size = int(filters), _pair(kernel_size)
        self.padding, self.use_bias = padding, use_bias
        self.activation = get_activation(activation)

    def build(self, input_shape):
        self.add_weight("kernel", (*self.kernel_size, self.filters, input_shape[-1]))
        self.bias = self.add_weight("bias", (self.filters,), "zeros") if self.use_bias else None

    def forward(self, x):
        kernel, bias, bn = _fold_batchnorm_into(self, self.kernel, self.bias, axis=2)
        y = F.conv2d_transpose(x, kernel, bias, padding=self.padding, stride=self.strides)
        y.normalized_by = bn
        return _activate(y, self.activation)


class SeparableConv2D(Module):
    """Depthwise k x k convolution (one filter per channel) then a pointwise 1x1 convolution.

    Weights as in Keras: depthwise_kernel (k, k, C_in, 1), pointwise_kernel (1, 1, C_in, filters),
    bias (filters,). Stride 1.
    """
    input_ndim = 4

    def __init__(self, filters, kernel_size, padding="valid", activation=None, use_bias=True,
                 name=None):
        super().__init__(name)
        self.filters, self.kernel_size = int(filters), _pair(kernel_size)
        self.padding, self.use_bias = padding, use_bias
        self.activation = get_activation(activation)

    def build(self, input_shape):
        c = input_shape[-1]
        self.add_weight("depthwise_kernel", (*self.kernel_size, c, 1))
        self.add_weight("pointwise_kernel", (1, 1, c, self.filters))
        self.bias = self.add_weight("bias", (self.filters,), "zeros") if self.use_bias else None

    def forward(self, x):
        kernel, bias, bn = _fold_batchnorm_into(self, self.pointwise_kernel, self.bias, axis=3)
        y = F.depthwise_conv2d(x, self.depthwise_kernel, padding=self.padding)
        y = F.conv2d(y, kernel, bias)
        y.normalized_by = bn
        return _activate(y, self.activation)


class BatchNormalization(Module):
    """Normalises each channel (Keras semantics).

    Training: batch statistics, and moving_mean <- momentum * moving_mean + (1 - momentum) * mean
    (the same for the variance, biased as in Keras). Inference (``eval()``): the moving statistics.
        y = gamma * (x - mean) / sqrt(var + epsilon) + beta
    """
    input_ndim = 4

    def __init__(self, momentum=0.99, epsilon=1e-3, name=None):
        super().__init__(name)
        self.momentum, self.epsilon = momentum, epsilon

    def build(self, input_shape):
        c = input_shape[-1]
        self.add_weight("gamma", (c,), "ones")
        self.add_weight("beta", (c,), "zeros")
        self.register_buffer("moving_mean", np.zeros(c, self.dtype))
        self.register_buffer("moving_variance", np.ones(c, self.dtype))

    def forward(self, x):
        if not (self.training and self.trainable):  # as in Keras, a frozen BatchNorm infers
            if x.normalized_by is self:  # already applied by the layer before (fold_batchnorm)
                return x
            return F.batch_norm_infer(x, self.gamma, self.beta, self.moving_mean,
                                      self.moving_variance, self.epsilon)
        stats = {}
        y = F.batch_norm_train(x, self.gamma, self.beta, self.epsilon, stats=stats)
        m = self.momentum
        self.moving_mean = (m * self.moving_mean + (1 - m) * stats["mean"]).astype(self.dtype)
        self.moving_variance = (m * self.moving_variance + (1 - m) * stats["var"]).astype(self.dtype)
        return y


def fold_batchnorm(layer, bn):
    """Declare that ``bn`` (a BatchNormalization) always directly follows ``layer`` (a Conv2D,
    Conv2DTranspose or SeparableConv2D without activation), so that at inference it can be folded
    into the layer's weights. With s = gamma / sqrt(moving_variance + epsilon):

        BN(conv(x, W) + b) = conv(x, W * s) + (b - moving_mean) * s + beta

    (s scales each output channel of W). When both are in eval mode and no graph is recorded
    (``no_grad()``, as in sampling), ``layer`` computes that directly and ``bn`` passes its
    output through: one pass over the activations fewer per pair, the same numbers up to float
    rounding. Training, and eval mode with gradients recorded, run the two layers as written.
    Returns ``layer``.
    """
    if not isinstance(bn, BatchNormalization):
        raise TypeError(f"fold_batchnorm: expected a BatchNormalization, got {type(bn).__name__}")
    if getattr(layer, "activation", None) is not None:
        raise ValueError(f"fold_batchnorm: {layer._label()} has an activation, which comes "
                         "between it and the batch norm: the two cannot be folded")
    object.__setattr__(layer, "folded_batchnorm", bn)  # not a sub-module: no second copy of bn
    return layer


def _fold_batchnorm_into(layer, kernel, bias, axis):
    """(kernel, bias, bn) for this call: the weights with ``layer``'s folded batch norm applied
    (``axis``: the kernel's output-channel axis) and that batch norm, or the weights unchanged
    and None when nothing is folded (see :func:`fold_batchnorm`)."""
    bn = layer.__dict__.get("folded_batchnorm")
    if (bn is None or layer.training or bn.training or not bn.built or is_grad_enabled()
            or layer.activation is not None):  # an activation set since: it would come between
        return kernel, bias, None
    scale = bn.gamma.data / np.sqrt(bn.moving_variance + bn.epsilon)
    shape = [1] * kernel.ndim
    shape[axis] = -1
    b = 0 if bias is None else bias.data
    return (kernel.data * scale.reshape(shape),
            (b - bn.moving_mean) * scale + bn.beta.data, bn)


class GroupNormalization(Module):
    """Normalises each image over H, W and each group of C/groups channels (Keras semantics)."""
    input_ndim = 4

    def __init__(self, groups=32, epsilon=1e-3, name=None):
        super().__init__(name)
        self.groups, self.epsilon = int(groups), epsilon

    def build(self, input_shape):
        c = input_shape[-1]
        if c % self.groups:
            raise ValueError(f"{self._label()}: {c} channels cannot be split into "
                             f"{self.groups} groups")
        self.add_weight("gamma", (c,), "ones")
        self.add_weight("beta", (c,), "zeros")

    def forward(self, x):
        return F.group_norm(x, self.gamma, self.beta, self.groups, self.epsilon)


# -------------------------------------------------------------------------------------------------
# layers without weights
# -------------------------------------------------------------------------------------------------
class _Stateless(Module):
    input_ndim = 4
    match_dtype = False

    def _enter(self, x):
        self.built = True
        return self._check_input(x)


class MaxPooling2D(_Stateless):
    """Max over pool_size x pool_size windows (strides default to pool_size)."""

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None):
        super().__init__(name)
        self.pool_size = _pair_same(pool_size, "pool_size", type(self).__name__)
        self.strides = _pair_same(strides or pool_size, "strides", type(self).__name__)
        self.padding = padding

    def forward(self, x):
        return F.max_pool2d(x, self.pool_size, self.strides, self.padding)


class UpSampling2D(_Stateless):
    """Nearest-neighbour up-sampling: each pixel becomes a size x size block."""

    def __init__(self, size=2, name=None):
        super().__init__(name)
        self.size = int(size)

    def forward(self, x):
        return F.upsample2d(x, self.size)


def _border_pairs(value):
    """Keras' border argument: n, (nh, nw) or ((top, bottom), (left, right)) -> the last form."""
    if np.ndim(value) == 0:
        value = ((value, value), (value, value))
    elif np.ndim(value) == 1:
        value = ((value[0], value[0]), (value[1], value[1]))
    return tuple(tuple(int(v) for v in pair) for pair in value)


class ZeroPadding2D(_Stateless):
    """Adds rows and columns of zeros: ``padding`` = p, (ph, pw) or ((top, bottom), (left, right))."""

    def __init__(self, padding=1, name=None):
        super().__init__(name)
        self.padding = _border_pairs(padding)

    def forward(self, x):
        return ops.pad(x, ((0, 0), *self.padding, (0, 0)))


class Cropping2D(_Stateless):
    """Removes rows and columns at the borders: ``cropping`` = c, (ch, cw) or ((t, b), (l, r))."""

    def __init__(self, cropping=1, name=None):
        super().__init__(name)
        self.cropping = _border_pairs(cropping)

    def forward(self, x):
        (t, b), (l, r) = self.cropping
        h, w = x.shape[1:3]
        return ops.getitem(x, (slice(None), slice(t, h - b), slice(l, w - r), slice(None)))


class Flatten(Module):
    """(N, ...) -> (N, product of the rest), as Keras' ``Flatten``."""

    def __init__(self, name=None):
        super().__init__(name)
        self.built = True

    def forward(self, x):
        x = as_tensor(x)
        return ops.reshape(x, (x.shape[0], -1))


class Reshape(Module):
    """(N, ...) -> (N, *target_shape), as Keras' ``Reshape`` (one entry may be -1)."""

    def __init__(self, target_shape, name=None):
        super().__init__(name)
        self.target_shape = tuple(int(d) for d in target_shape)
        self.built = True

    def forward(self, x):
        x = as_tensor(x)
        try:
            return ops.reshape(x, (x.shape[0], *self.target_shape))
        except ValueError:
            raise ValueError(f"{self._label()}: cannot reshape {x.shape[1:]} (each sample) to "
                             f"{self.target_shape}") from None


class Dropout(Module):
    """Training: each value is zeroed with probability ``rate`` and the others scaled by
    1 / (1 - rate), so the expected value is unchanged (Keras' ``Dropout``); inference: the
    identity. The draws come from the package's generator (:func:`set_seed`)."""

    def __init__(self, rate, seed=None, name=None):
        super().__init__(name)
        if not 0 <= rate < 1:
            raise ValueError(f"Dropout: rate must lie in [0, 1), got {rate}")
        self.rate, self.built = float(rate), True
        self.rng = np.random.default_rng(seed) if seed is not None else None

    def forward(self, x):
        x = as_tensor(x)
        if not self.training or self.rate == 0:
            return x
        rng = self.rng or _rng
        keep = (rng.random(x.shape, dtype=np.float32) >= self.rate).astype(x.dtype) / np.asarray(1 - self.rate,
                                                                                x.dtype)
        return x * keep


class TimeEncoding(Module):
    """The fixed sinusoidal encoding of the time step (not trained).

    table[t, 2i] = sin(t / 10000^(2i/d)),  table[t, 2i+1] = cos(t / 10000^(2i/d)),  t = 0..T.
    Called on an int array of time steps (N,), it returns the rows (N, d).
    """

    def __init__(self, T, embed_size=64, name=None, dtype=np.float32):
        super().__init__(name)
        if embed_size % 2:
            raise ValueError(f"TimeEncoding: embed_size must be even, got {embed_size}")
        self.T, self.embed_size = int(T), int(embed_size)
        t = np.arange(self.T + 1)[:, None]
        rate = 10000.0 ** (np.arange(0, embed_size, 2) / embed_size)
        table = np.empty((self.T + 1, embed_size))
        table[:, 0::2], table[:, 1::2] = np.sin(t / rate), np.cos(t / rate)
        self.table = table.astype(dtype)
        self.dtype = np.dtype(dtype).type
        self.built = True

    def forward(self, time):  # in the layer's dtype (a model's astype(np.float64) sets it)
        return Tensor(self.table[time].astype(self.dtype, copy=False))

    def _enter(self, time):
        time = np.asarray(time.data if isinstance(time, Tensor) else time)
        if time.dtype.kind not in "iu":
            raise TypeError(f"{self._label()}: expected integer time steps of shape (N,), "
                            f"received dtype {time.dtype}")
        if time.ndim != 1:
            raise ValueError(f"{self._label()}: expected time steps of shape (N,), "
                             f"received {time.shape}")
        if time.size and (time.min() < 0 or time.max() > self.T):
            raise ValueError(f"{self._label()}: time steps must lie in 0..{self.T}, received "
                             f"{time.min()}..{time.max()}")
        return time


class Embedding(Module):
    """A learned table of ``input_dim`` vectors of size ``output_dim`` (Keras' ``Embedding``).

    Called on an int array of indices (N,), it returns the rows (N, output_dim); the backward
    adds each row's gradient into the row it came from. Initialised U(-0.05, 0.05) as in Keras,
    or by ``embeddings_initializer(shape)``.
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer=None, name=None):
        super().__init__(name)
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.add_weight("embeddings", (self.input_dim, self.output_dim), embeddings_initializer
                        or (lambda shape: _rng.uniform(-0.05, 0.05, size=shape)))
        self.built = True

    def forward(self, indices):
        return ops.gather(self.embeddings, indices)

    def _enter(self, indices):
        indices = np.asarray(indices.data if isinstance(indices, Tensor) else indices)
        if indices.dtype.kind not in "iu" or indices.ndim != 1:
            raise TypeError(f"{self._label()}: expected integer indices of shape (N,), received "
                            f"{indices.dtype} {indices.shape}")
        if indices.size and (indices.min() < 0 or indices.max() >= self.input_dim):
            raise ValueError(f"{self._label()}: indices must lie in 0..{self.input_dim - 1}, "
                             f"received {indices.min()}..{indices.max()}")
        return indices


class Sequential(Module):
    """Layers applied one after the other."""

    def __init__(self, layers, name=None):
        super().__init__(name)
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            setattr(self, f"layer{i}", layer)
        self.built = True

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

"""Differentiable operations: each one's forward and backward side by side.

Element-wise ops follow NumPy broadcasting; their backward sums the gradient over the axes that
broadcasting stretched (:func:`unbroadcast`). The image ops (convolutions, pooling, normalisation)
are in ``functional.py`` and call the numba kernels of ``tinyddpm.kernels``; ReLU and ``+``
hand large arrays to ``kernels/elementwise.py``, which runs the same arithmetic on every thread.
"""
from __future__ import annotations

import numpy as np

from . import kernels as K
from .kernels import elementwise as EW
from .tensor import Function, Tensor


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: the backward of NumPy broadcasting."""
    if grad.shape == shape:
        return grad
    if len(shape) == 4 and grad.ndim == 4 and shape == (grad.shape[0], 1, 1, grad.shape[3]):
        return EW.pixel_sum(grad)  # a per-pixel (N, 1, 1, C) addend, summed on every thread
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


def _shape(x):
    return np.shape(x)


# ---------------------------------------------------------------------------------------------
# arithmetic
# ---------------------------------------------------------------------------------------------
class Add(Function):
    """z = x + y;  dz/dx = 1, dz/dy = 1."""
    @staticmethod
    def forward(ctx, x, y):
        ctx.shapes = _shape(x), _shape(y)
        return EW.add(x, y)

    @staticmethod
    def backward(ctx, g):
        sx, sy = ctx.shapes
        return unbroadcast(g, sx), unbroadcast(g, sy)


class Sub(Function):
    """z = x - y;  dz/dx = 1, dz/dy = -1."""
    @staticmethod
    def forward(ctx, x, y):
        ctx.shapes = _shape(x), _shape(y)
        return np.subtract(x, y)

    @staticmethod
    def backward(ctx, g):
        sx, sy = ctx.shapes
        return unbroadcast(g, sx), unbroadcast(-g, sy)


class Mul(Function):
    """z = x * y;  dz/dx = y, dz/dy = x."""
    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return np.multiply(x, y)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved
        gx = unbroadcast(g * y, _shape(x)) if ctx.needs_input_grad[0] else None
        gy = unbroadcast(g * x, _shape(y)) if ctx.needs_input_grad[1] else None
        return gx, gy


class Div(Function):
    """z = x / y;  dz/dx = 1/y, dz/dy = -x/y^2."""
    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return np.divide(x, y)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved
        gx = unbroadcast(g / y, _shape(x)) if ctx.needs_input_grad[0] else None
        gy = unbroadcast(-g * x / (y * y), _shape(y)) if ctx.needs_input_grad[1] else None
        return gx, gy


class Power(Function):
    """z = x ** p for a constant p;  dz/dx = p x^(p-1)."""
    @staticmethod
    def forward(ctx, x, p):
        ctx.save_for_backward(x)
        ctx.p = p
        return np.power(x, p)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g * ctx.p * np.power(x, ctx.p - 1), None


class Neg(Function):
    """z = -x."""
    @staticmethod
    def forward(ctx, x):
        return np.negative(x)

    @staticmethod
    def backward(ctx, g):
        return -g


class Maximum(Function):
    """z = max(x, y) element-wise; the gradient goes to the larger (split equally on ties)."""
    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return np.maximum(x, y)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved
        share = (x > y) + 0.5 * (x == y)
        return unbroadcast(g * share, _shape(x)), unbroadcast(g * (1 - share), _shape(y))


class Minimum(Function):
    """z = min(x, y) element-wise; the gradient goes to the smaller (split equally on ties)."""
    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return np.minimum(x, y)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved
        share = (x < y) + 0.5 * (x == y)
        return unbroadcast(g * share, _shape(x)), unbroadcast(g * (1 - share), _shape(y))


# ---------------------------------------------------------------------------------------------
# element-wise functions
# ---------------------------------------------------------------------------------------------
class Exp(Function):
    """y = e^x;  dy/dx = y."""
    @staticmethod
    def forward(ctx, x):
        y = np.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        return g * ctx.saved[0]


class Log(Function):
    """y = ln x;  dy/dx = 1/x."""
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log(x)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.saved[0]


class Sqrt(Function):
    """y = sqrt(x);  dy/dx = 1 / (2 y)."""
    @staticmethod
    def forward(ctx, x):
        y = np.sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        return g / (2 * ctx.saved[0])


class Abs(Function):
    """y = |x|;  dy/dx = sign(x) (0 at 0)."""
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.abs(x)

    @staticmethod
    def backward(ctx, g):
        return g * np.sign(ctx.saved[0])


class ReLU(Function):
    """y = max(x, 0);  dy/dx = 1 where x > 0, else 0."""
    @staticmethod
    def forward(ctx, x):
        y = EW.relu(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        return EW.relu_backward(g, ctx.saved[0])


class Sigmoid(Function):
    """y = 1 / (1 + e^-x);  dy/dx = y (1 - y)."""
    @staticmethod
    def forward(ctx, x):
        y = sigmoid_array(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y = ctx.saved[0]
        return g * y * (1 - y)


class Tanh(Function):
    """y = tanh x;  dy/dx = 1 - y^2."""
    @staticmethod
    def forward(ctx, x):
        y = np.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y = ctx.saved[0]
        return g * (1 - y * y)


class SiLU(Function):
    """y = x sigmoid(x);  dy/dx = s (1 + x (1 - s)) with s = sigmoid(x)."""
    @staticmethod
    def forward(ctx, x):
        fused = EW.silu(x)                 # one pass on every thread; None: NumPy's turn
        if fused is None:
            s = sigmoid_array(x)
            fused = x * s, s
        ctx.save_for_backward(x, fused[1])
        return fused[0]

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved
        return EW.silu_backward(g, x, s)


def sigmoid_array(x):
    """Numerically stable logistic function on an array (no overflow for large |x|)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# linear algebra and reductions
# ---------------------------------------------------------------------------------------------
class MatMul(Function):
    """Z = X @ Y;  dL/dX = G @ Y^T, dL/dY = X^T @ G (batched over leading axes)."""
    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        if x.ndim == 2 and y.ndim == 2:         # a Dense layer's product: on every thread
            return K.matmul(x, y)
        return np.matmul(x, y)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved
        if x.ndim == 1 and y.ndim == 1:
            return g * y, g * x
        if x.ndim == 2 and y.ndim == 2:
            return (K.matmul(g, y, trans_b=True) if ctx.needs_input_grad[0] else None,
                    K.matmul(x, g, trans_a=True) if ctx.needs_input_grad[1] else None)
        # treat a vector as a 1-row (left) or 1-column (right) matrix
        x2 = x[None, :] if x.ndim == 1 else x
        y2 = y[:, None] if y.ndim == 1 else y
        g2 = np.expand_dims(g, -2) if x.ndim == 1 else g
        g2 = np.expand_dims(g2, -1) if y.ndim == 1 else g2
        gx = gy = None
        if ctx.needs_input_grad[0]:
            gx = unbroadcast(g2 @ np.swapaxes(y2, -1, -2), x2.shape).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            gy = unbroadcast(np.swapaxes(x2, -1, -2) @ g2, y2.shape).reshape(y.shape)
        return gx, gy


class Attention(Function):
    """Scaled dot-product attention (Vaswani et al. 2017, eq. 1), batched over leading axes:

        S = Q K^T / sqrt(d),   A = softmax(S) over the last axis,   Z = A V

    Q (..., L, d), K (..., M, d), V (..., M, e) -> Z (..., L, e). Backward, with G = dL/dZ:

        dV = A^T G,   dA = G V^T,   dS = A * (dA - sum(dA * A, last axis)),
        dQ = dS K / sqrt(d),   dK = dS^T Q / sqrt(d).

    The softmax subtracts each row's maximum first, so large scores cannot overflow. The work is
    ``kernels/attention.py`` (fused, one image and head per thread); ``kernels/reference.py``
    has the same equations as NumPy products, and the tests compare the two.
    """
    @staticmethod
    def forward(ctx, q, k, v):
        if (q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]
                or not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
            raise ValueError(f"attention: Q {q.shape}, K {k.shape} and V {v.shape} do not fit "
                             "(the same leading axes; Q and K the same last axis, K and V the same "
                             "second-last)")
        z, a = K.attention_forward(q, k, v)    # kernels/attention.py; NumPy: reference.py
        ctx.save_for_backward(q, k, v, a)
        return z

    @staticmethod
    def backward(ctx, g):
        return K.attention_backward(g, *ctx.saved)


def _expand_reduced(g, shape, axis, keepdims):
    """Reshape the gradient of a reduction so it broadcasts against the input."""
    if axis is None or keepdims:
        return g if keepdims else np.reshape(g, (1,) * len(shape))
    axes = (axis,) if np.isscalar(axis) else axis
    return np.expand_dims(g, tuple(a % len(shape) for a in axes))


class Sum(Function):
    """y = sum of x over ``axis``;  dy/dx = 1 (broadcast back)."""
    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.args = x.shape, axis, keepdims
        return np.sum(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        shape, axis, keepdims = ctx.args
        return np.broadcast_to(_expand_reduced(g, shape, axis, keepdims), shape).copy()


class Mean(Function):
    """y = mean of x over ``axis``;  dy/dx = 1/n."""
    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.args = x.shape, axis, keepdims
        y = np.mean(x, axis=axis, keepdims=keepdims)
        ctx.n = x.size // np.size(y)
        return y

    @staticmethod
    def backward(ctx, g):
        shape, axis, keepdims = ctx.args
        return np.broadcast_to(_expand_reduced(g, shape, axis, keepdims) / ctx.n, shape).copy()


class Max(Function):
    """y = max of x over ``axis``; the gradient goes to the maxima (split equally on ties)."""
    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        y = np.max(x, axis=axis, keepdims=True)
        ctx.save_for_backward(x, y)
        ctx.args = axis, keepdims
        return y if keepdims else (y.reshape(()) if axis is None else np.squeeze(y, axis))

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved
        axis, keepdims = ctx.args
        mask = (x == y)
        count = mask.sum(axis=axis, keepdims=True)
        return mask * (_expand_reduced(g, x.shape, axis, keepdims) / count)


# ---------------------------------------------------------------------------------------------
# shape ops
# ---------------------------------------------------------------------------------------------
class Reshape(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return np.reshape(x, shape)

    @staticmethod
    def backward(ctx, g):
        return np.reshape(g, ctx.shape)


class Transpose(Function):
    @staticmethod
    def forward(ctx, x, axes=None):
        ctx.axes = axes
        return np.transpose(x, axes)

    @staticmethod
    def backward(ctx, g):
        return np.transpose(g, None if ctx.axes is None else np.argsort(ctx.axes))


class GetItem(Function):
    """y = x[index] (basic or integer-array indexing);  the gradient is scattered back."""
    @staticmethod
    def forward(ctx, x, index):
        ctx.args = x.shape, x.dtype, index
        return x[index]

    @staticmethod
    def backward(ctx, g):
        shape, dtype, index = ctx.args
        out = np.zeros(shape, dtype)
        if _is_basic_index(index):
            out[index] = g  # slices and integers pick each element at most once
        else:
            np.add.at(out, index, g)  # integer arrays may repeat an element: accumulate
        return out, None


def _is_basic_index(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (slice, int, np.integer, type(None), type(Ellipsis))) for i in items)


class Pad(Function):
    """Zero padding; ``pad_width`` as for ``np.pad``. The backward crops."""
    @staticmethod
    def forward(ctx, x, pad_width):
        pad_width = [tuple(p) for p in pad_width]
        ctx.crop = tuple(slice(a, a + n) for (a, _), n in zip(pad_width, x.shape))
        return np.pad(x, pad_width)

    @staticmethod
    def backward(ctx, g):
        return np.ascontiguousarray(g[ctx.crop])


class Concatenate(Function):
    """y = concatenate(xs, axis);  the gradient is split back along ``axis``."""
    @staticmethod
    def forward(ctx, *xs, axis=-1):
        ctx.axis = axis
        ctx.splits = np.cumsum([x.shape[axis] for x in xs])[:-1]
        if len(xs) == 2 and axis in (-1, xs[0].ndim - 1):  # the U-Net's skip: on every thread
            return EW.concat_channels(*xs)
        return np.concatenate(xs, axis=axis)

    @staticmethod
    def backward(ctx, g):
        if len(ctx.splits) == 1 and ctx.axis in (-1, g.ndim - 1):
            return EW.split_channels(g, int(ctx.splits[0]))
        return tuple(np.ascontiguousarray(p) for p in np.split(g, ctx.splits, axis=ctx.axis))


class Gather(Function):
    """y = table[indices] (rows of a table, e.g. the time encoding);  scatter-add backward."""
    @staticmethod
    def forward(ctx, table, indices):
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu":
            raise TypeError(f"gather: indices must be integers, got {indices.dtype}")
        if indices.size and (indices.min() < -len(table) or indices.max() >= len(table)):
            raise IndexError(f"gather: index out of range for a table of {len(table)} rows "
                             f"(got {indices.min()}..{indices.max()})")
        ctx.args = table.shape, indices
        return table[indices]

    @staticmethod
    def backward(ctx, g):
        shape, indices = ctx.args
        out = np.zeros(shape, g.dtype)
        np.add.at(out, indices, g)
        return out, None


# ---------------------------------------------------------------------------------------------
# public functional API
# ---------------------------------------------------------------------------------------------
def add(x, y): return Add.apply(x, y)
def sub(x, y): return Sub.apply(x, y)
def mul(x, y): return Mul.apply(x, y)
def div(x, y): return Div.apply(x, y)
def neg(x): return Neg.apply(x)
def exp(x): return Exp.apply(x)
def log(x): return Log.apply(x)
def sqrt(x): return Sqrt.apply(x)
def abs(x): return Abs.apply(x)  # noqa: A001 - mirrors np.abs
def relu(x): return ReLU.apply(x)
def sigmoid(x): return Sigmoid.apply(x)
def tanh(x): return Tanh.apply(x)
def silu(x): return SiLU.apply(x)
def maximum(x, y): return Maximum.apply(x, y)
def minimum(x, y): return Minimum.apply(x, y)
def matmul(x, y): return MatMul.apply(x, y)
def attention(q, k, v): return Attention.apply(q, k, v)
def reshape(x, shape): return Reshape.apply(x, shape=tuple(shape) if np.iterable(shape) else (shape,))
def transpose(x, axes=None): return Transpose.apply(x, axes=None if axes is None else tuple(axes))
def getitem(x, index): return GetItem.apply(x, index)
def pad(x, pad_width): return Pad.apply(x, pad_width=pad_width)
def gather(table, indices): return Gather.apply(table, indices)


def power(x, p):
    """x ** p for a constant exponent p (use exp/log for a tensor exponent)."""
    if isinstance(p, Tensor):
        return exp(mul(p, log(x)))
    return Power.apply(x, p)


def sum(x, axis=None, keepdims=False):  # noqa: A001 - mirrors np.sum
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return Mean.apply(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001 - mirrors np.max
    return Max.apply(x, axis=axis, keepdims=keepdims)


def concatenate(xs, axis=-1):
    return Concatenate.apply(*xs, axis=axis)

"""The autograd core: a ``Tensor`` that remembers how it was made, and ``backward()``.

Every differentiable operation is a :class:`Function` with a ``forward`` and a ``backward``
written side by side (see ``ops.py``). Calling ``Function.apply`` runs ``forward`` on plain NumPy
arrays and, when gradients are wanted, records the inputs and a context object on the output.
``Tensor.backward`` then walks that graph in reverse topological order and calls each
``backward`` with the gradient of the final output with respect to the op's output
(the chain rule: dL/dx = dL/dy * dy/dx).
"""
from __future__ import annotations

import contextlib

import numpy as np

from ._threads import adapt as adapt_threads  # all cores when quiet, passive when contended
from .kernels.elementwise import add  # x + y, on every thread for large arrays

_GRAD_ENABLED = True


@contextlib.contextmanager
def no_grad():
    """Context manager in which no graph is recorded (inference, optimizer steps)."""
    global _GRAD_ENABLED
    previous, _GRAD_ENABLED = _GRAD_ENABLED, False
    try:
        yield
    finally:
        _GRAD_ENABLED = previous


def is_grad_enabled():
    return _GRAD_ENABLED


def _as_float_array(data, dtype=None):
    if isinstance(data, Tensor):
        data = data.data
    arr = np.asarray(data)
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    if arr.dtype in (np.float32, np.float64):
        return arr
    if arr.dtype.kind in "biuf":
        return arr.astype(np.float32)
    raise TypeError(f"Tensor: cannot hold data of dtype {arr.dtype}; expected numbers")


class Context:
    """Scratch space an op's ``forward`` fills for its ``backward``."""

    def save_for_backward(self, *arrays):
        self.saved = arrays


class Function:
    """Base class of every differentiable op.

    Subclasses define ``forward(ctx, *arrays, **kwargs) -> array`` and
    ``backward(ctx, grad) -> tuple of arrays (or None)``, one gradient per positional input.
    """

    @staticmethod
    def forward(ctx, *args, **kwargs):  # pragma: no cover - interface
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **kwargs):
        tensors = [x if isinstance(x, Tensor) else None for x in inputs]
        arrays = [x.data if isinstance(x, Tensor) else x for x in inputs]
        ctx = Context()
        ctx.needs_input_grad = tuple(t is not None and t.requires_grad for t in tensors)
        track = _GRAD_ENABLED and any(ctx.needs_input_grad)
        adapt_threads()  # the kernels' thread count for a busy or a quiet machine (_threads.py)
        out = Tensor(cls.forward(ctx, *arrays, **kwargs), requires_grad=track)
        out.from_op = True
        if track:
            out._ctx = (cls, ctx, tensors)
        return out


class Tensor:
    """An n-dimensional array (float32, or float64 for gradient checks) with a gradient.

    ``requires_grad=True`` marks a leaf whose gradient ``backward()`` accumulates into ``.grad``.
    """

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "name", "from_op", "normalized_by",
                 "__weakref__")
    __array_priority__ = 1000  # so ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None, name=None):
        self.data = _as_float_array(data, dtype)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None
        self.name = name
        self.from_op = False  # made by an op from other tensors (see nn.Module._check_input)
        self.normalized_by = None  # the BatchNormalization already folded in (nn.fold_batchnorm)

    # --- array-like conveniences -------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        """``np.asarray(tensor)``: its values (as ``.data``), e.g. for ``plt.imshow``."""
        return self.data if dtype is None else self.data.astype(dtype, copy=False)

    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, threshold=8, precision=4)}{grad})"

    def numpy(self):
        return self.data

    def item(self):
        return self.data.item()

    def detach(self):
        """A new leaf tensor sharing the data, cut from the graph."""
        return Tensor(self.data)

    def astype(self, dtype):
        return Tensor(self.data.astype(dtype), requires_grad=self.requires_grad)

    # --- backpropagation ---------------------------------------------------------------------
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is the gradient of the final loss with respect to ``self``; it may be left out
        only when ``self`` holds a single number (a loss), where it is 1.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input of it had requires_grad=True, or it was made under no_grad())")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a single number; this "
                                   f"tensor has shape {self.shape}: pass grad=np.ones_like(...)")
            grad = np.ones_like(self.data)
        grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward(): grad has shape {grad.shape}, tensor has {self.shape}")

        grads = {id(self): grad}
        for node in reversed(_topological_order(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._ctx is None:  # a leaf: accumulate
                node.grad = g.copy() if node.grad is None else node.grad + g
                continue
            fn, ctx, parents = node._ctx
            parent_grads = fn.backward(ctx, g)
            if not isinstance(parent_grads, tuple):
                parent_grads = (parent_grads,)
            for parent, pg in zip(parents, parent_grads):
                if parent is None or pg is None or not parent.requires_grad:
                    continue
                key = id(parent)
                grads[key] = pg if key not in grads else add(grads[key], pg)

    def zero_grad(self):
        self.grad = None

    # --- operators (the ops live in ops.py) ----------------------------------------------------
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __pow__(self, exponent): return ops.power(self, exponent)
    def __neg__(self): return ops.neg(self)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __rmatmul__(self, other): return ops.matmul(other, self)
    def __getitem__(self, index): return ops.getitem(self, index)

    def sum(self, axis=None, keepdims=False): return ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return ops.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return ops.max(self, axis, keepdims)
    def reshape(self, *shape): return ops.reshape(self, shape[0] if len(shape) == 1 else shape)
    def transpose(self, *axes): return ops.transpose(self, axes or None)
    @property
    def T(self): return ops.transpose(self, None)
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def sqrt(self): return ops.sqrt(self)
    def abs(self): return ops.abs(self)
    def relu(self): return ops.relu(self)
    def sigmoid(self): return ops.sigmoid(self)
    def tanh(self): return ops.tanh(self)
    def silu(self): return ops.silu(self)


def _topological_order(root):
    """Nodes of the graph below ``root``, each after all of its inputs (iterative DFS)."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            for parent in node._ctx[2]:
                if parent is not None and parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return order


def as_tensor(x):
    """``x`` itself if it is a Tensor, else a Tensor holding it (no gradient)."""
    return x if isinstance(x, Tensor) else Tensor(x)


def tensor(data, requires_grad=False, dtype=None):
    """Shorthand for ``Tensor(data, requires_grad, dtype)``."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


from . import ops  # noqa: E402  (ops needs Tensor; Tensor's operators need ops)

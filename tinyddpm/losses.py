"""Losses, Keras-style: ``loss(y_true, y_pred)`` returns the mean over all elements (a scalar)."""
from __future__ import annotations

import numpy as np

from . import ops
from .tensor import Function, Tensor


def _check(name, y_true, y_pred):
    true_shape = np.shape(y_true.data if isinstance(y_true, Tensor) else y_true)
    pred_shape = np.shape(y_pred.data if isinstance(y_pred, Tensor) else y_pred)
    if true_shape != pred_shape:
        raise ValueError(f"{name}: y_true has shape {true_shape} but y_pred has shape "
                         f"{pred_shape}; they must match")


class _HuberFn(Function):
    """L = mean(h(d)), d = pred - true,  h(d) = d^2 / 2 if |d| <= delta else delta (|d| - delta / 2).

    dL/dpred = clip(d, -delta, delta) / n.
    """
    @staticmethod
    def forward(ctx, y_true, y_pred, delta=1.0):
        d = y_pred - y_true
        a = np.abs(d)
        quadratic = np.minimum(a, delta)
        ctx.save_for_backward(d)
        ctx.delta = delta
        # 0.5 q^2 + delta (|d| - q) equals both branches of h
        return np.mean(0.5 * quadratic * quadratic + delta * (a - quadratic), dtype=np.float64).astype(d.dtype)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved
        grad = np.clip(d, -ctx.delta, ctx.delta) * (g / d.size)
        return -grad, grad


class Huber:
    """Huber loss: quadratic for errors below ``delta``, linear above (robust to outliers)."""

    def __init__(self, delta=1.0):
        if isinstance(delta, bool) or not isinstance(delta, (int, float, np.integer, np.floating)) \
                or not np.isfinite(delta) or delta <= 0:
            raise ValueError(f"Huber: delta must be a finite number > 0, got {delta!r}")
        self.delta = float(delta)

    def __call__(self, y_true, y_pred):
        _check("Huber", y_true, y_pred)
        return _HuberFn.apply(y_true, y_pred, delta=self.delta)


class MeanAbsoluteError:
    """MAE = mean |y_pred - y_true|  (the DDPM authors found it worked better than MSE)."""

    def __call__(self, y_true, y_pred):
        _check("MeanAbsoluteError", y_true, y_pred)
        return ops.mean(ops.abs(ops.sub(y_pred, y_true)))


class MeanSquaredError:
    """MSE = mean (y_pred - y_true)^2."""

    def __call__(self, y_true, y_pred):
        _check("MeanSquaredError", y_true, y_pred)
        return ops.mean(ops.power(ops.sub(y_pred, y_true), 2))


class _SparseCategoricalCrossentropyFn(Function):
    """L = mean_i [ logsumexp(z_i) - z_i[y_i] ] = mean_i -log softmax(z_i)[y_i]   (logits z, (N, K)).

    Forward: logsumexp(z) = m + log sum exp(z - m), m = max(z)  (no overflow for large logits).
    dL/dz = (softmax(z) - onehot(y)) / N.
    """
    @staticmethod
    def forward(ctx, y_true, logits):
        n = logits.shape[0]
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        log_probs = shifted - np.log(sum_exp)
        ctx.save_for_backward(exp / sum_exp, y_true)
        return np.asarray(-np.mean(log_probs[np.arange(n), y_true], dtype=np.float64),
                          dtype=logits.dtype)

    @staticmethod
    def backward(ctx, g):
        probs, y_true = ctx.saved
        n = probs.shape[0]
        grad = probs.copy()
        grad[np.arange(n), y_true] -= 1
        return None, grad * (g / n)


class SparseCategoricalCrossentropy:
    """Softmax cross-entropy with integer labels: ``loss(labels (N,), logits (N, K))``.

    Only ``from_logits=True`` is supported (the model outputs logits; the softmax is fused into
    the loss so it stays stable, as with Keras' ``from_logits=True``).
    """

    def __init__(self, from_logits=True):
        if not from_logits:
            raise ValueError("SparseCategoricalCrossentropy: only from_logits=True is supported; "
                             "give the loss the model's logits, without a softmax")
        self.from_logits = True

    def __call__(self, y_true, y_pred):
        labels = np.asarray(y_true.data if isinstance(y_true, Tensor) else y_true)
        logits_shape = np.shape(y_pred.data if isinstance(y_pred, Tensor) else y_pred)
        if len(logits_shape) != 2 or labels.shape != logits_shape[:1]:
            raise ValueError(f"SparseCategoricalCrossentropy: expected labels of shape (N,) and "
                             f"logits of shape (N, K), got {labels.shape} and {logits_shape}")
        if labels.dtype.kind not in "iu":
            if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
                labels = labels.astype(np.int64)
            else:
                raise TypeError(f"SparseCategoricalCrossentropy: labels must be integers, got "
                                f"dtype {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= logits_shape[1]):
            raise ValueError(f"SparseCategoricalCrossentropy: labels must lie in "
                             f"0..{logits_shape[1] - 1}, got {labels.min()}..{labels.max()}")
        return _SparseCategoricalCrossentropyFn.apply(labels.astype(np.intp), y_pred)


MAE, MSE = MeanAbsoluteError, MeanSquaredError


def get(loss):
    """A loss object from an instance or a Keras name ('huber', 'mae', 'mse', 'sparse_categorical_crossentropy')."""
    if callable(loss):
        return loss
    names = {"huber": Huber, "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
             "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
             "sparse_categorical_crossentropy": SparseCategoricalCrossentropy}
    if loss not in names:
        raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(names)} or pass a loss object")
    return names[loss]()

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


MAE, MSE = MeanAbsoluteError, MeanSquaredError


def get(loss):
    """A loss object from an instance or a Keras name ('huber', 'mae', 'mse')."""
    if callable(loss):
        return loss
    names = {"huber": Huber, "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
             "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError}
    if loss not in names:
        raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(names)} or pass a loss object")
    return names[loss]()

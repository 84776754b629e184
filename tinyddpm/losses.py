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


class HybridLoss:
    r"""The hybrid loss of a model that learns its variances (Nichol & Dhariwal, 2021, eq. 16):

    .. math::

        L_\text{hybrid} = L_\text{simple} + \lambda L_\text{vlb}, \qquad \lambda = 0.001

        L_\text{simple} = \text{mean}\,\|\epsilon - \epsilon_\theta(x_t, t)\|^2
        \quad\text{(Ho et al., 2020, eq. 14)}

        L_\text{vlb} = T \cdot L_{t-1}, \quad
        L_{t-1} = D_{KL}(q(x_{t-1} | x_t, x_0) \| p_\theta(x_{t-1} | x_t)) \ (t > 1), \quad
        L_0 = -\log p_\theta(x_0 | x_1) \ (t = 1)

    in bits per dimension: each image's term at its own random t is an unbiased estimate of the
    bound's sum over t divided by T (the paper's code multiplies it by T / 1000, i.e. lambda T).
    The reverse step is p_theta(x_{t-1} | x_t) = N(mu_theta, Sigma_theta) with the learned
    variance (eq. 15)

    .. math::

        \Sigma_\theta = \exp(v' \log\beta_t + (1 - v') \log\tilde\beta_t), \qquad v' = (v + 1) / 2

    where v is the model's second output (the paper's code maps it from [-1, 1] to [0, 1]), and
    mu_theta is computed from eps_theta with its gradient stopped: L_vlb trains the variance only,
    L_simple the mean. With eps_theta, mu_theta - tilde mu_t = -beta_t / (sqrt(alpha_t)
    sqrt(1 - abar_t)) (eps_theta - eps), so the KL needs no x_0 estimate (exact at every t);
    the decoder term (t = 1) is :class:`tinyddpm.likelihood.DiscretizedGaussianLogLikelihood`.

    Usage: ``model = build_improved_model(learn_sigma=True)``;
    ``model.compile(loss=HybridLoss(), optimizer=...)`` (the loss takes the model's schedule);
    data from ``prepare_dataset(X, ..., target="hybrid")``, whose targets are
    ``{"noise", "X", "time"}``. ``y_pred``: (N, H, W, 2C), eps_theta then v.

    Errors: ValueError for a model that does not learn its variances, targets without
    "noise", "X" and "time", or a prediction without its 2C channels.
    """

    def __init__(self, lambda_vlb=0.001):
        if isinstance(lambda_vlb, bool) or not isinstance(lambda_vlb, (int, float)) or \
                not np.isfinite(lambda_vlb) or lambda_vlb < 0:
            raise ValueError(f"HybridLoss: lambda_vlb must be a finite number >= 0, got "
                             f"{lambda_vlb!r}")
        self.lambda_vlb = float(lambda_vlb)
        self.schedule = None

    def bind(self, model):
        """Take the model's schedule (``Model.compile`` calls this)."""
        if not (getattr(model, "config", None) or {}).get("learn_sigma"):
            raise ValueError("HybridLoss trains a model that learns its variances: "
                             "td.build_improved_model(learn_sigma=True); for the others use "
                             "Huber(), 'mse' or 'mae'")
        from .diffusion import model_schedule
        from .likelihood import posterior_variance

        alpha, abar, beta = (np.asarray(a, np.float64) for a in model_schedule(model))
        self.schedule = {"T": len(beta) - 1, "log_beta": np.log(np.where(beta > 0, beta, 1)),
                         "log_beta_tilde": posterior_variance(alpha, abar, beta)[1],
                         "c": beta / np.sqrt(alpha) / np.sqrt(np.where(abar < 1, 1 - abar, 1))}
        return self

    def __call__(self, y_true, y_pred):
        from .likelihood import (DiscretizedGaussianLogLikelihood, learned_log_variance,
                                 normal_kl_tensor)

        if self.schedule is None:
            raise ValueError("HybridLoss: compile the model with it first, model.compile("
                             "loss=HybridLoss(), ...): it needs the model's schedule")
        if not isinstance(y_true, dict) or not {"noise", "X", "time"} <= set(y_true):
            raise ValueError("HybridLoss: the targets must be {'noise', 'X', 'time'}: prepare "
                             "the data with prepare_dataset(X, ..., target='hybrid')")
        y_pred = y_pred if isinstance(y_pred, Tensor) else Tensor(y_pred)
        eps = np.asarray(y_true["noise"])
        x0, t = np.asarray(y_true["X"]), np.asarray(y_true["time"])
        c_ = eps.shape[-1]
        if y_pred.shape != eps.shape[:-1] + (2 * c_,):
            raise ValueError(f"HybridLoss: y_pred must have shape {eps.shape[:-1] + (2 * c_,)} "
                             f"(eps then v), got {y_pred.shape}")
        eps_theta, v = y_pred[..., :c_], y_pred[..., c_:]
        simple = ops.mean((eps_theta - eps) ** 2)
        s = self.schedule
        per_image = (len(t),) + (1,) * (eps.ndim - 1)
        dtype = y_pred.dtype
        log_beta = s["log_beta"][t].reshape(per_image).astype(dtype)
        log_beta_tilde = s["log_beta_tilde"][t].reshape(per_image).astype(dtype)
        log_var = learned_log_variance(v, log_beta, log_beta_tilde)
        # mu_theta - tilde mu_t, a constant (the mean's gradient is stopped)
        shift = (-s["c"][t].reshape(per_image) * (eps_theta.data - eps)).astype(dtype)
        kl = normal_kl_tensor(np.zeros_like(shift), log_beta_tilde, shift, log_var)
        n = len(t)
        later = (t > 1).astype(dtype).reshape(per_image)
        vlb = ops.sum(kl * later)
        first = np.flatnonzero(t == 1)
        if len(first):
            decoder = DiscretizedGaussianLogLikelihood.apply(
                (x0[first] + shift[first]).astype(dtype), log_var[first] * 0.5, x=x0[first])
            vlb = vlb - ops.sum(decoder)
        vlb = vlb * (1.0 / (n * eps[0].size * np.log(2)))      # bits per dimension, per image
        return simple + vlb * (self.lambda_vlb * s["T"])

"""Batch and group normalisation, fused numba loops (statistics accumulated in float64).

Batch norm, per channel c over the M = N*H*W values of a batch:
    mean_c = (1/M) sum x,   var_c = (1/M) sum (x - mean_c)^2,   xhat = (x - mean_c) / sqrt(var_c + eps)
    y = gamma_c * xhat + beta_c
Backward (dy -> dx), with sums over the same M values:
    dx = gamma_c / sqrt(var_c + eps) * (dy - mean(dy) - xhat * mean(dy * xhat))
    dgamma_c = sum dy * xhat,   dbeta_c = sum dy
Group norm is the same with statistics per image and per group of channels (over H, W and the
C/G channels of the group).
"""
import numpy as np
from numba import njit

@njit(cache=True)
def _channel_moments(x2):
    """Per-column sum and sum of squares of x2 (M, C), in float64."""
    m, c = x2.shape
    acc = np.zeros((2, c))
    for r in range(m):
        for ch in range(c):
            v = np.float64(x2[r, ch])
            acc[0, ch] += v
            acc[1, ch] += v * v
    return acc


@njit(cache=True)
def _scale_shift(x2, scale, shift):
    """y = x * scale + shift, per column of x2 (M, C)."""
    m, c = x2.shape
    y = np.empty_like(x2)
    for r in range(m):
        for ch in range(c):
            y[r, ch] = x2[r, ch] * scale[ch] + shift[ch]
    return y


def batchnorm_forward_train(x, gamma, beta, eps):
    """Normalise with the batch's own statistics. Returns (y, mean, var) (biased var, as Keras)."""
    c = x.shape[-1]
    x2 = x.reshape(-1, c)
    m = x2.shape[0]
    s = _channel_moments(x2)
    mean = s[0] / m
    var = np.maximum(s[1] / m - mean * mean, 0.0)
    inv_std = 1.0 / np.sqrt(var + eps)
    scale = (gamma * inv_std).astype(x.dtype)
    shift = (beta - mean * gamma * inv_std).astype(x.dtype)
    y = _scale_shift(x2, scale, shift).reshape(x.shape)
    return y, mean.astype(x.dtype), var.astype(x.dtype)


def batchnorm_forward_infer(x, gamma, beta, moving_mean, moving_var, eps):
    """y = gamma (x - moving_mean) / sqrt(moving_var + eps) + beta."""
    c = x.shape[-1]
    scale = gamma / np.sqrt(moving_var + eps)
    shift = beta - moving_mean * scale
    return _scale_shift(x.reshape(-1, c), scale.astype(x.dtype), shift.astype(x.dtype)).reshape(x.shape)


@njit(cache=True)
def _bn_backward_sums(x2, dy2, mean, inv_std):
    """Per channel: sum dy and sum dy * xhat (float64)."""
    m, c = x2.shape
    acc = np.zeros((2, c))
    for r in range(m):
        for ch in range(c):
            g = np.float64(dy2[r, ch])
            acc[0, ch] += g
            acc[1, ch] += g * (x2[r, ch] - mean[ch]) * inv_std[ch]
    return acc


@njit(cache=True)
def _bn_backward_dx(x2, dy2, mean, inv_std, a, b_coef, c_coef):
    """dx = a * dy - b - c * xhat  per channel (coefficients precomputed)."""
    m, c = x2.shape
    dx = np.empty_like(dy2)
    for r in range(m):
        for ch in range(c):
            xhat = (x2[r, ch] - mean[ch]) * inv_std[ch]
            dx[r, ch] = a[ch] * dy2[r, ch] - b_coef[ch] - c_coef[ch] * xhat
    return dx


def batchnorm_backward(dy, x, gamma, mean, var, eps):
    """(dx, dgamma, dbeta) of :func:`batchnorm_forward_train`."""
    c = x.shape[-1]
    x2, dy2 = x.reshape(-1, c), dy.reshape(-1, c)
    m = x2.shape[0]
    inv_std = (1.0 / np.sqrt(var.astype(np.float64) + eps))
    sums = _bn_backward_sums(x2, dy2, mean.astype(x.dtype), inv_std.astype(x.dtype))
    dbeta, dgamma = sums[0], sums[1]
    a = gamma * inv_std
    dx = _bn_backward_dx(x2, dy2, mean.astype(x.dtype), inv_std.astype(x.dtype),
                         a.astype(x.dtype), (a * dbeta / m).astype(x.dtype),
                         (a * dgamma / m).astype(x.dtype))
    return dx.reshape(x.shape), dgamma.astype(x.dtype), dbeta.astype(x.dtype)


@njit(cache=True)
def groupnorm_forward(x, gamma, beta, groups, eps):
    """x (N, H, W, C) -> (y, mean (N, G), inv_std (N, G)), statistics per image and group."""
    n_img, h, w, c = x.shape
    cg = c // groups
    x3 = x.reshape(n_img, h * w, c)
    y = np.empty_like(x3)
    mean = np.empty((n_img, groups))
    inv_std = np.empty((n_img, groups))
    for n in range(n_img):
        acc = np.zeros((2, c))
        for p in range(h * w):
            for ch in range(c):
                v = np.float64(x3[n, p, ch])
                acc[0, ch] += v
                acc[1, ch] += v * v
        count = h * w * cg
        for g in range(groups):
            s = acc[0, g * cg:(g + 1) * cg].sum() / count
            sq = acc[1, g * cg:(g + 1) * cg].sum() / count
            mean[n, g] = s
            inv_std[n, g] = 1.0 / np.sqrt(max(sq - s * s, 0.0) + eps)
        for p in range(h * w):
            for ch in range(c):
                g = ch // cg
                y[n, p, ch] = (x3[n, p, ch] - mean[n, g]) * inv_std[n, g] * gamma[ch] + beta[ch]
    return y.reshape(n_img, h, w, c), mean, inv_std


@njit(cache=True)
def groupnorm_backward(dy, x, gamma, mean, inv_std):
    """(dx, dgamma, dbeta) of :func:`groupnorm_forward`.

    Per image and group, with g = dy * gamma and K values in the group:
        dx = inv_std * (g - mean(g) - xhat * mean(g * xhat))
    """
    n_img, h, w, c = x.shape
    groups = mean.shape[1]
    cg = c // groups
    x3 = x.reshape(n_img, h * w, c)
    dy3 = dy.reshape(n_img, h * w, c)
    dx = np.empty_like(x3)
    part = np.zeros((2, c))  # sum dy * xhat, sum dy (for dgamma, dbeta)
    count = h * w * cg
    for n in range(n_img):
        acc = np.zeros((2, c))  # sum g, sum g * xhat, per channel
        for p in range(h * w):
            for ch in range(c):
                gr = ch // cg
                xhat = (x3[n, p, ch] - mean[n, gr]) * inv_std[n, gr]
                d = np.float64(dy3[n, p, ch])
                part[0, ch] += d * xhat
                part[1, ch] += d
                acc[0, ch] += d * gamma[ch]
                acc[1, ch] += d * gamma[ch] * xhat
        for gr in range(groups):
            mg = acc[0, gr * cg:(gr + 1) * cg].sum() / count
            mgx = acc[1, gr * cg:(gr + 1) * cg].sum() / count
            for p in range(h * w):
                for ch in range(gr * cg, (gr + 1) * cg):
                    xhat = (x3[n, p, ch] - mean[n, gr]) * inv_std[n, gr]
                    dx[n, p, ch] = inv_std[n, gr] * (dy3[n, p, ch] * gamma[ch] - mg - xhat * mgx)
    return dx.reshape(n_img, h, w, c), part[0].astype(x.dtype), part[1].astype(x.dtype)

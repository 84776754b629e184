"""Plain NumPy reference implementations of every numba kernel, written for clarity, not speed.

The tests check each fast kernel against the function of the same name here. They are also the
version to read first: each is the equation, looped or vectorised in the most obvious way.
"""
import numpy as np


def _pad(x, pads, value=0.0):
    pt, pb, pl, pr = pads
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)


def conv2d(x, kernel, bias, stride, pads, out_hw):
    """y[n, oh, ow, :] = sum_{i, j} xpad[n, oh*s + i, ow*s + j, :] @ kernel[i, j] + bias."""
    kh, kw, _, c_out = kernel.shape
    xp = _pad(x, pads)
    ho, wo = out_hw
    y = np.zeros((x.shape[0], ho, wo, c_out), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride, :]
            y += patch @ kernel[i, j]
    if bias is not None:
        y += bias
    return y.astype(x.dtype)


def conv2d_transpose(x, kernel, pads, out_hw):
    """Scatter form: every input pixel adds kernel[i, j] @ x[n, h, w] to output (h+i-pt, w+j-pl).

    ``kernel`` has Keras' Conv2DTranspose layout (kh, kw, C_out, C_in); stride 1.
    """
    kh, kw, c_out, _ = kernel.shape
    n, h, w, _ = x.shape
    pt, pb, pl, pr = pads
    full = np.zeros((n, h + kh - 1, w + kw - 1, c_out))
    for i in range(kh):
        for j in range(kw):
            full[:, i:i + h, j:j + w, :] += x @ kernel[i, j].T
    ho, wo = out_hw
    return full[:, pt:pt + ho, pl:pl + wo, :].astype(x.dtype)


def depthwise(x, k, pads, out_hw):
    """y[n, h, w, c] = sum_{i, j} xpad[n, h + i, w + j, c] * k[i, j, c] (stride 1)."""
    kh, kw, _ = k.shape
    xp = _pad(x, pads)
    ho, wo = out_hw
    y = np.zeros((x.shape[0], ho, wo, x.shape[3]))
    for i in range(kh):
        for j in range(kw):
            y += xp[:, i:i + ho, j:j + wo, :] * k[i, j]
    return y.astype(x.dtype)


def maxpool(x, k, stride, pads, out_hw):
    """Max over each k x k window of x padded with -inf."""
    xp = _pad(x, pads, -np.inf)
    ho, wo = out_hw
    y = np.full((x.shape[0], ho, wo, x.shape[3]), -np.inf, dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            y = np.maximum(y, xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride, :])
    return y


def upsample(x, factor):
    """Nearest neighbour: each pixel repeated factor x factor times."""
    return x.repeat(factor, axis=1).repeat(factor, axis=2)


def batchnorm_train(x, gamma, beta, eps):
    """Batch statistics over N, H, W (biased variance). Returns (y, mean, var)."""
    mean = x.mean(axis=(0, 1, 2), dtype=np.float64)
    var = x.var(axis=(0, 1, 2), dtype=np.float64)
    y = (x - mean) / np.sqrt(var + eps) * gamma + beta
    return y.astype(x.dtype), mean.astype(x.dtype), var.astype(x.dtype)


def batchnorm_infer(x, gamma, beta, moving_mean, moving_var, eps):
    return ((x - moving_mean) / np.sqrt(moving_var + eps) * gamma + beta).astype(x.dtype)


def groupnorm(x, gamma, beta, groups, eps):
    """Statistics per image over (H, W, C/G) for each of the G groups of channels."""
    n, h, w, c = x.shape
    xg = x.reshape(n, h, w, groups, c // groups).astype(np.float64)
    mean = xg.mean(axis=(1, 2, 4), keepdims=True)
    var = xg.var(axis=(1, 2, 4), keepdims=True)
    y = ((xg - mean) / np.sqrt(var + eps)).reshape(n, h, w, c) * gamma + beta
    return y.astype(x.dtype)


def batchnorm_backward(dy, x, gamma, eps):
    """(dx, dgamma, dbeta) of batchnorm_train, from the formula in float64:
    dx = gamma / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat))."""
    dy, x = dy.astype(np.float64), x.astype(np.float64)
    axes = (0, 1, 2)
    xhat = (x - x.mean(axis=axes)) / np.sqrt(x.var(axis=axes) + eps)
    dx = gamma / np.sqrt(x.var(axis=axes) + eps) * (
        dy - dy.mean(axis=axes) - xhat * (dy * xhat).mean(axis=axes))
    return dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


# --- element-wise steps (kernels/elementwise.py) and products (kernels/blas.py): NumPy's own

def relu(x):
    return np.maximum(x, 0)


def relu_backward(g, y):
    return g * (y > 0)


def add(x, y):
    return x + y


def pixel_sum(g):
    return g.sum(axis=(1, 2), keepdims=True)


def column_sum(g):
    return g.sum(axis=0)


def concat_channels(a, b):
    return np.concatenate([a, b], axis=-1)


def matmul(a, b, trans_a=False, trans_b=False, bias=None):
    c = (a.T if trans_a else a) @ (b.T if trans_b else b)
    return c if bias is None else c + bias


def silu(x):
    """x sigmoid(x), and sigmoid(x) (the backward needs it)."""
    s = 1 / (1 + np.exp(-x.astype(np.float64)))
    return (x * s).astype(x.dtype), s.astype(x.dtype)


def silu_backward(g, x, s):
    return g * s * (1 + x * (1 - s))


def attention(q, k, v):
    """Z = softmax(Q K^T / sqrt(d)) V with the softmax over the last axis; returns (Z, A)."""
    s = np.matmul(q, np.swapaxes(k, -1, -2)) / np.sqrt(q.shape[-1])
    a = np.exp(s - s.max(axis=-1, keepdims=True))
    a = (a / a.sum(axis=-1, keepdims=True)).astype(q.dtype)
    return np.matmul(a, v), a


def attention_backward(g, q, k, v, a):
    """(dQ, dK, dV): dV = A^T G, dA = G V^T, dS = A (dA - rowsum(dA A)) / sqrt(d),
    dQ = dS K, dK = dS^T Q."""
    scale = 1 / np.sqrt(q.shape[-1])
    dv = np.matmul(np.swapaxes(a, -1, -2), g)
    da = np.matmul(g, np.swapaxes(v, -1, -2))
    ds = (a * (da - (da * a).sum(axis=-1, keepdims=True)) * scale).astype(q.dtype)
    return np.matmul(ds, k), np.matmul(np.swapaxes(ds, -1, -2), q), dv

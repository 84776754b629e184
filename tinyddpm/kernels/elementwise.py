"""Element-wise steps on every thread: ReLU, additions, and the sums their gradients need.

NumPy runs these on one thread, and each is a pass over a multi-megabyte activation; spread over
numba's threads they cost a fraction (measured, 2 cores, 2M float32: ``np.maximum(x, 0)`` 0.89
ms, :func:`relu` 0.10 ms). Each function takes the arrays the graph op has and falls back to
NumPy for shapes, dtypes or sizes it does not specialise, so the result is always NumPy's.

    relu(x) = max(x, 0)                      relu_backward(g, y) = g where y > 0, else 0
    silu(x) = (x sigma(x), sigma(x))         silu_backward(g, x, s) = g s (1 + x (1 - s))
    add(x, y) = x + y  (same shape, or y of shape (N, 1, 1, C) added to every pixel of x)
    pixel_sum(g)[n, 0, 0, c] = sum_{h, w} g[n, h, w, c]  (the gradient of the per-pixel add)
    column_sum(g)[c] = sum_r g[r, c]  (a bias's gradient)
    concat_channels(a, b) = concatenate([a, b], axis=-1); split_channels(g, c) undoes it
"""
import numpy as np
from numba import njit, prange

from .blas import part_rows, work_parts

MIN_SIZE = 1 << 15  # smaller arrays stay with NumPy (a parallel launch costs a few microseconds)


def tile_channels(v, times, dtype):
    """v (..., C), per-channel values, repeated ``times`` times along its last axis as one
    contiguous run: (..., times * C). The row-flattened loops of batch norm and the depthwise
    convolution read their per-channel weights this way, so that their inner loops are long."""
    v = np.asarray(v, dtype)
    out = np.empty((*v.shape[:-1], times, v.shape[-1]), dtype)
    out[:] = v[..., None, :]
    return out.reshape(*v.shape[:-1], times * v.shape[-1])


def _fast(*arrays):
    first = arrays[0]
    return (first.size >= MIN_SIZE and first.dtype in (np.float32, np.float64)
            and all(a.dtype == first.dtype and a.flags.c_contiguous for a in arrays))


@njit(parallel=True, cache=True)
def _relu(x):
    y = np.empty_like(x)
    for i in prange(x.size):
        v = x[i]
        y[i] = v if v > 0 else 0
    return y


@njit(parallel=True, cache=True)
def _relu_backward(g, y):
    dx = np.empty_like(g)
    for i in prange(g.size):
        dx[i] = g[i] if y[i] > 0 else 0
    return dx


@njit(parallel=True, cache=True)
def _silu(x, e):
    """x, e = exp(-|x|) -> (x sigmoid(x), sigmoid(x)); the sigmoid overwrites e. The stable
    logistic: sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) below (exp never overflows)."""
    y = np.empty_like(x)
    for i in prange(x.size):
        v, ev = x[i], e[i]
        sig = 1 / (1 + ev) if v >= 0 else ev / (1 + ev)
        e[i] = sig
        y[i] = v * sig
    return y, e


@njit(parallel=True, cache=True)
def _silu_backward(g, x, s):
    dx = np.empty_like(g)
    for i in prange(g.size):
        dx[i] = g[i] * s[i] * (1 + x[i] * (1 - s[i]))
    return dx


@njit(parallel=True, cache=True)
def _add(x, y):
    z = np.empty_like(x)
    for i in prange(x.size):
        z[i] = x[i] + y[i]
    return z


@njit(parallel=True, cache=True)
def _add_per_pixel(x, v):
    """x (N, P, C) + v (N, C) at every one of the P pixels."""
    n_img, pixels, c = x.shape
    z = np.empty_like(x)
    for row in prange(n_img * pixels):
        n, p = row // pixels, row % pixels
        src, dst, add = x[n, p], z[n, p], v[n]
        for ch in range(c):
            dst[ch] = src[ch] + add[ch]
    return z


@njit(parallel=True, cache=True)
def _pixel_sum(g):
    """g (N, P, C) -> (N, C), summed over the P pixels (in float64, then the input's dtype)."""
    n_img, pixels, c = g.shape
    out = np.empty((n_img, c), dtype=g.dtype)
    for n in prange(n_img):
        acc = np.zeros(c)
        for p in range(pixels):
            row = g[n, p]
            for ch in range(c):
                acc[ch] += row[ch]
        for ch in range(c):
            out[n, ch] = acc[ch]
    return out


@njit(parallel=True, cache=True)
def _column_sum(g, parts):
    """g (M, C) -> (parts, C) partial sums over blocks of rows, in float64."""
    m, c = g.shape
    acc = np.zeros((parts, c))
    for p in prange(parts):
        total = acc[p]
        lo, hi = part_rows(m, parts, p)
        for r in range(lo, hi):
            row = g[r]
            for ch in range(c):
                total[ch] += row[ch]
    return acc


@njit(parallel=True, cache=True)
def _concat_rows(a, b):
    """(M, Ca), (M, Cb) -> (M, Ca + Cb)."""
    m, ca = a.shape
    cb = b.shape[1]
    out = np.empty((m, ca + cb), dtype=a.dtype)
    for r in prange(m):
        dst, src_a, src_b = out[r], a[r], b[r]
        for ch in range(ca):
            dst[ch] = src_a[ch]
        for ch in range(cb):
            dst[ca + ch] = src_b[ch]
    return out


@njit(parallel=True, cache=True)
def _split_rows(g, ca):
    m, c = g.shape
    a = np.empty((m, ca), dtype=g.dtype)
    b = np.empty((m, c - ca), dtype=g.dtype)
    for r in prange(m):
        src, dst_a, dst_b = g[r], a[r], b[r]
        for ch in range(ca):
            dst_a[ch] = src[ch]
        for ch in range(c - ca):
            dst_b[ch] = src[ca + ch]
    return a, b


def relu(x):
    if not _fast(x):
        return np.maximum(x, 0)
    return _relu(x.reshape(-1)).reshape(x.shape)


def relu_backward(g, y):
    if not _fast(g, y) or g.shape != y.shape:
        return g * (y > 0)
    return _relu_backward(g.reshape(-1), y.reshape(-1)).reshape(g.shape)


def silu(x):
    """(x sigmoid(x), sigmoid(x)): SiLU's output and the sigmoid its backward needs; None for
    arrays the kernel does not take (the caller then uses NumPy)."""
    if not _fast(x):
        return None
    e = np.abs(x)
    np.negative(e, out=e)
    np.exp(e, out=e)            # NumPy's vectorised exp (numba's is a scalar call per value)
    y, s = _silu(x.reshape(-1), e.reshape(-1))
    return y.reshape(x.shape), s.reshape(x.shape)


def silu_backward(g, x, s):
    if not _fast(g, x, s) or not g.shape == x.shape == s.shape:
        return g * s * (1 + x * (1 - s))
    return _silu_backward(g.reshape(-1), x.reshape(-1), s.reshape(-1)).reshape(g.shape)


def _per_pixel_shape(x, y):
    return (x.ndim == 4 and y.ndim == 4 and y.shape[1:3] == (1, 1)
            and y.shape[0] == x.shape[0] and y.shape[3] == x.shape[3])


def add(x, y):
    if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and _fast(x, y)):
        return np.add(x, y)
    if x.shape == y.shape:
        return _add(x.reshape(-1), y.reshape(-1)).reshape(x.shape)
    if _per_pixel_shape(x, y):
        n, h, w, c = x.shape
        return _add_per_pixel(x.reshape(n, h * w, c), y.reshape(n, c)).reshape(x.shape)
    return np.add(x, y)


def pixel_sum(g):
    """(N, H, W, C) -> (N, 1, 1, C)."""
    n, h, w, c = g.shape
    if not _fast(g):
        return g.sum(axis=(1, 2), keepdims=True)
    return _pixel_sum(g.reshape(n, h * w, c)).reshape(n, 1, 1, c)


def column_sum(g):
    """(M, C) -> (C,): the sum of every column (float64 accumulation, g's dtype)."""
    if not _fast(g):
        return g.sum(axis=0)
    return _column_sum(g, work_parts()).sum(axis=0).astype(g.dtype)


def concat_channels(a, b):
    """``np.concatenate([a, b], axis=-1)``."""
    if not (_fast(a, b) and a.shape[:-1] == b.shape[:-1]):
        return np.concatenate([a, b], axis=-1)
    c = a.shape[-1] + b.shape[-1]
    out = _concat_rows(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]))
    return out.reshape(*a.shape[:-1], c)


def split_channels(g, ca):
    """The gradient of :func:`concat_channels`: (g[..., :ca], g[..., ca:]), each contiguous."""
    if not _fast(g):
        return np.ascontiguousarray(g[..., :ca]), np.ascontiguousarray(g[..., ca:])
    a, b = _split_rows(g.reshape(-1, g.shape[-1]), ca)
    return a.reshape(*g.shape[:-1], ca), b.reshape(*g.shape[:-1], g.shape[-1] - ca)

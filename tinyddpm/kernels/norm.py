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
from numba import njit, prange

from .blas import part_rows, work_parts
from .elementwise import tile_channels

# The batch-norm loops view the (M, C) values as one flat run and work on blocks of whole rows,
# against per-channel vectors repeated to the block's length (``tile_channels``): long contiguous
# inner loops that vectorise even when C is 16, split over numba's threads. Sums are taken in the
# input's precision over at most _FLUSH blocks (that many values per position), then added into
# float64 totals.

_FLUSH = 16


def _block_rows(c):
    return max(1, 512 // c)


@njit(parallel=True, cache=True)
def _block_sums(x2, y2, a_t, b_t, rows, parts, moments):
    """Per thread and per position in a block, float64 totals of u and of u * w, where
    ``moments``: u = x, w = x (sum x, sum x^2); otherwise u = x, w = (y - a) * b.
    The caller adds the threads and the rows of a block, giving per-channel totals."""
    m, c = x2.shape
    run = rows * c
    xf, yf = x2.reshape(m * c), y2.reshape(m * c)
    acc = np.zeros((parts, 2, run))
    for p in prange(parts):
        lo, hi = part_rows(m, parts, p)
        s, q = acc[p, 0], acc[p, 1]
        s_part, q_part = np.zeros(run, x2.dtype), np.zeros(run, x2.dtype)
        r, blocks = lo, 0
        while r < hi:
            take = min(rows, hi - r)
            u, v = xf[r * c:(r + take) * c], yf[r * c:(r + take) * c]
            if moments:
                for i in range(take * c):
                    s_part[i] += u[i]
                    q_part[i] += u[i] * u[i]
            else:
                for i in range(take * c):
                    s_part[i] += u[i]
                    q_part[i] += u[i] * ((v[i] - a_t[i]) * b_t[i])
            r += take
            blocks += 1
            if blocks == _FLUSH or r >= hi:
                for i in range(run):
                    s[i] += s_part[i]
                    q[i] += q_part[i]
                s_part[:] = 0
                q_part[:] = 0
                blocks = 0
    return acc


def _channel_totals(acc, rows, c):
    return acc.sum(axis=0).reshape(2, rows, c).sum(axis=1)


@njit(parallel=True, cache=True)
def _affine(x2, y2, a_t, b_t, c_t, d_t, rows):
    """out = x * a + c - (y - d) * b per channel, blocks of rows on every thread (y2 = x2 and
    b = d = 0 for the plain affine map)."""
    m, c = x2.shape
    run = rows * c
    xf, yf = x2.reshape(m * c), y2.reshape(m * c)
    out = np.empty_like(xf)
    for blk in prange(-(-m // rows)):
        lo = blk * run
        hi = min(m * c, lo + run)
        u, v, o = xf[lo:hi], yf[lo:hi], out[lo:hi]
        for i in range(hi - lo):
            o[i] = u[i] * a_t[i] + c_t[i] - (v[i] - d_t[i]) * b_t[i]
    return out.reshape(m, c)


def _moments(x2):
    m, c = x2.shape
    rows = _block_rows(c)
    none = np.empty(0, x2.dtype)
    acc = _block_sums(x2, x2, none, none, rows, work_parts(), True)
    return _channel_totals(acc, rows, c)  # (2, C): sum x, sum x^2


def _scale_shift(x2, scale, shift):
    """y = x * scale + shift, per column of x2 (M, C)."""
    c = x2.shape[1]
    rows = _block_rows(c)
    zero = np.zeros(rows * c, x2.dtype)
    return _affine(x2, x2, tile_channels(scale, rows, x2.dtype), zero,
                   tile_channels(shift, rows, x2.dtype), zero, rows)


def batchnorm_forward_train(x, gamma, beta, eps):
    """Normalise with the batch's own statistics. Returns (y, mean, var) (biased var, as Keras)."""
    c = x.shape[-1]
    x2 = x.reshape(-1, c)
    m = x2.shape[0]
    s = _moments(x2)
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


def batchnorm_backward(dy, x, gamma, mean, var, eps):
    """(dx, dgamma, dbeta) of :func:`batchnorm_forward_train`.

    With xhat = (x - mean) * inv_std:  dbeta = sum dy,  dgamma = sum dy * xhat,
    dx = a * dy - a * dbeta / M - (a * dgamma / M) * xhat,  a = gamma * inv_std.
    """
    c = x.shape[-1]
    x2, dy2 = x.reshape(-1, c), dy.reshape(-1, c)
    m = x2.shape[0]
    dt = x.dtype
    rows = _block_rows(c)
    inv_std = 1.0 / np.sqrt(var.astype(np.float64) + eps)
    mean_t, inv_t = tile_channels(mean, rows, dt), tile_channels(inv_std, rows, dt)
    sums = _channel_totals(_block_sums(dy2, x2, mean_t, inv_t, rows, work_parts(),
                                       False), rows, c)
    dbeta, dgamma = sums[0], sums[1]
    a = gamma * inv_std
    dx = _affine(dy2, x2, tile_channels(a, rows, dt),
                 tile_channels(a * dgamma / m * inv_std, rows, dt),
                 tile_channels(-a * dbeta / m, rows, dt), mean_t, rows)
    return dx.reshape(x.shape), dgamma.astype(dt), dbeta.astype(dt)


@njit(parallel=True, cache=True)
def groupnorm_forward(x, gamma, beta, groups, eps):
    """x (N, H, W, C) -> (y, mean (N, G), inv_std (N, G)), statistics per image and group
    (one image per thread)."""
    n_img, h, w, c = x.shape
    cg = c // groups
    x3 = x.reshape(n_img, h * w, c)
    y = np.empty_like(x3)
    mean = np.empty((n_img, groups))
    inv_std = np.empty((n_img, groups))
    for n in prange(n_img):
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


@njit(parallel=True, cache=True)
def groupnorm_backward(dy, x, gamma, mean, inv_std):
    """(dx, dgamma, dbeta) of :func:`groupnorm_forward` (one image per thread).

    Per image and group, with g = dy * gamma and K values in the group:
        dx = inv_std * (g - mean(g) - xhat * mean(g * xhat))
    """
    n_img, h, w, c = x.shape
    groups = mean.shape[1]
    cg = c // groups
    x3 = x.reshape(n_img, h * w, c)
    dy3 = dy.reshape(n_img, h * w, c)
    dx = np.empty_like(x3)
    part = np.zeros((n_img, 2, c))  # per image: sum dy * xhat, sum dy (for dgamma, dbeta)
    count = h * w * cg
    for n in prange(n_img):
        acc = np.zeros((2, c))  # sum g, sum g * xhat, per channel
        for p in range(h * w):
            for ch in range(c):
                gr = ch // cg
                xhat = (x3[n, p, ch] - mean[n, gr]) * inv_std[n, gr]
                d = np.float64(dy3[n, p, ch])
                part[n, 0, ch] += d * xhat
                part[n, 1, ch] += d
                acc[0, ch] += d * gamma[ch]
                acc[1, ch] += d * gamma[ch] * xhat
        for gr in range(groups):
            mg = acc[0, gr * cg:(gr + 1) * cg].sum() / count
            mgx = acc[1, gr * cg:(gr + 1) * cg].sum() / count
            for p in range(h * w):
                for ch in range(gr * cg, (gr + 1) * cg):
                    xhat = (x3[n, p, ch] - mean[n, gr]) * inv_std[n, gr]
                    dx[n, p, ch] = inv_std[n, gr] * (dy3[n, p, ch] * gamma[ch] - mg - xhat * mgx)
    totals = part.sum(axis=0)
    return dx.reshape(n_img, h, w, c), totals[0].astype(x.dtype), totals[1].astype(x.dtype)

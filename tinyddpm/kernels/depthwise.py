"""Depthwise convolution (one k x k filter per channel, stride 1), NHWC, numba loops.

    y[n, h, w, c] = sum_{i, j} xpad[n, h + i, w + j, c] * k[i, j, c]
    dx = the same convolution of dy (padded by k - 1 - pad) with k rotated by 180 degrees
    dk[i, j, c] = sum_{n, h, w} xpad[n, h + i, w + j, c] * dy[n, h, w, c]

Not a matrix product, so it is a direct loop, one image per thread. Each image is zero-padded
into a scratch buffer so that no inner loop needs a bounds check, and the innermost loop runs over
a whole output row, (W, C) flattened, so the compiler vectorises it even for C = 16 (a loop over
the channels alone is too short).
"""
import numpy as np
from numba import njit, prange


@njit(cache=True)
def _padded_image(x, n, pt, pl, hp, wp):
    """Image n of x zero-padded to (hp, wp * C), one row per padded image row."""
    _, h, w, c = x.shape
    xp = np.zeros((hp, wp * c), dtype=x.dtype)
    for ih in range(h):
        for iw in range(w):
            for ch in range(c):
                xp[ih + pt, (pl + iw) * c + ch] = x[n, ih, iw, ch]
    return xp


@njit(parallel=True, cache=True)
def _depthwise_forward(x, kt, pt, pl, ho, wo):
    """One image per thread. Row oh of the output, flattened over (ow, c), is the sum over the
    taps (i, j) of padded input row oh + i shifted by j pixels, times ``kt[i, j]`` -- the tap's
    weights repeated for every output column -- so the innermost loop is one long contiguous
    run that the compiler vectorises (a loop over the C channels alone is too short)."""
    n_img, _, _, c = x.shape
    kh, kw, run = kt.shape
    hp, wp = ho + kh - 1, wo + kw - 1
    y = np.empty((n_img, ho, run), dtype=x.dtype)
    for n in prange(n_img):
        xp = _padded_image(x, n, pt, pl, hp, wp)
        for oh in range(ho):
            out = y[n, oh]
            out[:] = 0
            for i in range(kh):
                if kw == 3:  # the usual 3x3: one pass per kernel row, three taps at a time
                    s0, s1, s2 = xp[oh + i, :run], xp[oh + i, c:c + run], xp[oh + i, 2 * c:2 * c + run]
                    t0, t1, t2 = kt[i, 0], kt[i, 1], kt[i, 2]
                    for m in range(run):
                        out[m] += s0[m] * t0[m] + s1[m] * t1[m] + s2[m] * t2[m]
                    continue
                for j in range(kw):
                    # plain loop indices only: computed ones (off + m) would make numba check for
                    # negative indices in the innermost loop, which stops the vectorisation
                    src, tap = xp[oh + i, j * c:j * c + run], kt[i, j]
                    for m in range(run):
                        out[m] += src[m] * tap[m]
    return y


@njit(parallel=True, cache=True)
def _depthwise_kernel_grad(x, dy, pt, pl, kh, kw):
    """Per image (one per thread): dkt[n, i, j, (ow, c)] = sum_oh xpad[n, oh + i, ow + j, c]
    * dy[n, oh, ow, c] -- the kernel gradient still spread over the output columns."""
    n_img, _, _, c = x.shape
    _, ho, wo, _ = dy.shape
    run = wo * c
    hp, wp = ho + kh - 1, wo + kw - 1
    dkt = np.zeros((n_img, kh, kw, run), dtype=x.dtype)
    for n in prange(n_img):
        xp = _padded_image(x, n, pt, pl, hp, wp)
        for oh in range(ho):
            g = dy[n, oh].reshape(run)
            for i in range(kh):
                for j in range(kw):
                    src, acc = xp[oh + i, j * c:j * c + run], dkt[n, i, j]
                    for m in range(run):
                        acc[m] += src[m] * g[m]
    return dkt


def _tiled(k, wo):
    """k (kh, kw, C) -> (kh, kw, wo * C): each tap's C weights repeated for the wo columns."""
    return np.ascontiguousarray(np.tile(k, (1, 1, wo)))


def _check_window(x_shape, k_shape, pt, pl, ho, wo):
    _, h, w, _ = x_shape
    if pt < 0 or pl < 0 or ho + k_shape[0] - 1 < h + pt or wo + k_shape[1] - 1 < w + pl:
        raise ValueError(f"depthwise: padding ({pt}, {pl}) and output ({ho}, {wo}) do not fit "
                         f"an input of {h}x{w} and a {k_shape[0]}x{k_shape[1]} kernel")


def depthwise_forward(x, k, pt, pl, ho, wo):
    """x (N,H,W,C), k (kh,kw,C), padding (pt, pl) before -> y (N,Ho,Wo,C)."""
    _check_window(x.shape, k.shape, pt, pl, ho, wo)
    y = _depthwise_forward(np.ascontiguousarray(x), _tiled(k.astype(x.dtype), wo), pt, pl, ho, wo)
    return y.reshape(x.shape[0], ho, wo, x.shape[3])


def depthwise_backward(x, dy, k, pt, pl):
    """(dx, dk) of :func:`depthwise_forward` for the output gradient dy.

    dx is itself a depthwise convolution: of dy with the kernel rotated by 180 degrees, padded
    by (kh - 1 - pt, kw - 1 - pl) before, so it runs on the same fast forward loop.
    dk is summed per image in the input's precision, then over the images in float64.
    """
    _, h, w, _ = x.shape
    ho, wo = dy.shape[1:3]
    kh, kw, c = k.shape
    _check_window(x.shape, k.shape, pt, pl, ho, wo)
    dy = np.ascontiguousarray(dy)
    dx = depthwise_forward(dy, k[::-1, ::-1], kh - 1 - pt, kw - 1 - pl, h, w)
    dkt = _depthwise_kernel_grad(np.ascontiguousarray(x), dy, pt, pl, kh, kw)
    dk = dkt.sum(axis=0, dtype=np.float64).reshape(kh, kw, wo, c).sum(axis=2)
    return dx, dk.astype(x.dtype)

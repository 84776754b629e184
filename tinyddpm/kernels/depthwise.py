"""Depthwise convolution (one k x k filter per channel, stride 1), NHWC, numba loops.

    y[n, h, w, c] = sum_{i, j} xpad[n, h + i, w + j, c] * k[i, j, c]
    dx = the same convolution of dy (padded by k - 1 - pad) with k rotated by 180 degrees
    dk[i, j, c] = sum_{n, h, w} xpad[n, h + i, w + j, c] * dy[n, h, w, c]

Not a matrix product, so it is a direct loop, one image per thread. The innermost loop runs over
a whole output row, (W, C) flattened, so the compiler vectorises it even for C = 16 (a loop over
the channels alone is too short); each tap only visits the columns where it falls inside the
image, so no padded copy is made.
"""
import numpy as np
from numba import njit, prange

from .blas import part_rows, work_parts
from .conv import tap_columns
from .elementwise import tile_channels


@njit(parallel=True, cache=True)
def _depthwise_forward(x, kt, pt, pl, ho, wo):
    """One image per thread. Row oh of the output, flattened over (ow, c), is the sum over the
    taps (i, j) of input row oh + i - pt shifted by j - pl pixels, times ``kt[i, j]`` -- the tap's
    weights repeated for every output column -- so the innermost loop is one long contiguous
    run that the compiler vectorises (a loop over the C channels alone is too short). Taps that
    fall on the zero padding are skipped: no padded copy of the image is made."""
    n_img, h, w, c = x.shape
    kh, kw, run = kt.shape
    y = np.empty((n_img, ho, run), dtype=x.dtype)
    for n in prange(n_img):
        for oh in range(ho):
            out = y[n, oh]
            out[:] = 0  # here, while the row is in cache, not in a pass over all of y first
            for i in range(kh):
                ih = oh + i - pt
                if ih < 0 or ih >= h:
                    continue
                row = x[n, ih].reshape(w * c)
                for j in range(kw):
                    lo, hi = tap_columns(j, pl, w, wo, 1)
                    if hi == lo:
                        continue
                    # slices, so that the inner loop indexes with its own counter only: computed
                    # indices make numba check for negative ones, which stops the vectorisation
                    src = row[(lo + j - pl) * c:(hi + j - pl) * c]
                    dst, tap = out[lo * c:hi * c], kt[i, j, lo * c:hi * c]
                    for m in range(dst.size):
                        dst[m] += src[m] * tap[m]
    return y


@njit(parallel=True, cache=True)
def _depthwise_kernel_grad(x, dy, pt, pl, kh, kw, parts):
    """dkt[p, i, j, (ow, c)] = sum over part p's images n and rows oh of
    x[n, oh + i - pt, ow + j - pl, c] * dy[n, oh, ow, c] -- the kernel gradient still spread over
    the output columns. Each of ``parts`` threads takes a run of images; each image's sum is
    taken in the input's precision, then added into the part's float64 total."""
    n_img, h, w, c = x.shape
    _, ho, wo, _ = dy.shape
    run = wo * c
    dkt = np.zeros((parts, kh, kw, run))
    for p in prange(parts):
        acc = np.empty((kh, kw, run), dtype=x.dtype)
        first, end = part_rows(n_img, parts, p)
        for n in range(first, end):
            acc[:] = 0
            for oh in range(ho):
                g = dy[n, oh].reshape(run)
                for i in range(kh):
                    ih = oh + i - pt
                    if ih < 0 or ih >= h:
                        continue
                    row = x[n, ih].reshape(w * c)
                    for j in range(kw):
                        lo, hi = tap_columns(j, pl, w, wo, 1)
                        if hi == lo:
                            continue
                        src, gg = row[(lo + j - pl) * c:(hi + j - pl) * c], g[lo * c:hi * c]
                        tap = acc[i, j, lo * c:hi * c]
                        for m in range(tap.size):
                            tap[m] += src[m] * gg[m]
            dkt[p] += acc
    return dkt


def _check_window(x_shape, k_shape, pt, pl, ho, wo):
    _, h, w, _ = x_shape
    if pt < 0 or pl < 0 or ho + k_shape[0] - 1 < h + pt or wo + k_shape[1] - 1 < w + pl:
        raise ValueError(f"depthwise: padding ({pt}, {pl}) and output ({ho}, {wo}) do not fit "
                         f"an input of {h}x{w} and a {k_shape[0]}x{k_shape[1]} kernel")


def depthwise_forward(x, k, pt, pl, ho, wo):
    """x (N,H,W,C), k (kh,kw,C), padding (pt, pl) before -> y (N,Ho,Wo,C)."""
    _check_window(x.shape, k.shape, pt, pl, ho, wo)
    y = _depthwise_forward(np.ascontiguousarray(x), tile_channels(k, wo, x.dtype), pt, pl, ho, wo)
    return y.reshape(x.shape[0], ho, wo, x.shape[3])


def depthwise_backward(x, dy, k, pt, pl):
    """(dx, dk) of :func:`depthwise_forward` for the output gradient dy.

    dx is itself a depthwise convolution: of dy with the kernel rotated by 180 degrees, padded
    by (kh - 1 - pt, kw - 1 - pl) before, so it runs on the same fast forward loop.
    dk is summed per image in the input's precision, then over the images in float64 (one
    running total per thread).
    """
    _, h, w, _ = x.shape
    ho, wo = dy.shape[1:3]
    kh, kw, c = k.shape
    _check_window(x.shape, k.shape, pt, pl, ho, wo)
    dy = np.ascontiguousarray(dy)
    dx = depthwise_forward(dy, k[::-1, ::-1], kh - 1 - pt, kw - 1 - pl, h, w)
    parts = max(1, min(work_parts(), x.shape[0]))
    dkt = _depthwise_kernel_grad(np.ascontiguousarray(x), dy, pt, pl, kh, kw, parts)
    dk = dkt.sum(axis=0).reshape(kh, kw, wo, c).sum(axis=2)
    return dx, dk.astype(x.dtype)

"""Depthwise convolution (one k x k filter per channel, stride 1), NHWC, fused numba loops.

    y[n, h, w, c] = sum_{i, j} x[n, h + i - pt, w + j - pl, c] * k[i, j, c]

Not a matrix product, so it is a direct loop; the innermost loop runs over the contiguous channel
axis so the compiler vectorises it.
"""
import numpy as np
from numba import njit


@njit(cache=True)
def depthwise_forward(x, k, pt, pl, ho, wo):
    """x (N,H,W,C), k (kh,kw,C) -> y (N,Ho,Wo,C)."""
    n_img, h, w, c = x.shape
    kh, kw, _ = k.shape
    y = np.zeros((n_img, ho, wo, c), dtype=x.dtype)
    for row in range(n_img * ho):
        n, oh = row // ho, row % ho
        for i in range(kh):
            ih = oh - pt + i
            if ih < 0 or ih >= h:
                continue
            for ow in range(wo):
                for j in range(kw):
                    iw = ow - pl + j
                    if 0 <= iw < w:
                        for ch in range(c):
                            y[n, oh, ow, ch] += x[n, ih, iw, ch] * k[i, j, ch]
    return y


@njit(cache=True)
def depthwise_backward_input(dy, k, pt, pl, h, w):
    """dx[n, ih, iw, c] = sum_{i, j} dy[n, ih + pt - i, iw + pl - j, c] * k[i, j, c]."""
    n_img, ho, wo, c = dy.shape
    kh, kw, _ = k.shape
    dx = np.zeros((n_img, h, w, c), dtype=dy.dtype)
    for row in range(n_img * h):
        n, ih = row // h, row % h
        for i in range(kh):
            oh = ih + pt - i
            if oh < 0 or oh >= ho:
                continue
            for iw in range(w):
                for j in range(kw):
                    ow = iw + pl - j
                    if 0 <= ow < wo:
                        for ch in range(c):
                            dx[n, ih, iw, ch] += dy[n, oh, ow, ch] * k[i, j, ch]
    return dx


@njit(cache=True)
def depthwise_backward_kernel(x, dy, kh, kw, pt, pl):
    """dk[i, j, c] = sum_{n, h, w} x[n, h + i - pt, w + j - pl, c] * dy[n, h, w, c]."""
    n_img, h, w, c = x.shape
    _, ho, wo, _ = dy.shape
    acc = np.zeros((kh, kw, c))  # float64 accumulator
    for n in range(n_img):
        for oh in range(ho):
            for i in range(kh):
                ih = oh - pt + i
                if ih < 0 or ih >= h:
                    continue
                for ow in range(wo):
                    for j in range(kw):
                        iw = ow - pl + j
                        if 0 <= iw < w:
                            for ch in range(c):
                                acc[i, j, ch] += x[n, ih, iw, ch] * dy[n, oh, ow, ch]
    return acc.astype(x.dtype)

"""Max pooling and nearest-neighbour up-sampling, NHWC, numba loops on every thread."""
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def maxpool_forward(x, k, stride, pt, pl, ho, wo, with_argmax=True):
    """y[n, oh, ow, c] = max over the k x k window at (oh*stride - pt, ow*stride - pl).

    Padding never wins (it acts as -inf). With ``with_argmax``, also returns, per output, the
    flat index ih * W + iw of the winning input pixel, for the backward pass (otherwise an
    empty array: inference needs no backward).
    """
    n_img, h, w, c = x.shape
    y = np.empty((n_img, ho, wo, c), dtype=x.dtype)
    arg = np.empty((n_img, ho, wo, c) if with_argmax else (0, 0, 0, 0), dtype=np.int32)
    for row in prange(n_img * ho):
        n, oh = row // ho, row % ho
        h0 = oh * stride - pt
        for ow in range(wo):
            w0 = ow * stride - pl
            for ch in range(c):
                y[n, oh, ow, ch] = -np.inf  # a window of padding only (never, with Keras' rule)
                if with_argmax:
                    arg[n, oh, ow, ch] = -1  # ... has no winner and passes no gradient back
            first = True  # the first pixel inside the image wins outright (NaN included)
            for i in range(k):
                ih = h0 + i
                if ih < 0 or ih >= h:
                    continue
                for j in range(k):
                    iw = w0 + j
                    if iw < 0 or iw >= w:
                        continue
                    for ch in range(c):
                        v = x[n, ih, iw, ch]
                        if first or v > y[n, oh, ow, ch]:
                            y[n, oh, ow, ch] = v
                            if with_argmax:
                                arg[n, oh, ow, ch] = ih * w + iw
                    first = False
    return y, arg


@njit(parallel=True, cache=True)
def maxpool_backward(dy, arg, h, w):
    """dx[n, pixel, c] += dy[n, oh, ow, c] for the pixel that won each window."""
    n_img, ho, wo, c = dy.shape
    dx = np.empty((n_img, h * w, c), dtype=dy.dtype)
    for n in prange(n_img):
        dx[n] = 0  # each image zeroed by its own thread, just before it fills it
        for oh in range(ho):
            for ow in range(wo):
                for ch in range(c):
                    if arg[n, oh, ow, ch] >= 0:
                        dx[n, arg[n, oh, ow, ch], ch] += dy[n, oh, ow, ch]
    return dx.reshape(n_img, h, w, c)


@njit(parallel=True, cache=True)
def upsample_forward(x, factor):
    """y[n, h, w, c] = x[n, h // factor, w // factor, c] (nearest neighbour)."""
    n_img, h, w, c = x.shape
    y = np.empty((n_img, h * factor, w * factor, c), dtype=x.dtype)
    for row in prange(n_img * h * factor):
        n, oh = row // (h * factor), row % (h * factor)
        for ow in range(w * factor):
            for ch in range(c):
                y[n, oh, ow, ch] = x[n, oh // factor, ow // factor, ch]
    return y


@njit(parallel=True, cache=True)
def upsample_backward(dy, factor):
    """dx[n, h, w, c] = sum of dy over the factor x factor block that copied x[n, h, w, c]."""
    n_img, ho, wo, c = dy.shape
    h, w = ho // factor, wo // factor
    dx = np.empty((n_img, h, w, c), dtype=dy.dtype)
    for row in prange(n_img * h):
        n, ih = row // h, row % h
        dx[n, ih] = 0
        for a in range(factor):
            for iw in range(w):
                for b in range(factor):
                    for ch in range(c):
                        dx[n, ih, iw, ch] += dy[n, ih * factor + a, iw * factor + b, ch]
    return dx

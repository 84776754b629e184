"""Depthwise convolution (one k x k filter per channel, stride 1), NHWC, fused numba loops.

    y[n, h, w, c] = sum_{i, j} xpad[n, h + i, w + j, c] * k[i, j, c]

Not a matrix product, so it is a direct loop. The input is zero-padded first so that no loop needs
a bounds check, and the innermost loop runs over the contiguous channel axis so the compiler
vectorises it. The backward pass makes one sweep that produces both gradients:

    dxpad[n, h + i, w + j, c] += dy[n, h, w, c] * k[i, j, c]
    dk[i, j, c]               += xpad[n, h + i, w + j, c] * dy[n, h, w, c]
"""
import numpy as np
from numba import njit


def pad_for_window(x, kh, kw, pt, pl, ho, wo):
    """Zero-pad x so that every (ho, wo) output's kh x kw window lies inside it."""
    _, h, w, _ = x.shape
    pb, pr = ho + kh - 1 - h - pt, wo + kw - 1 - w - pl
    if pt == pb == pl == pr == 0:
        return np.ascontiguousarray(x)
    return np.pad(x, ((0, 0), (pt, max(pb, 0)), (pl, max(pr, 0)), (0, 0)))


@njit(cache=True)
def _depthwise_forward(xp, k, ho, wo):
    n_img, _, _, c = xp.shape
    kh, kw, _ = k.shape
    y = np.zeros((n_img, ho, wo, c), dtype=xp.dtype)
    for n in range(n_img):
        for oh in range(ho):
            for i in range(kh):
                for ow in range(wo):
                    for j in range(kw):
                        for ch in range(c):
                            y[n, oh, ow, ch] += xp[n, oh + i, ow + j, ch] * k[i, j, ch]
    return y


@njit(cache=True)
def _depthwise_backward(xp, dy, k):
    n_img, _, _, c = xp.shape
    _, ho, wo, _ = dy.shape
    kh, kw, _ = k.shape
    dxp = np.zeros_like(xp)
    dk = np.zeros((kh, kw, c))  # float64 total
    part = np.empty((kh, kw, c), dtype=xp.dtype)  # one image's share, in the input's precision
    for n in range(n_img):
        part[:] = 0
        for oh in range(ho):
            for ow in range(wo):
                for i in range(kh):
                    for j in range(kw):
                        for ch in range(c):
                            g = dy[n, oh, ow, ch]
                            dxp[n, oh + i, ow + j, ch] += g * k[i, j, ch]
                            part[i, j, ch] += xp[n, oh + i, ow + j, ch] * g
        dk += part
    return dxp, dk


def depthwise_forward(x, k, pt, pl, ho, wo):
    """x (N,H,W,C), k (kh,kw,C), padding (pt, pl) before -> y (N,Ho,Wo,C)."""
    xp = pad_for_window(x, k.shape[0], k.shape[1], pt, pl, ho, wo)
    return _depthwise_forward(xp, np.ascontiguousarray(k), ho, wo)


def depthwise_backward(x, dy, k, pt, pl):
    """(dx, dk) of :func:`depthwise_forward` for the output gradient dy."""
    _, h, w, _ = x.shape
    ho, wo = dy.shape[1:3]
    xp = pad_for_window(x, k.shape[0], k.shape[1], pt, pl, ho, wo)
    dxp, dk = _depthwise_backward(xp, np.ascontiguousarray(dy), np.ascontiguousarray(k))
    return np.ascontiguousarray(dxp[:, pt:pt + h, pl:pl + w, :]), dk.astype(x.dtype)

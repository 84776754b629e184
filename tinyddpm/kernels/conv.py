"""Convolutions in NHWC as GEMMs: numba moves the pixels, NumPy's BLAS does the arithmetic.

A k x k convolution is ``im2col`` (each output pixel's receptive field laid out as one row) then
one matrix product with the kernel reshaped to (k*k*C_in, C_out). Kernels use Keras' layout
(kh, kw, C_in, C_out) and Keras' padding rule (:func:`conv_output_and_padding`).
"""
import numpy as np
from numba import njit


def conv_output_and_padding(size, k, stride, padding):
    """Output length and (pad_before, pad_after) along one axis, as Keras/TensorFlow compute them.

    ``valid``: out = floor((size - k) / stride) + 1, no padding.
    ``same``:  out = ceil(size / stride); pad_total = max((out - 1) * stride + k - size, 0),
    pad_before = pad_total // 2 (the extra pixel, if any, goes after).
    """
    if padding == "valid":
        if size < k:
            raise ValueError(f"input size {size} is smaller than the kernel size {k} "
                             "with padding='valid'")
        return (size - k) // stride + 1, (0, 0)
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        return out, (total // 2, total - total // 2)
    raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")


@njit(cache=True)
def _im2col(x, kh, kw, stride, pt, pl, ho, wo):
    n_img, h, w, c = x.shape
    cols = np.empty((n_img * ho * wo, kh * kw * c), dtype=x.dtype)
    for row in range(n_img * ho):
        n, oh = row // ho, row % ho
        for ow in range(wo):
            r = row * wo + ow
            for i in range(kh):
                ih = oh * stride - pt + i
                inside_h = 0 <= ih < h
                for j in range(kw):
                    iw = ow * stride - pl + j
                    dst = (i * kw + j) * c
                    if inside_h and 0 <= iw < w:
                        for ch in range(c):
                            cols[r, dst + ch] = x[n, ih, iw, ch]
                    else:
                        for ch in range(c):
                            cols[r, dst + ch] = 0
    return cols


@njit(cache=True)
def _col2im(cols, h, w, stride, pt, pl):
    n_img, ho, wo, kh, kw, c = cols.shape
    x = np.zeros((n_img, h, w, c), dtype=cols.dtype)
    for n in range(n_img):
        for oh in range(ho):
            for ow in range(wo):
                for i in range(kh):
                    ih = oh * stride - pt + i
                    if ih < 0 or ih >= h:
                        continue
                    for j in range(kw):
                        iw = ow * stride - pl + j
                        if 0 <= iw < w:
                            for ch in range(c):
                                x[n, ih, iw, ch] += cols[n, oh, ow, i, j, ch]
    return x


def im2col(x, kh, kw, stride, pads, out_hw):
    """(N,H,W,C) -> (N*Ho*Wo, kh*kw*C): row r holds the receptive field of output pixel r."""
    return _im2col(np.ascontiguousarray(x), kh, kw, stride, pads[0], pads[2], *out_hw)


def col2im(cols, x_shape, kh, kw, stride, pads, out_hw):
    """The adjoint of :func:`im2col`: adds each row back onto the pixels it was read from."""
    n, h, w, c = x_shape
    cols = np.ascontiguousarray(cols).reshape(n, out_hw[0], out_hw[1], kh, kw, c)
    return _col2im(cols, h, w, stride, pads[0], pads[2])


def conv2d_geometry(x_shape, k_shape, stride, padding):
    """((Ho, Wo), (top, bottom, left, right)) for a kernel of shape (kh, kw, ...)."""
    _, h, w, _ = x_shape
    ho, (pt, pb) = conv_output_and_padding(h, k_shape[0], stride, padding)
    wo, (pl, pr) = conv_output_and_padding(w, k_shape[1], stride, padding)
    return (ho, wo), (pt, pb, pl, pr)


def conv2d_forward(x, kernel, bias, stride, pads, out_hw):
    """y = im2col(x) @ kernel.reshape(-1, C_out) + bias, shaped (N, Ho, Wo, C_out).

    Returns ``(y, cols)``; ``cols`` is kept for the kernel gradient.
    """
    kh, kw, c_in, c_out = kernel.shape
    if kh == kw == 1 and not any(pads):  # a 1x1 convolution is a plain matrix product
        cols = np.ascontiguousarray(x[:, ::stride, ::stride, :]).reshape(-1, c_in)
    else:
        cols = im2col(x, kh, kw, stride, pads, out_hw)
    y = cols @ kernel.reshape(-1, c_out)
    if bias is not None:
        y += bias
    return y.reshape(x.shape[0], out_hw[0], out_hw[1], c_out), cols


def conv2d_backward(dy, x_shape, kernel, cols, stride, pads, need_dx=True):
    """Gradients of :func:`conv2d_forward`: (dx, dkernel, dbias).

    dkernel = cols^T @ dy,  dbias = sum of dy over N, H, W.
    dx, stride 1: a convolution of dy (padded by k-1-pad) with the kernel rotated by 180 degrees
    and its channel axes swapped -- another GEMM, much smaller than col2im when C_out < C_in.
    dx, stride > 1: col2im(dy @ kernel^T).
    """
    kh, kw, c_in, c_out = kernel.shape
    dy2 = dy.reshape(-1, c_out)
    dkernel = (cols.T @ dy2).reshape(kernel.shape)
    dbias = dy2.sum(axis=0)
    dx = None
    if need_dx:
        n, h, w, _ = x_shape
        out_hw = dy.shape[1:3]
        if kh == kw == 1 and not any(pads):
            dcols = (dy2 @ kernel.reshape(c_in, c_out).T).reshape(n, *out_hw, c_in)
            if stride == 1:
                dx = dcols
            else:
                dx = np.zeros(x_shape, dy.dtype)
                dx[:, ::stride, ::stride, :] = dcols
        elif stride == 1:
            pt, pb, pl, pr = pads
            back_pads = (kh - 1 - pt, h - out_hw[0] + pt, kw - 1 - pl, w - out_hw[1] + pl)
            rotated = np.ascontiguousarray(kernel[::-1, ::-1].transpose(0, 1, 3, 2))
            dx, _ = conv2d_forward(dy, rotated, None, 1, back_pads, (h, w))
        else:
            dcols = dy2 @ kernel.reshape(-1, c_out).T
            dx = col2im(dcols, x_shape, kh, kw, stride, pads, out_hw)
    return dx, dkernel, dbias


def transpose_kernel_as_conv(kernel):
    """A Conv2DTranspose kernel (kh, kw, C_out, C_in) as the equivalent convolution kernel.

    A stride-1 transposed convolution is the adjoint of a convolution; it equals a convolution
    with the kernel rotated by 180 degrees and its channel axes swapped: (kh, kw, C_in, C_out).
    """
    return np.ascontiguousarray(kernel[::-1, ::-1].transpose(0, 1, 3, 2))

"""Convolutions in NHWC as GEMMs: numba moves the pixels, NumPy's BLAS does the arithmetic.

A k x k convolution is ``im2col`` (each output pixel's receptive field laid out as one row) then
one matrix product with the kernel reshaped to (k*k*C_in, C_out). Kernels use Keras' layout
(kh, kw, C_in, C_out) and Keras' padding rule (:func:`conv_output_and_padding`).
"""
import numpy as np
from numba import njit, prange

from .blas import bias_vector, matmul
from .elementwise import column_sum


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


@njit(inline="always", cache=True)
def tap_columns(j, pl, w, wo, stride):
    """Output columns [lo, hi) whose tap ``j`` reads a pixel inside the image, that is input
    column ow * stride - pl + j in [0, w); lo <= hi, and lo == hi when there are none."""
    lo = min(wo, max(0, -(-(pl - j) // stride)))
    return lo, max(lo, min(wo, (w - 1 + pl - j) // stride + 1))


@njit(parallel=True, cache=True)
def _im2col(x, kh, kw, stride, pt, pl, ho, wo):
    n_img, h, w, c = x.shape
    cols = np.empty((n_img * ho * wo, kh * kw * c), dtype=x.dtype)
    for row in prange(n_img * ho):
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


@njit(parallel=True, cache=True)
def _im2col_few_channels(x, kh, kw, stride, pt, pl, ho, wo):
    """:func:`_im2col` for a few channels: the same matrix, filled one (tap, channel) column at a
    time along each output row -- one long strided copy instead of a loop of C iterations per
    pixel and tap, which costs more than it copies when C is 1 (the stem's grey images)."""
    n_img, h, w, c = x.shape
    cols = np.empty((n_img * ho * wo, kh * kw * c), dtype=x.dtype)
    for row in prange(n_img * ho):
        n, oh = row // ho, row % ho
        block = cols[row * wo:(row + 1) * wo]
        for i in range(kh):
            ih = oh * stride - pt + i
            for j in range(kw):
                lo, hi = tap_columns(j, pl, w, wo, stride)
                for ch in range(c):
                    dst = block[:, (i * kw + j) * c + ch]
                    if ih < 0 or ih >= h:
                        dst[:] = 0
                        continue
                    dst[:lo] = 0
                    dst[hi:] = 0
                    src = x[n, ih, lo * stride - pl + j:(hi - 1) * stride - pl + j + 1:stride, ch]
                    out = dst[lo:hi]
                    for m in range(out.size):
                        out[m] = src[m]
    return cols


@njit(parallel=True, cache=True)
def _col2im(cols, h, w, stride, pt, pl):
    n_img, ho, wo, kh, kw, c = cols.shape
    x = np.empty((n_img, h, w, c), dtype=cols.dtype)
    for n in prange(n_img):
        x[n] = 0
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


FEW_CHANNELS = 4  # up to this many, the loops run along image rows (see _im2col_few_channels)


def im2col(x, kh, kw, stride, pads, out_hw):
    """(N,H,W,C) -> (N*Ho*Wo, kh*kw*C): row r holds the receptive field of output pixel r."""
    fill = _im2col_few_channels if x.shape[3] <= FEW_CHANNELS else _im2col
    return fill(np.ascontiguousarray(x), kh, kw, stride, pads[0], pads[2], *out_hw)


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


@njit(parallel=True, cache=True)
def _shift_add(z, kh, kw, c_out, pt, pl, ho, wo, bias):
    """y[n, oh, ow, :] = bias + sum_{i, j} z[n, oh + i - pt, ow + j - pl, (i, j, :)] (stride 1);
    an empty ``bias`` is none."""
    n_img, h, w, _ = z.shape
    y = np.empty((n_img, ho, wo, c_out), dtype=z.dtype)
    for row in prange(n_img * ho):
        n, oh = row // ho, row % ho
        for ow in range(wo):
            for o in range(c_out):
                y[n, oh, ow, o] = bias[o] if bias.size else 0
            for i in range(kh):
                ih = oh - pt + i
                if ih < 0 or ih >= h:
                    continue
                for j in range(kw):
                    iw = ow - pl + j
                    if 0 <= iw < w:
                        base = (i * kw + j) * c_out
                        for o in range(c_out):
                            y[n, oh, ow, o] += z[n, ih, iw, base + o]
    return y


@njit(parallel=True, cache=True)
def _shift_add_few_channels(z, kh, kw, c_out, pt, pl, ho, wo, bias):
    """:func:`_shift_add` for a few output channels (the 1-channel head): each output channel of
    an output row is summed along the row, tap by tap, from a strided run of ``z``."""
    n_img, h, w, _ = z.shape
    y = np.empty((n_img, ho, wo, c_out), dtype=z.dtype)
    for row in prange(n_img * ho):
        n, oh = row // ho, row % ho
        acc = np.empty(wo, dtype=z.dtype)
        for o in range(c_out):
            acc[:] = bias[o] if bias.size else 0
            for i in range(kh):
                ih = oh - pt + i
                if ih < 0 or ih >= h:
                    continue
                for j in range(kw):
                    lo, hi = tap_columns(j, pl, w, wo, 1)
                    if hi == lo:
                        continue
                    src = z[n, ih, lo + j - pl:hi + j - pl, (i * kw + j) * c_out + o]
                    dst = acc[lo:hi]
                    for m in range(dst.size):
                        dst[m] += src[m]
            y[n, oh, :, o] = acc
    return y


def _output_side(kernel, stride):
    """Whether to multiply first and shift after (fewer bytes when C_out < C_in, stride 1)."""
    kh, kw, c_in, c_out = kernel.shape
    return stride == 1 and kh * kw > 1 and c_out < c_in


def conv2d_forward(x, kernel, bias, stride, pads, out_hw):
    """A k x k convolution as matrix products, shaped (N, Ho, Wo, C_out).

    Two exact formulations, chosen by which moves fewer bytes:
    * input side (C_out >= C_in, or stride > 1): y = im2col(x) @ kernel.reshape(k*k*C_in, C_out);
    * output side (C_out < C_in, stride 1): z = x @ kernel laid out as (C_in, k*k*C_out), then
      y[h, w] = sum_{i, j} z[h + i - pad, w + j - pad, (i, j)]  (:func:`_shift_add`).
    Returns ``(y, saved)``; ``saved`` is what :func:`conv2d_backward` needs (the im2col matrix,
    or the input for the output-side form).
    """
    kh, kw, c_in, c_out = kernel.shape
    n = x.shape[0]
    if kh == kw == 1 and not any(pads):  # a 1x1 convolution is a plain matrix product
        cols = np.ascontiguousarray(x[:, ::stride, ::stride, :]).reshape(-1, c_in)
        y, saved = matmul(cols, kernel.reshape(c_in, c_out), bias=bias), ("cols", cols)
    elif _output_side(kernel, stride):
        x = np.ascontiguousarray(x)
        wide = kernel.transpose(2, 0, 1, 3).reshape(c_in, kh * kw * c_out)
        z = matmul(x.reshape(-1, c_in), wide).reshape(*x.shape[:3], kh * kw * c_out)
        shift_add = _shift_add_few_channels if c_out <= FEW_CHANNELS else _shift_add
        y, saved = (shift_add(z, kh, kw, c_out, pads[0], pads[2], *out_hw,
                              bias_vector(bias, x.dtype)), ("input", x))
    else:
        cols = im2col(x, kh, kw, stride, pads, out_hw)
        y, saved = matmul(cols, kernel.reshape(-1, c_out), bias=bias), ("cols", cols)
    return y.reshape(n, out_hw[0], out_hw[1], c_out), saved


def conv2d_backward(dy, x_shape, kernel, saved, stride, pads, need_dx=True):
    """Gradients of :func:`conv2d_forward`: (dx, dkernel, dbias).

    dbias = sum of dy over N, H, W.
    1x1 or stride > 1: dkernel = cols^T @ dy;  dx = col2im(dy @ kernel^T).
    k x k, stride 1: D = im2col of dy padded by k-1-pad (each input pixel's window of output
    gradients), then dx = D @ (kernel rotated by 180 degrees, channel axes swapped) -- the
    convolution of dy with the flipped kernel -- and dkernel = cols^T @ dy (input side) or the
    flipped x^T @ D (output side, where no im2col of x was made).
    """
    kh, kw, c_in, c_out = kernel.shape
    kind, array = saved
    n, h, w, _ = x_shape
    out_hw = dy.shape[1:3]
    dy2 = dy.reshape(-1, c_out)
    dbias = column_sum(dy2)
    dx = dkernel = None
    if kh == kw == 1 and not any(pads) or stride != 1:
        dkernel = matmul(array, dy2, trans_a=True).reshape(kernel.shape)
        if need_dx:
            dcols = matmul(dy2, kernel.reshape(-1, c_out), trans_b=True)
            if kh == kw == 1 and stride == 1:
                dx = dcols.reshape(x_shape)
            elif kh == kw == 1:
                dx = np.zeros(x_shape, dy.dtype)
                dx[:, ::stride, ::stride, :] = dcols.reshape(n, *out_hw, c_in)
            else:
                dx = col2im(dcols, x_shape, kh, kw, stride, pads, out_hw)
        return dx, dkernel, dbias
    pt, pb, pl, pr = pads
    if need_dx or kind == "input":
        back_pads = (kh - 1 - pt, h - out_hw[0] + pt, kw - 1 - pl, w - out_hw[1] + pl)
        d = im2col(dy, kh, kw, 1, back_pads, (h, w))  # (N*H*W, kh*kw*C_out)
    if need_dx:
        rotated = kernel[::-1, ::-1].transpose(0, 1, 3, 2).reshape(-1, c_in)
        dx = matmul(d, rotated).reshape(x_shape)
    if kind == "cols":
        dkernel = matmul(array, dy2, trans_a=True).reshape(kernel.shape)
    else:  # x^T @ D holds dkernel with the window offsets flipped
        flipped = matmul(array.reshape(-1, c_in), d, trans_a=True).reshape(c_in, kh, kw, c_out)
        dkernel = np.ascontiguousarray(flipped[:, ::-1, ::-1, :].transpose(1, 2, 0, 3))
    return dx, dkernel, dbias


def transpose_kernel_as_conv(kernel):
    """A Conv2DTranspose kernel (kh, kw, C_out, C_in) as the equivalent convolution kernel.

    A stride-1 transposed convolution is the adjoint of a convolution; it equals a convolution
    with the kernel rotated by 180 degrees and its channel axes swapped: (kh, kw, C_in, C_out).
    """
    return np.ascontiguousarray(kernel[::-1, ::-1].transpose(0, 1, 3, 2))

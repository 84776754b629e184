"""Differentiable image ops (NHWC): the graph side of the numba kernels in ``tinyddpm.kernels``.

Each op's forward calls a forward kernel and its backward the matching backward kernel; the
arithmetic lives in the kernels, so this file only wires shapes and saved arrays.
"""
from __future__ import annotations

import numpy as np

from . import kernels as K
from . import ops
from .tensor import Function


class Conv2D(Function):
    """y = conv(x, kernel) + bias, kernel (kh, kw, C_in, C_out), Keras padding rule."""
    @staticmethod
    def forward(ctx, x, kernel, bias, stride=1, padding="valid"):
        out_hw, pads = K.conv2d_geometry(x.shape, kernel.shape, stride, padding)
        y, saved = K.conv2d_forward(x, kernel, bias, stride, pads, out_hw)
        ctx.args = x.shape, kernel, saved, stride, pads
        return y

    @staticmethod
    def backward(ctx, g):
        x_shape, kernel, saved, stride, pads = ctx.args
        dx, dk, db = K.conv2d_backward(g, x_shape, kernel, saved, stride, pads,
                                       need_dx=ctx.needs_input_grad[0])
        return dx, dk, db


class Conv2DTranspose(Function):
    """Transposed convolution, stride 1: kernel (kh, kw, C_out, C_in) as in Keras.

    Computed as a convolution with the rotated, channel-swapped kernel
    (:func:`tinyddpm.kernels.transpose_kernel_as_conv`), padded so ``same`` keeps the size.
    """
    @staticmethod
    def forward(ctx, x, kernel, bias, padding="same"):
        kh, kw = kernel.shape[:2]
        conv_kernel = K.transpose_kernel_as_conv(kernel)
        if padding == "same":  # the adjoint of a 'same' conv: its padding, before/after swapped
            out_hw, (pt, pb, pl, pr) = K.conv2d_geometry(x.shape, conv_kernel.shape, 1, "same")
            pads = (pb, pt, pr, pl)
        elif padding == "valid":  # the adjoint of a 'valid' conv is a 'full' conv
            out_hw, pads = (x.shape[1] + kh - 1, x.shape[2] + kw - 1), (kh - 1, kh - 1, kw - 1, kw - 1)
        else:
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        y, saved = K.conv2d_forward(x, conv_kernel, bias, 1, pads, out_hw)
        ctx.args = x.shape, conv_kernel, saved, pads
        return y

    @staticmethod
    def backward(ctx, g):
        x_shape, conv_kernel, saved, pads = ctx.args
        dx, dk, db = K.conv2d_backward(g, x_shape, conv_kernel, saved, 1, pads,
                                       need_dx=ctx.needs_input_grad[0])
        return dx, K.transpose_kernel_as_conv(dk), db  # the rotation is its own inverse


class DepthwiseConv2D(Function):
    """y[n,h,w,c] = sum_{i,j} xpad[n,h+i,w+j,c] k[i,j,c]; kernel (kh, kw, C, 1) as in Keras."""
    @staticmethod
    def forward(ctx, x, kernel, padding="same"):
        k = np.ascontiguousarray(kernel[:, :, :, 0])
        out_hw, pads = K.conv2d_geometry(x.shape, k.shape, 1, padding)
        ctx.save_for_backward(x, k)
        ctx.pads = pads
        return K.depthwise_forward(x, k, pads[0], pads[2], *out_hw)

    @staticmethod
    def backward(ctx, g):
        x, k = ctx.saved
        pt, _, pl, _ = ctx.pads
        dx, dk = K.depthwise_backward(x, g, k, pt, pl)
        return dx, dk[:, :, :, None]


class MaxPool2D(Function):
    """Max over pool x pool windows with the given stride; Keras padding rule."""
    @staticmethod
    def forward(ctx, x, pool=3, stride=2, padding="same"):
        out_hw, pads = K.conv2d_geometry(x.shape, (pool, pool), stride, padding)
        keep = ctx.needs_input_grad[0]  # the winners' positions only when a backward will follow
        y, arg = K.maxpool_forward(np.ascontiguousarray(x), pool, stride, pads[0], pads[2], *out_hw,
                                   keep)
        ctx.args = arg, x.shape
        return y

    @staticmethod
    def backward(ctx, g):
        arg, (_, h, w, _) = ctx.args
        return K.maxpool_backward(np.ascontiguousarray(g), arg, h, w)


class UpSample2D(Function):
    """Nearest-neighbour up-sampling by an integer factor."""
    @staticmethod
    def forward(ctx, x, factor=2):
        ctx.factor = factor
        return K.upsample_forward(np.ascontiguousarray(x), factor)

    @staticmethod
    def backward(ctx, g):
        return K.upsample_backward(np.ascontiguousarray(g), ctx.factor)


class BatchNormTrain(Function):
    """Batch norm with the batch's statistics; ``stats`` (a dict) receives mean and var."""
    @staticmethod
    def forward(ctx, x, gamma, beta, eps=1e-3, stats=None):
        y, mean, var = K.batchnorm_forward_train(np.ascontiguousarray(x), gamma, beta, eps)
        ctx.save_for_backward(x, gamma, mean, var)
        ctx.eps = eps
        if stats is not None:
            stats["mean"], stats["var"] = mean, var
        return y

    @staticmethod
    def backward(ctx, g):
        x, gamma, mean, var = ctx.saved
        return K.batchnorm_backward(np.ascontiguousarray(g), np.ascontiguousarray(x),
                                    gamma, mean, var, ctx.eps)


class BatchNormInfer(Function):
    """Batch norm with fixed (moving) statistics: an affine map per channel."""
    @staticmethod
    def forward(ctx, x, gamma, beta, moving_mean, moving_var, eps=1e-3):
        inv_std = 1.0 / np.sqrt(moving_var + eps)
        ctx.save_for_backward(x, gamma, moving_mean, inv_std)
        return K.batchnorm_forward_infer(np.ascontiguousarray(x), gamma, beta, moving_mean,
                                         moving_var, eps)

    @staticmethod
    def backward(ctx, g):
        x, gamma, mean, inv_std = ctx.saved
        axes = tuple(range(g.ndim - 1))
        xhat = (x - mean) * inv_std
        return g * (gamma * inv_std), (g * xhat).sum(axis=axes), g.sum(axis=axes), None, None


class GroupNorm(Function):
    """Group norm: statistics per image over H, W and the channels of each of ``groups`` groups."""
    @staticmethod
    def forward(ctx, x, gamma, beta, groups=32, eps=1e-3):
        x = np.ascontiguousarray(x)
        y, mean, inv_std = K.groupnorm_forward(x, gamma, beta, groups, eps)
        ctx.save_for_backward(x, gamma, mean, inv_std)
        return y

    @staticmethod
    def backward(ctx, g):
        x, gamma, mean, inv_std = ctx.saved
        return K.groupnorm_backward(np.ascontiguousarray(g), x, gamma, mean, inv_std)


def conv2d(x, kernel, bias=None, stride=1, padding="valid"):
    return Conv2D.apply(x, kernel, bias, stride=stride, padding=padding)


class Dilate(Function):
    """Zeros between the pixels: y[:, i s, j s] = x[:, i, j], y of size ((H-1) s + 1,
    (W-1) s + 1). A transposed convolution with stride s is this, then one with stride 1."""
    @staticmethod
    def forward(ctx, x, stride):
        n, h, w, c = x.shape
        y = np.zeros((n, (h - 1) * stride + 1, (w - 1) * stride + 1, c), x.dtype)
        y[:, ::stride, ::stride] = x
        ctx.stride = stride
        return y

    @staticmethod
    def backward(ctx, g):
        return (np.ascontiguousarray(g[:, ::ctx.stride, ::ctx.stride]),)


def conv2d_transpose(x, kernel, bias=None, padding="same", stride=1):
    """Transposed convolution; with ``stride`` s > 1 the output is H s (``same``) or
    H s + max(k - s, 0) (``valid``), as Keras' ``Conv2DTranspose``: the adjoint of the strided
    convolution that maps that size back to H (its padding, ``same``: max(k - s, 0) split with
    the smaller half first, cropped here; rows it never reads are zeros)."""
    if stride == 1:
        return Conv2DTranspose.apply(x, kernel, bias, padding=padding)
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    y = Conv2DTranspose.apply(Dilate.apply(x, stride=stride), kernel, None, padding="valid")
    window = []
    for size, k in zip(x.shape[1:3], kernel.shape[:2]):
        length = size * stride + (0 if padding == "same" else max(k - stride, 0))
        start = max(k - stride, 0) // 2 if padding == "same" else 0
        window.append((start, length))
    (top, height), (left, width) = window
    y = y[:, top:top + height, left:left + width]
    short = (height - y.shape[1], width - y.shape[2])
    if any(short):
        y = ops.pad(y, ((0, 0), (0, short[0]), (0, short[1]), (0, 0)))
    return y if bias is None else y + bias


def depthwise_conv2d(x, kernel, padding="same"):
    return DepthwiseConv2D.apply(x, kernel, padding=padding)


def max_pool2d(x, pool=3, stride=2, padding="same"):
    return MaxPool2D.apply(x, pool=pool, stride=stride, padding=padding)


def upsample2d(x, factor=2):
    return UpSample2D.apply(x, factor=factor)


def batch_norm_train(x, gamma, beta, eps=1e-3, stats=None):
    return BatchNormTrain.apply(x, gamma, beta, eps=eps, stats=stats)


def batch_norm_infer(x, gamma, beta, moving_mean, moving_var, eps=1e-3):
    return BatchNormInfer.apply(x, gamma, beta, moving_mean, moving_var, eps=eps)


def group_norm(x, gamma, beta, groups=32, eps=1e-3):
    return GroupNorm.apply(x, gamma, beta, groups=groups, eps=eps)

"""Fast kernels: plain arrays in, plain arrays out, no graph. ``reference.py`` holds the slow,
obvious NumPy version of each one; the tests compare the two.

The numba loops run on one thread: the matrix products (most of the arithmetic) already use every
core through NumPy's BLAS, whose worker threads keep spinning for a while after each call. Numba's
own worker threads on top of them oversubscribed the 2 cores here and made a training step about
5x slower (measured: 540 ms vs 110 ms at batch 32).
"""
from .conv import (conv2d_backward, conv2d_forward, conv2d_geometry, conv_output_and_padding,
                   col2im, im2col, transpose_kernel_as_conv)
from .depthwise import depthwise_backward, depthwise_forward
from .norm import (batchnorm_backward, batchnorm_forward_infer, batchnorm_forward_train,
                   groupnorm_backward, groupnorm_forward)
from .pooling import maxpool_backward, maxpool_forward, upsample_backward, upsample_forward

__all__ = [name for name in dir() if not name.startswith("_")]

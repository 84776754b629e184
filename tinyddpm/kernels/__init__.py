"""Fast kernels: plain arrays in, plain arrays out, no graph. ``reference.py`` holds the slow,
obvious NumPy version of each one; the tests compare the two.

All of them run on numba's threads (``parallel=True``, one image or one block of rows per
thread), and so do the matrix products: ``blas.py`` sets NumPy's OpenBLAS to one thread and
splits each product over numba's threads itself. One thread pool, because two fight: OpenBLAS's
workers keep spinning for a while after each product, and numba's workers beside them
oversubscribed the 2 cores here (a training step took 540 ms instead of 110 ms at batch 32 when
both pools were live). ``NUMBA_NUM_THREADS`` sets the number of threads.
"""
from .attention import attention_backward, attention_forward
from .blas import matmul
from .conv import (conv2d_backward, conv2d_forward, conv2d_geometry, conv_output_and_padding,
                   col2im, im2col, transpose_kernel_as_conv)
from .depthwise import depthwise_backward, depthwise_forward
from .norm import (batchnorm_backward, batchnorm_forward_infer, batchnorm_forward_train,
                   groupnorm_backward, groupnorm_forward)
from .pooling import maxpool_backward, maxpool_forward, upsample_backward, upsample_forward

__all__ = [name for name in dir() if not name.startswith("_")]

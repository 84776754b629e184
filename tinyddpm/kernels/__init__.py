"""Fast kernels: plain arrays in, plain arrays out, no graph. ``reference.py`` holds the slow,
obvious NumPy version of each one; the tests compare the two."""
from .conv import (conv2d_backward, conv2d_forward, conv2d_geometry, conv_output_and_padding,
                   col2im, im2col, transpose_kernel_as_conv)
from .depthwise import depthwise_backward_input, depthwise_backward_kernel, depthwise_forward
from .norm import (batchnorm_backward, batchnorm_forward_infer, batchnorm_forward_train,
                   groupnorm_backward, groupnorm_forward)
from .pooling import maxpool_backward, maxpool_forward, upsample_backward, upsample_forward

__all__ = [name for name in dir() if not name.startswith("_")]

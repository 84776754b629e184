"""Assignment 8: the backward pass of broadcasting, `unbroadcast` (the engine, lessons 3 and 12).

Fill in `unbroadcast` below, then check your work with the autograder:

    python -m tinyddpm.grade 8 08_unbroadcast.py

You may run this file directly too (`python 08_unbroadcast.py`) to print a few values.
Edit only this file. NumPy is all you need.

Background. NumPy broadcasts: adding a bias b of shape (C,) to x of shape (N, H, W, C), or a
per-image time embedding of shape (N, 1, 1, C) to a feature map, uses each value of b many
times. In the forward pass, y = x + b stretches b to y's shape:

    b (C,)  ->  (1, 1, 1, C)  ->  (N, H, W, C)       (new axes in front, then size-1 axes copied)

In the backward pass the chain rule adds up the gradient of every copy: a value used k times
gets the sum of its k gradients. So the gradient that reaches b is dL/dy summed

    * over the axes broadcasting added in front (here N, H and W), and
    * over the axes where b had size 1 and y did not, keeping them (size 1 again),

which gives back an array of b's own shape. Every binary op of an autograd engine needs this
(`tinyddpm/ops.py`: Add, Mul, Sub, ... call it on both inputs' gradients).

    unbroadcast(np.ones((2, 3, 4)), (4,))      -> [6., 6., 6., 6.]        (summed over 2 x 3)
    unbroadcast(np.ones((2, 3, 4)), (3, 1))    -> [[4.], [4.], [4.]] x 2  (axis 0 away, axis 2 kept)
"""
import numpy as np


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: the backward of NumPy broadcasting.

    grad: ndarray, the gradient of a broadcast result (its shape is the broadcast of ``shape``
          with something else). shape: tuple of ints, the shape of the input that was
          broadcast (() for a scalar).
    Returns an ndarray of exactly ``shape``, grad's dtype: grad summed over the leading axes
    broadcasting added, and over the axes where ``shape`` has 1 and grad does not (kept, size 1).
    Returns grad itself when its shape is already ``shape``.
    """
    raise NotImplementedError("sum over the leading axes broadcasting added, then over "
                              "the size-1 axes of shape (keepdims=True)")


if __name__ == "__main__":
    g = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    for shape in ((2, 3, 4), (4,), (3, 1), (1, 4), ()):
        out = unbroadcast(g, shape)
        print(f"to {shape}: shape {np.shape(out)}, dtype {out.dtype}, values {np.ravel(out)[:4]}")

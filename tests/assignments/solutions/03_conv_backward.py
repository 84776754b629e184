### BEGIN SOLUTION
"""SOLUTION of assignment 3: a correct answer, for teachers and tests (not shipped in the package).

(The student's file lessons/assignments/03_conv_backward.py is made from this one: python -m tinyddpm.grade.assign.)
"""
### END SOLUTION
"""Assignment 3: the backward pass of a convolution (slides "Building the Model", "Training").

The U-Net of the slides is mostly convolutions, and training it (model.fit) needs the gradient
of the loss with respect to each convolution's input and kernel. Here you write that backward
pass for the plainest convolution: stride 1, no padding ("valid"), no bias, NHWC layout as in
Keras and tinyddpm.

Fill in `conv2d_backward` below, then check your work with the autograder:

    python -m tinyddpm.grade 3 03_conv_backward.py

The grader compares your gradients with those of tinyddpm's own Conv2D op (tinyddpm.functional,
whose backward is built on im2col and one matrix product). Edit only this file.

The forward pass (given, below):

    y[n, h, w, o] = sum_{i, j, c} x[n, h + i, w + j, c] * w[i, j, c, o]

for h = 0..H-kh, w = 0..W-kw. Given dy = dL/dy (same shape as y), the chain rule gives

    dw[i, j, c, o] = sum_{n, h, w} x[n, h + i, w + j, c] * dy[n, h, w, o]
    dx[n, h + i, w + j, c] += sum_o dy[n, h, w, o] * w[i, j, c, o]    (for every i, j, h, w)

Each input pixel is used by several outputs (one per kernel position), so its gradient is a
sum: accumulate (+=), do not overwrite.
"""
import numpy as np


def conv2d_forward(x, w):
    """Given: a 'valid' convolution with stride 1, written as one matrix product per kernel tap.

    x : (N, H, W, C_in), w : (kh, kw, C_in, C_out)  ->  y : (N, H - kh + 1, W - kw + 1, C_out)
    """
    kh, kw, _, c_out = w.shape
    n, h, wd, _ = x.shape
    ho, wo = h - kh + 1, wd - kw + 1
    y = np.zeros((n, ho, wo, c_out), dtype=np.result_type(x, w))
    for i in range(kh):
        for j in range(kw):
            # the input window seen by kernel tap (i, j), for every output pixel at once
            y += x[:, i:i + ho, j:j + wo, :] @ w[i, j]          # (N, Ho, Wo, C_in) @ (C_in, C_out)
    return y


def conv2d_backward(x, w, dy):
    """Gradients of a loss L through y = conv2d_forward(x, w).

    Parameters
    ----------
    x : numpy.ndarray, shape (N, H, W, C_in)
        The input of the forward pass.
    w : numpy.ndarray, shape (kh, kw, C_in, C_out)
        The kernel (kh and kw may differ).
    dy : numpy.ndarray, shape (N, H - kh + 1, W - kw + 1, C_out)
        dL/dy, the gradient arriving from the layer above.

    Returns
    -------
    dx : numpy.ndarray, shape (N, H, W, C_in), same dtype as x
        dL/dx.
    dw : numpy.ndarray, shape (kh, kw, C_in, C_out), same dtype as w
        dL/dw.

    Hints
    -----
    * Mirror the forward loop over the kernel taps (i, j). In the forward pass, tap (i, j)
      computes  y += X_ij @ w[i, j]  with X_ij = x[:, i:i+Ho, j:j+Wo, :]. For a matrix product
      Y = A @ B, dA = dY @ B.T and dB = A.T @ dY (summed over every leading axis).
    * So dw[i, j] gets X_ij "transposed" times dy, summed over N, Ho and Wo:
      np.tensordot(X_ij, dy, axes=([0, 1, 2], [0, 1, 2])) has shape (C_in, C_out).
    * And dx[:, i:i+Ho, j:j+Wo, :] += dy @ w[i, j].T.
    * Start from np.zeros_like(x) and np.zeros_like(w) so the dtypes match the inputs.
    * Test a 1x1 kernel first: then dx = dy @ w[0, 0].T.
    """
    ### BEGIN SOLUTION
    kh, kw = w.shape[:2]
    ho, wo = dy.shape[1:3]
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    for i in range(kh):
        for j in range(kw):
            window = x[:, i:i + ho, j:j + wo, :]                       # (N, Ho, Wo, C_in)
            dw[i, j] = np.tensordot(window, dy, axes=([0, 1, 2], [0, 1, 2]))
            dx[:, i:i + ho, j:j + wo, :] += dy @ w[i, j].T
    return dx, dw
    ### END SOLUTION
    ### STUB raise NotImplementedError("loop over the kernel taps (i, j) and accumulate dx and dw")


if __name__ == "__main__":
    # a finite-difference check of one element of dw, the way tinyddpm.gradcheck does it
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 5, 3))
    w = rng.standard_normal((3, 3, 3, 4))
    dy = rng.standard_normal((2, 3, 3, 4))
    dx, dw = conv2d_backward(x, w, dy)
    h = 1e-6
    w_up, w_down = w.copy(), w.copy()
    w_up[1, 2, 0, 3] += h
    w_down[1, 2, 0, 3] -= h
    numeric = ((conv2d_forward(x, w_up) - conv2d_forward(x, w_down)) * dy).sum() / (2 * h)
    print(f"dw[1, 2, 0, 3]: yours {dw[1, 2, 0, 3]:.6f}, finite differences {numeric:.6f}")

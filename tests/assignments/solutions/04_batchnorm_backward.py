### BEGIN SOLUTION
"""SOLUTION of assignment 4: a correct answer, for teachers and tests (not shipped in the package).

(The student's file lessons/assignments/04_batchnorm_backward.py is made from this one: python -m tinyddpm.grade.assign.)
"""
### END SOLUTION
"""Assignment 4: the backward pass of BatchNorm in training mode (slide "Building the Model").

Every convolution of the book's U-Net is followed by BatchNormalization. In training mode it
normalises each channel with the mean and variance of the current batch, so the gradient flows
not only through x directly but also through the batch mean and the batch variance, which
depend on every x in the batch.

Fill in `batchnorm_backward` below, then check your work with the autograder:

    python -m tinyddpm.grade 4 04_batchnorm_backward.py

The grader compares your gradients with tinyddpm's own BatchNorm op (tinyddpm.functional.
batch_norm_train, whose backward is a numba kernel). Edit only this file.

The forward pass (given, below), per channel c, over the m = N*H*W values of that channel:

    mu      = mean(x)                        (over every axis but the last)
    var     = mean((x - mu) ** 2)            (the biased variance, as Keras)
    x_hat   = (x - mu) / sqrt(var + eps)
    y       = gamma * x_hat + beta

Given dy = dL/dy, the backward pass is

    dbeta   = sum(dy)
    dgamma  = sum(dy * x_hat)
    dx      = gamma / sqrt(var + eps) * (dy - mean(dy) - x_hat * mean(dy * x_hat))

(the sums and means over every axis but the last). Derive dx yourself if you can: write
dL/dx_hat = dy * gamma, then follow x_hat back to x, mu and var (Ioffe & Szegedy, 2015).
"""
import numpy as np


def batchnorm_forward(x, gamma, beta, eps=1e-3):
    """Given: BatchNorm in training mode. x (..., C), gamma and beta (C,) -> y, same shape as x."""
    axes = tuple(range(x.ndim - 1))
    mu = x.mean(axis=axes)
    var = x.var(axis=axes)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma * x_hat + beta


def batchnorm_backward(dy, x, gamma, eps=1e-3):
    """Gradients of a loss L through y = batchnorm_forward(x, gamma, beta, eps).

    Parameters
    ----------
    dy : numpy.ndarray, same shape as x
        dL/dy.
    x : numpy.ndarray, shape (N, H, W, C) -- or (N, C) after a Dense layer
        The input of the forward pass. Statistics are over every axis but the last.
    gamma : numpy.ndarray, shape (C,)
        The scale. (beta, the shift, is not needed: it does not change any gradient.)
    eps : float
        The small constant added to the variance (Keras' default 1e-3).

    Returns
    -------
    dx : numpy.ndarray, same shape and dtype as x
    dgamma : numpy.ndarray, shape (C,), same dtype as x
    dbeta : numpy.ndarray, shape (C,), same dtype as x

    Hints
    -----
    * axes = tuple(range(x.ndim - 1)) works for both (N, H, W, C) and (N, C).
    * Recompute mu, var and x_hat exactly as the forward pass does.
    * (C,)-shaped arrays broadcast against (..., C) arrays: no reshaping is needed.
    * A quick self-check: for each channel, dx sums to 0 (shifting every x of a channel by the
      same amount changes nothing after normalisation).
    """
    ### BEGIN SOLUTION
    axes = tuple(range(x.ndim - 1))
    inv_std = 1 / np.sqrt(x.var(axis=axes) + eps)
    x_hat = (x - x.mean(axis=axes)) * inv_std
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    dx = gamma * inv_std * (dy - dy.mean(axis=axes) - x_hat * (dy * x_hat).mean(axis=axes))
    return dx.astype(x.dtype), dgamma.astype(x.dtype), dbeta.astype(x.dtype)
    ### END SOLUTION
    ### STUB raise NotImplementedError("recompute x_hat, then dbeta, dgamma and dx")


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 3, 2)) * 2 + 1
    gamma, beta = np.array([1.5, 0.5]), np.array([0.1, -0.2])
    dy = rng.standard_normal(x.shape)
    dx, dgamma, dbeta = batchnorm_backward(dy, x, gamma)
    print("dx sums per channel (should be ~0):", dx.sum(axis=(0, 1, 2)))
    h = 1e-6
    x_up, x_down = x.copy(), x.copy()
    x_up[1, 2, 0, 1] += h
    x_down[1, 2, 0, 1] -= h
    numeric = ((batchnorm_forward(x_up, gamma, beta) - batchnorm_forward(x_down, gamma, beta))
               * dy).sum() / (2 * h)
    print(f"dx[1, 2, 0, 1]: yours {dx[1, 2, 0, 1]:.6f}, finite differences {numeric:.6f}")

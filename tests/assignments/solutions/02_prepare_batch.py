### BEGIN SOLUTION
"""SOLUTION of assignment 2: a correct answer, for teachers and tests (not shipped in the package).

(The student's file lessons/assignments/02_prepare_batch.py is made from this one: python -m tinyddpm.grade.assign.)
"""
### END SOLUTION
"""Assignment 2: preparing a training batch (slide "Preparing Batch for Training").

Fill in `prepare_batch` below, then check your work with the autograder:

    python -m tinyddpm.grade 2 02_prepare_batch.py

Edit only this file. NumPy is all you need.

Background (the slides). To learn the reverse process, the model needs noisy images from every
step of the forward process, together with the noise that was added (its training target).
Thanks to the shortcut

    q(x_t | x_0) = N( sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I )

we can jump straight from a clean image x_0 to x_t in one go:

    x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps,      eps ~ N(0, I)

The slide's TensorFlow code:

    def prepare_batch(X):
        X = tf.cast(X[..., tf.newaxis], tf.float32) * 2 - 1  # scale from -1 to +1
        X_shape = tf.shape(X)
        t = tf.random.uniform([X_shape[0]], minval=1, maxval=T + 1, dtype=tf.int32)
        alpha_cm = tf.gather(alpha_cumprod, t)
        alpha_cm = tf.reshape(alpha_cm, [X_shape[0]] + [1] * (len(X_shape) - 1))
        noise = tf.random.normal(X_shape)
        return {
            "X_noisy": alpha_cm ** 0.5 * X + (1 - alpha_cm) ** 0.5 * noise,
            "time": t,
        }, noise

Your version is NumPy, and takes the schedule and the random generator as arguments instead
of using globals.
"""
import numpy as np


def prepare_batch(X, alpha_cumprod, rng):
    """Turn a batch of clean images into (inputs, target) for training the denoiser.

    Parameters
    ----------
    X : numpy.ndarray, shape (N, H, W), float32
        Clean images with pixels in [0, 1] (Fashion-MNIST: H = W = 28).
    alpha_cumprod : numpy.ndarray, shape (T + 1,), float32
        alpha_bar_t for t = 0..T (from the cosine schedule). T = len(alpha_cumprod) - 1.
    rng : numpy.random.Generator
        Draw *every* random number from it (rng.integers, rng.standard_normal), so that the
        same seed gives the same batch.

    Returns
    -------
    inputs : dict
        "X_noisy": numpy.ndarray, shape (N, H, W, 1), float32 -- the noisy images x_t;
        "time": numpy.ndarray, shape (N,), an integer dtype -- each image's own t, drawn
        uniformly from 1..T (both ends included).
    noise : numpy.ndarray, shape (N, H, W, 1), float32
        The eps that was added: standard normal, one value per pixel.

    Hints
    -----
    * Add the channel axis with X[..., np.newaxis], then scale [0, 1] to [-1, 1] with X * 2 - 1.
    * rng.integers(low, high, size=N) excludes `high`.
    * alpha_cumprod[t] gathers one alpha_bar per image, shape (N,); reshape it to (N, 1, 1, 1)
      so that it broadcasts against the images.
    * rng.standard_normal(shape, dtype=np.float32) draws float32 noise directly.
    """
    ### BEGIN SOLUTION
    T = len(alpha_cumprod) - 1
    x = X[..., np.newaxis].astype(np.float32) * 2 - 1       # [0, 1] -> [-1, 1]
    n = x.shape[0]
    time = rng.integers(1, T + 1, size=n)                    # one t per image, 1..T
    noise = rng.standard_normal(x.shape, dtype=np.float32)
    abar = np.asarray(alpha_cumprod, dtype=np.float32)[time].reshape(n, 1, 1, 1)
    x_noisy = np.sqrt(abar) * x + np.sqrt(1 - abar) * noise
    return {"X_noisy": x_noisy.astype(np.float32), "time": time}, noise
    ### END SOLUTION
    ### STUB raise NotImplementedError("scale X, draw t and the noise from rng, apply the shortcut")


if __name__ == "__main__":
    t = np.arange(101)
    f = np.cos((t / 100 + 0.008) / 1.008 * np.pi / 2) ** 2
    alpha_cumprod = (f / f[0]).astype(np.float32)
    X = np.random.default_rng(0).random((4, 28, 28), dtype=np.float32)
    inputs, noise = prepare_batch(X, alpha_cumprod, np.random.default_rng(42))
    print("X_noisy:", inputs["X_noisy"].shape, inputs["X_noisy"].dtype)
    print("time:", inputs["time"], "noise:", noise.shape, noise.dtype)

### BEGIN SOLUTION
"""SOLUTION of assignment 5: a correct answer, for teachers and tests (not shipped in the package).

(The student's file lessons/assignments/05_ddpm_step.py is made from this one: python -m tinyddpm.grade.assign.)
"""
### END SOLUTION
"""Assignment 5: one reverse (DDPM) step, and the sampling loop (slides "Generating New Images").

Fill in `ddpm_step` and `generate` below, then check your work with the autograder:

    python -m tinyddpm.grade 5 05_ddpm_step.py

The grader compares your step with tinyddpm.sampling.ddpm_step, and runs your loop with a
fake "model" that records the time steps it is asked about. Edit only this file.

Background (the slides). There is no shortcut in the reverse process: start from pure noise
x_T ~ N(0, I), and at each step let the model predict the noise eps_theta(x_t, t), remove a
little of it, and add back a little fresh noise:

    x_{t-1} = 1/sqrt(alpha_t) * ( x_t - beta_t / sqrt(1 - alpha_bar_t) * eps_theta(x_t, t) )
              + sqrt(beta_t) * z,            z ~ N(0, I),  and z = 0 at the last step (t = 1)

The slide's loop:

    def generate(model, batch_size=32):
        X = tf.random.normal([batch_size, 28, 28, 1])
        for t in range(T - 1, 0, -1):
            noise = (tf.random.normal if t > 1 else tf.zeros)(tf.shape(X))
            X_noise = model({"X_noisy": X, "time": tf.constant([t] * batch_size)})
            X = (
                1 / alpha[t] ** 0.5
                * (X - beta[t] / (1 - alpha_cumprod[t]) ** 0.5 * X_noise)
                + (1 - alpha[t]) ** 0.5 * noise
            )
        return X
"""
import numpy as np


def ddpm_step(x_t, eps, t, alpha, alpha_cumprod, beta, z):
    """One reverse step, from x_t to x_{t-1}.

    Parameters
    ----------
    x_t : numpy.ndarray, shape (N, H, W, C), float32
        The current (noisy) images.
    eps : numpy.ndarray, same shape, float32
        The noise the model predicts for x_t at step t, eps_theta(x_t, t).
    t : int
        The current time step, 1..T.
    alpha, alpha_cumprod, beta : numpy.ndarray, shape (T + 1,), float32
        The schedule: alpha_t, alpha_bar_t and beta_t for t = 0..T (assignment 1).
    z : numpy.ndarray, same shape as x_t, float32
        Fresh standard normal noise (all zeros at the last step).

    Returns
    -------
    numpy.ndarray, same shape as x_t, float32
        x_{t-1}.

    Hints
    -----
    * alpha[t], alpha_cumprod[t] and beta[t] are scalars here (every image is at the same t).
    * sqrt(beta_t) and sqrt(1 - alpha_t) are the same number.
    * NumPy may promote float32 to float64 along the way: .astype(np.float32) at the end.
    """
    ### BEGIN SOLUTION
    a, ab, b = float(alpha[t]), float(alpha_cumprod[t]), float(beta[t])
    mean = (x_t - b / np.sqrt(1 - ab) * eps) / np.sqrt(a)
    return (mean + np.sqrt(b) * z).astype(np.float32)
    ### END SOLUTION
    ### STUB raise NotImplementedError("write the slide's equation for x_{t-1}")


def generate(predict_noise, x_T, alpha, alpha_cumprod, beta, rng):
    """The slide's sampling loop: apply ddpm_step for t = T-1, T-2, ..., 1.

    Parameters
    ----------
    predict_noise : callable
        predict_noise(x, t) -> eps, the model's noise prediction for the images x (N, H, W, C)
        at step t (pass t as an int).
    x_T : numpy.ndarray, shape (N, H, W, C), float32
        The starting pure noise.
    alpha, alpha_cumprod, beta : numpy.ndarray, shape (T + 1,), float32
        The schedule. T = len(alpha) - 1.
    rng : numpy.random.Generator
        Draw each z with rng.standard_normal(x.shape, dtype=np.float32), one z per step for
        t = T-1 down to 2, in that order; at t = 1 use z = 0 (np.zeros_like(x)).

    Returns
    -------
    numpy.ndarray, shape (N, H, W, C), float32
        The generated images x_0, in about [-1, 1] (not rescaled).

    Hints
    -----
    * range(T - 1, 0, -1) counts T-1, T-2, ..., 1, exactly as on the slide.
    * Call your own ddpm_step.
    """
    ### BEGIN SOLUTION
    T = len(alpha) - 1
    x = x_T
    for t in range(T - 1, 0, -1):
        z = rng.standard_normal(x.shape, dtype=np.float32) if t > 1 else np.zeros_like(x)
        x = ddpm_step(x, predict_noise(x, t), t, alpha, alpha_cumprod, beta, z)
    return x
    ### END SOLUTION
    ### STUB raise NotImplementedError("loop t = T-1 .. 1: predict the noise, draw z, take a step")


if __name__ == "__main__":
    T = 50
    t = np.arange(T + 1)
    f = np.cos((t / T + 0.008) / 1.008 * np.pi / 2) ** 2
    alpha = np.append(1, np.clip(f[1:] / f[:-1], 0.001, 1)).astype(np.float32)
    beta, alpha_cumprod = 1 - alpha, np.cumprod(alpha)
    rng = np.random.default_rng(0)
    x_T = rng.standard_normal((2, 4, 4, 1), dtype=np.float32)
    # a "model" that always predicts zero noise: the loop just rescales and adds noise
    x_0 = generate(lambda x, t: np.zeros_like(x), x_T, alpha, alpha_cumprod, beta, rng)
    print("x_0:", x_0.shape, x_0.dtype, "std", float(x_0.std()))

### BEGIN SOLUTION
"""SOLUTION of assignment 1: a correct answer, for teachers and tests (not shipped in the package).

(The student's file lessons/assignments/01_cosine_schedule.py is made from this one: python -m tinyddpm.grade.assign.)
"""
### END SOLUTION
"""Assignment 1: the cosine variance schedule (slides "Variance Schedule").

Fill in `variance_schedule` below, then check your work with the autograder:

    python -m tinyddpm.grade 1 01_cosine_schedule.py

You may run this file directly too (`python 01_cosine_schedule.py`) to print a few values.
Edit only this file. NumPy is all you need.

Background (the slides). The forward process adds Gaussian noise of variance beta_t at step t
and rescales the image by sqrt(1 - beta_t). With alpha_t = 1 - beta_t, after t steps the "cat
signal" has been multiplied by

    alpha_bar_t = alpha_1 * alpha_2 * ... * alpha_t

and this alpha_bar_t is what we schedule: it should shrink gradually from 1 (t = 0, the clean
image) to 0 (t = T, pure noise). The cosine schedule (Nichol & Dhariwal, 2021) chooses

    f(t) = cos( (t/T + s) / (1 + s) * pi/2 ) ** 2,     alpha_bar_t = f(t) / f(0)

so that

    beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}     (that is, alpha_t = f(t) / f(t-1))

with beta_t clipped to at most max_beta (f(T) = 0 would make beta_T = 1, and the DDPM step
divides by sqrt(alpha_t)). After the clip, alpha_bar_t is recomputed as the cumulative product
of the clipped alpha_t.
"""
import numpy as np


def variance_schedule(T, s=0.008, max_beta=0.999):
    """The cosine schedule: (alpha, alpha_cumprod, beta), one value for each t = 0..T.

    Parameters
    ----------
    T : int
        The number of diffusion steps (the book uses T = 4000).
    s : float
        The small offset in f(t) (keeps beta_t from being too small near t = 0).
    max_beta : float
        The largest beta_t allowed; clip beta_t at this value.

    Returns
    -------
    alpha : numpy.ndarray, shape (T + 1,), dtype float32
        alpha_t = 1 - beta_t for t = 0..T, with alpha_0 = 1.
    alpha_cumprod : numpy.ndarray, shape (T + 1,), dtype float32
        alpha_bar_t = alpha_1 * ... * alpha_t for t = 0..T, with alpha_bar_0 = 1.
    beta : numpy.ndarray, shape (T + 1,), dtype float32
        beta_t for t = 0..T, with beta_0 = 0 and beta_t <= max_beta.

    Hints
    -----
    * t = np.arange(T + 1) gives every time step at once: no Python loop is needed.
    * The ratios f(t) / f(t-1) for t = 1..T are f[1:] / f[:-1].
    * "beta_t <= max_beta" is the same as "alpha_t >= 1 - max_beta": np.clip.
    * Put alpha_0 = 1 in front with np.append (or np.concatenate), convert to float32 *before*
      computing beta and the cumulative product (np.cumprod), so that alpha + beta == 1 exactly.
    """
    ### BEGIN SOLUTION
    steps = np.arange(T + 1) / T
    f = np.cos((steps + s) / (1 + s) * (np.pi / 2)) ** 2
    ratios = f[1:] / f[:-1]                                  # alpha_t = f(t) / f(t-1), t = 1..T
    alpha = np.concatenate([[1.0], np.maximum(ratios, 1 - max_beta)]).astype(np.float32)
    beta = 1 - alpha
    return alpha, np.cumprod(alpha), beta
    ### END SOLUTION
    ### STUB raise NotImplementedError("compute f(t), alpha_t = f(t)/f(t-1) clipped, then beta and the "
    ### STUB                           "cumulative product")


if __name__ == "__main__":
    alpha, alpha_cumprod, beta = variance_schedule(4000)
    print("shapes:", alpha.shape, alpha_cumprod.shape, beta.shape, "dtype:", alpha.dtype)
    for t in (0, 1, 1000, 2000, 3000, 3999, 4000):
        print(f"t={t:4d}  alpha={alpha[t]:.6f}  alpha_bar={alpha_cumprod[t]:.6f}  "
              f"beta={beta[t]:.6f}")

### BEGIN SOLUTION
"""SOLUTION of assignment 6: a correct answer, for teachers and tests (not shipped in the package).

(The student's file lessons/assignments/06_ddim_step.py is made from this one: python -m tinyddpm.grade.assign.)
"""
### END SOLUTION
"""Assignment 6: one DDIM step, with the clip and the recomputed noise (after "Generating New
Images": the slides end with "the main downside is that they take a very long time to generate
images"; DDIM is the standard fix).

Fill in `ddim_timesteps` and `ddim_step` below, then check your work with the autograder:

    python -m tinyddpm.grade 6 06_ddim_step.py

The grader compares your functions with tinyddpm.sampling.ddim_timesteps and ddim_step (with
eta = 0). Edit only this file.

Background. The slide's DDPM loop takes T - 1 = 3,999 model calls per image. DDIM (Song et al.,
2021) reuses the same trained model but jumps from step t straight to an earlier step t' (say
80 steps earlier), deterministically. From x_t and the predicted noise eps it first estimates
the clean image, by inverting the shortcut x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps:

    x0_hat = (x_t - sqrt(1 - abar_t) * eps) / sqrt(abar_t)

then jumps to t' with the shortcut, reusing the same noise:

    x_t' = sqrt(abar_t') * x0_hat + sqrt(1 - abar_t') * eps

Two details make it work well in practice (measured in tinyddpm's design notes: without them the
FID nearly doubles, and near t = T the images fill with NaNs):

* clip: real images lie in [-1, 1], so clip x0_hat to [-1, 1];
* and then recompute eps from the clipped x0_hat, so that x_t, x0_hat and eps stay consistent:
      eps = (x_t - sqrt(abar_t) * x0_hat) / sqrt(1 - abar_t)
"""
import numpy as np


def ddim_timesteps(T, steps):
    """The `steps` time steps DDIM visits, evenly spaced: t_k = 1 + floor(k * T / steps).

    Parameters
    ----------
    T : int
        The number of diffusion steps of the schedule (4000 in the book).
    steps : int
        How many model calls to make, 1 <= steps < T.

    Returns
    -------
    numpy.ndarray, shape (steps,), an integer dtype
        t_0 = 1 < t_1 < ... < t_{steps-1} < T, for k = 0..steps-1. Sampling walks them from the
        last to the first. Never t = T itself: with the clipped cosine schedule alpha_bar_T is
        almost 0, and x0_hat would divide by sqrt(alpha_bar_T).

    Hints
    -----
    * np.arange(steps) * (T / steps) is a float array; 1 + that, converted with .astype(np.int64),
      rounds down (the values are positive).
    """
    ### BEGIN SOLUTION
    return np.floor(1 + np.arange(steps) * T / steps).astype(np.int64)
    ### END SOLUTION
    ### STUB raise NotImplementedError("1 + k * T / steps for k = 0..steps-1, rounded down, as integers")


def ddim_step(x_t, eps, abar_t, abar_prev, clip=True):
    """One deterministic DDIM step (eta = 0) from x_t to x_t', an earlier step t' < t.

    Parameters
    ----------
    x_t : numpy.ndarray, shape (N, H, W, C), float32
        The current images.
    eps : numpy.ndarray, same shape, float32
        The model's noise prediction eps_theta(x_t, t).
    abar_t : float
        alpha_bar at the current step t.
    abar_prev : float
        alpha_bar at the step t' we jump to; 1.0 for the very last jump (to the clean image).
    clip : bool
        When True, clip x0_hat to [-1, 1] and recompute eps from it (see the module docstring).
        When False, use x0_hat and eps as they are.

    Returns
    -------
    numpy.ndarray, same shape as x_t, float32
        x_t'.

    Hints
    -----
    * abar_t and abar_prev are plain floats: x ** 0.5 or np.sqrt both work.
    * With abar_prev = 1 the result is x0_hat itself (clipped when clip=True).
    * .astype(np.float32) at the end.
    """
    ### BEGIN SOLUTION
    x0_hat = (x_t - np.sqrt(1 - abar_t) * eps) / np.sqrt(abar_t)
    if clip:
        x0_hat = np.clip(x0_hat, -1, 1)
        eps = (x_t - np.sqrt(abar_t) * x0_hat) / np.sqrt(1 - abar_t)
    return (np.sqrt(abar_prev) * x0_hat + np.sqrt(1 - abar_prev) * eps).astype(np.float32)
    ### END SOLUTION
    ### STUB raise NotImplementedError("x0_hat, (clip and recompute eps), then the jump to t'")


if __name__ == "__main__":
    print("timesteps(4000, 5):", ddim_timesteps(4000, 5))
    rng = np.random.default_rng(0)
    x_t = rng.standard_normal((1, 4, 4, 1), dtype=np.float32)
    eps = rng.standard_normal((1, 4, 4, 1), dtype=np.float32)
    print("x_t' (clip):", ddim_step(x_t, eps, 0.05, 0.2).ravel()[:4])
    print("x_t' (no clip):", ddim_step(x_t, eps, 0.05, 0.2, clip=False).ravel()[:4])

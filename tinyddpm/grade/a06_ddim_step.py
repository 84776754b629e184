"""Assignment 6: DDIM's time steps and one DDIM step (``lessons/assignments/06_ddim_step.py``),
checked against :func:`tinyddpm.sampling.ddim_timesteps` and :func:`tinyddpm.sampling.ddim_step`."""
import numpy as np

from .framework import Assignment, Fail, array, call, close, register

A6 = register(Assignment(6, "ddim_step", "One DDIM step, with the clip and the recomputed noise",
                         "Generating New Images", ["ddim_timesteps", "ddim_step"], 45))
TIMESTEPS = ((4000, 50), (4000, 100), (10, 3), (1000, 7), (4000, 3))


@A6.check("timesteps", 2, "ddim_timesteps(T, steps): t_k = 1 + floor(k T / steps), an int array",
          lambda: [call("ddim_timesteps", T, steps) for T, steps in TIMESTEPS])
def _(r):
    from ..sampling import ddim_timesteps

    for i, (T, steps) in enumerate(TIMESTEPS):
        got = array(r[i], f"ddim_timesteps({T}, {steps})", (steps,), kind="iu")
        want = ddim_timesteps(T, steps)
        exact = 1 + np.arange(steps) * T // steps
        if T in got:
            raise Fail(f"ddim_timesteps({T}, {steps}) contains t = T = {T}: alpha_bar_T is ~0 "
                       "and x0_hat would divide by ~0; start at t = 1")
        wrong = np.flatnonzero((got != want) & (got != exact))
        if wrong.size:
            k = int(wrong[0])
            raise Fail(f"ddim_timesteps({T}, {steps}) is wrong at k={k}: expected {want[k]}, got "
                       f"{got[k]}" + (" (the steps start at t = 1, not 0)"
                                      if np.array_equal(got, want - 1) else ""))


def inputs(seed=0, shape=(4, 8, 8, 1)):
    rng = np.random.default_rng(seed)
    return (1.5 * rng.standard_normal(shape, dtype=np.float32),
            rng.standard_normal(shape, dtype=np.float32))


def abar(t):
    from ..schedule import variance_schedule
    return float(variance_schedule(4000)[1][t])


def reference(x, eps, a, b, clip):
    from ..sampling import ddim_step
    return ddim_step(x, eps, a, b, eta=0.0, clip=clip)


def clip_mistakes(x, eps, a, b):
    """Wrong clips, with their hints (the clip check's)."""
    x0 = (x.astype(np.float64) - np.sqrt(1 - a) * eps) / np.sqrt(a)
    x0c = np.clip(x0, -1, 1)
    return [(np.sqrt(b) * x0c + np.sqrt(1 - b) * eps,
             "x0_hat is clipped but eps is not recomputed from it: "
             "eps = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)"),
            (np.sqrt(b) * x0 + np.sqrt(1 - b) * eps, "x0_hat is not clipped to [-1, 1]")]


def step_call(seed, ta, tb, clip):
    x, eps = inputs(seed)
    return call("ddim_step", x, eps, abar(ta) if ta else 1.0, abar(tb) if tb else 1.0, clip=clip)


def step(r, seed):
    return array(r[0], "x_{t'}", inputs(seed)[0].shape)


@A6.check("step_shape", 1, "ddim_step returns an array of x_t's shape, float32 for float32 in",
          lambda: [step_call(0, 2000, 1920, True)])
def _(r):
    array(r[0], "x_{t'}", inputs(0)[0].shape, np.float32)


@A6.check("no_clip", 2, "clip=False: x_t' = sqrt(abar_t') x0_hat + sqrt(1 - abar_t') eps",
          lambda: [step_call(1, 2000, 1920, False)])
def _(r):
    x, eps = inputs(1)
    a, b = abar(2000), abar(1920)
    x0 = (x.astype(np.float64) - np.sqrt(1 - a) * eps) / np.sqrt(a)
    close(step(r, 1), reference(x, eps, a, b, False), "x_{t'}", rtol=1e-4, atol=1e-5,
          context="with clip=False, t=2000 -> 1920", mistakes=[
              (x0, "that is x0_hat: the step returns x_t' = sqrt(abar_t') x0_hat + "
                   "sqrt(1 - abar_t') eps"),
              (np.clip(x0, -1, 1) * np.sqrt(b) + np.sqrt(1 - b) * eps,
               "clip=False must not clip x0_hat")])


@A6.check("clip", 3, "clip=True: x0_hat clipped to [-1, 1] and eps recomputed from it",
          lambda: [step_call(2, 2000, 1920, True)])
def _(r):
    x, eps = inputs(2)
    a, b = abar(2000), abar(1920)
    close(step(r, 2), reference(x, eps, a, b, True), "x_{t'}", rtol=1e-4, atol=1e-5,
          context="with clip=True, t=2000 -> 1920", mistakes=clip_mistakes(x, eps, a, b))


@A6.check("last_step", 1, "going to t' = 0 (abar_t' = 1) returns the clipped x0_hat",
          lambda: [step_call(3, 40, 0, True)])
def _(r):
    x, eps = inputs(3)
    a = abar(40)
    close(step(r, 3), reference(x, eps, a, 1.0, True), "x_0", rtol=1e-4, atol=1e-5,
          context="with abar_t' = 1 (the last step)",
          accept=[(m, "clip") for m, _ in clip_mistakes(x, eps, a, 1.0)])   # the clip check's


@A6.check("no_nan_near_T", 1, "no NaN or inf near t = T, where abar_t ~ 1e-7 (clip=True)",
          lambda: [step_call(4, 3999, 3919, True)])
def _(r):
    x, eps = inputs(4)
    a, b = abar(3999), abar(3919)
    close(step(r, 4), reference(x, eps, a, b, True), "x_{t'}", rtol=1e-3, atol=1e-4,
          context="at t=3999 -> 3919", accept=[(m, "clip") for m, _ in clip_mistakes(x, eps, a, b)])

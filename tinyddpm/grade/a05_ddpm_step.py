"""Assignment 5: one reverse (DDPM) step and the slide's loop
(``lessons/assignments/05_ddpm_step.py``), checked against :func:`tinyddpm.sampling.ddpm_step`;
the loop runs with a fake model and a generator that record what they are asked for."""
import numpy as np

from .framework import Assignment, Fail, FakeModel, RecordingRng, array, call, close, register

A5 = register(Assignment(5, "ddpm_step", "One reverse (DDPM) step and the sampling loop",
                         "Generating New Images", ["ddpm_step", "generate"], 45))


def inputs(seed, shape=(3, 8, 8, 1)):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(shape, dtype=np.float32) for _ in range(3))


def sched(T):
    from ..schedule import variance_schedule
    return variance_schedule(T)


def reference(x, eps, t, s, z):
    from ..sampling import ddpm_step
    return ddpm_step(x, eps, t, *s, z)


def formula_mistakes(x, eps, t, s, z):
    """Wrong versions of the step's formula, with their hints (the step_value check's)."""
    alpha, abar, beta = (a.astype(np.float64) for a in s)
    mean = (x - beta[t] / np.sqrt(1 - abar[t]) * eps) / np.sqrt(alpha[t])
    return [(mean, "the noise term sqrt(beta_t) z is missing"),
            (mean + beta[t] * z, "the noise is scaled by sqrt(beta_t), not beta_t"),
            ((x - beta[t] / (1 - abar[t]) * eps) / np.sqrt(alpha[t]) + np.sqrt(beta[t]) * z,
             "eps is scaled by beta_t / sqrt(1 - alpha_bar_t): a square root is missing"),
            (x / np.sqrt(alpha[t]) - beta[t] / np.sqrt(1 - abar[t]) * eps
             + np.sqrt(beta[t]) * z, "1/sqrt(alpha_t) multiplies the whole bracket "
                                     "(x_t - ... eps), not only x_t")]


def index_mistakes(x, eps, t, s, z):
    """The step with the schedule taken at t - 1 (the step_each_t check's)."""
    alpha, abar, beta = (a.astype(np.float64) for a in s)
    u = t - 1
    return [((x - beta[t] / np.sqrt(1 - abar[u]) * eps) / np.sqrt(alpha[t])
             + np.sqrt(beta[t]) * z, "alpha_bar is taken at t - 1: use alpha_cumprod[t]"),
            ((x - beta[u] / np.sqrt(1 - abar[u]) * eps) / np.sqrt(alpha[u])
             + np.sqrt(beta[u]) * z, "alpha, alpha_bar and beta are taken at t - 1: the step "
                                     "from x_t uses their values at t")]


def step_call(x, eps, t, T, z):
    return call("ddpm_step", x, eps, t, *sched(T), z)


def step_result(value, x):
    return array(value, "x_{t-1}", x.shape)


@A5.check("step_shape", 1, "ddpm_step returns an array of x_t's shape, float32 for float32 in",
          lambda: [step_call(*inputs(0)[:2], 500, 1000, inputs(0)[2])])
def _(r):
    array(r[0], "x_{t-1}", inputs(0)[0].shape, np.float32)


@A5.check("step_value", 3, "x_{t-1} = (x_t - beta_t/sqrt(1 - alpha_bar_t) eps)/sqrt(alpha_t) "
                           "+ sqrt(beta_t) z at t = 500 of 1000",
          lambda: [step_call(*inputs(1)[:2], 500, 1000, inputs(1)[2])])
def _(r):
    x, eps, z = inputs(1)
    s, t = sched(1000), 500
    close(step_result(r[0], x), reference(x, eps, t, s, z), "x_{t-1}", rtol=1e-4, atol=1e-5,
          context="at t=500", mistakes=formula_mistakes(x, eps, t, s, z),
          accept=[(m, "step_each_t") for m, _ in index_mistakes(x, eps, t, s, z)])


STEP_TIMES = (1, 2, 10, 999)


@A5.check("step_each_t", 1, "the step is right at t = 1, 2, 10, 999 (alpha, alpha_bar, beta "
                            "taken at t)",
          lambda: [step_call(*inputs(2)[:2], t, 1000, inputs(2)[2]) for t in STEP_TIMES])
def _(r):
    x, eps, z = inputs(2)
    s = sched(1000)
    for i, t in enumerate(STEP_TIMES):
        with np.errstate(divide="ignore", invalid="ignore"):
            known = index_mistakes(x, eps, t, s, z)
        close(step_result(r[i], x), reference(x, eps, t, s, z), "x_{t-1}", rtol=1e-4, atol=1e-5,
              context=f"at t={t}", mistakes=known,
              accept=[(m, "step_value") for m, _ in formula_mistakes(x, eps, t, s, z)])


@A5.check("step_noise", 1, "with x_t = 0 and eps = 0 the step returns sqrt(beta_t) z",
          lambda: [step_call(np.zeros_like(inputs(3)[2]), np.zeros_like(inputs(3)[2]), 700, 1000,
                             inputs(3)[2])])
def _(r):
    z = inputs(3)[2]
    zero = np.zeros_like(z)
    s = sched(1000)
    close(step_result(r[0], z), np.sqrt(s[2][700]) * z, "x_{t-1}", rtol=1e-4, atol=1e-6,
          context="with x_t = 0, eps = 0, t=700",
          accept=[(m, "step_value") for m, _ in
                                    formula_mistakes(zero, zero, 700, s, z)])


# --------------------------------------------------------------------------- the loop

def x_T(seed, shape=(3, 6, 6, 1)):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def generate_call(T, seed):
    return call("generate", FakeModel(T), x_T(seed), *sched(T), RecordingRng(seed + 1))


def replay(x, T, times, draws, last_noise=False):
    """The slide's loop over the time steps ``times`` (the student's own), with z_k = the k-th
    draw, and z = 0 at the last step unless ``last_noise``."""
    s = sched(T)
    x = x.astype(np.float32)
    for k, t in enumerate(times):
        last = k == len(times) - 1
        z = draws[k] if k < len(draws) and (not last or last_noise) else np.zeros(x.shape)
        z = np.asarray(z, dtype=np.float32).reshape(x.shape)
        x = reference(x, FakeModel.predict(x, t, T), int(t), s, z)
    return x


def loop(r, T, seed):
    """(output, model calls, draws) of the student's generate."""
    out = array(r[0], "the result of generate", x_T(seed).shape)
    recorded = r.recorded(0)
    calls = [int(t) if float(t).is_integer() else t for t in
             np.asarray(recorded.get("calls", []), dtype=np.float64).reshape(-1)]
    draws = recorded.get("draws", [])
    if not isinstance(draws, list) or not all(isinstance(d, np.ndarray) for d in draws):
        raise Fail("generate drew too many random numbers (more than 1,000 draws)")
    for d in draws:
        if d.size != out.size:
            raise Fail(f"generate drew noise of shape {d.shape} for images of shape {out.shape}:"
                       " draw z with rng.standard_normal(x.shape)")
    return out, calls, draws


def replayable(calls, T):
    return bool(calls) and all(isinstance(t, int) and 1 <= t <= T for t in calls)


@A5.check("loop_times", 2, "generate calls the model at t = T-1, T-2, ..., 1, as on the slide",
          lambda: [generate_call(12, 0)])
def _(r):
    T = 12
    _, got, _ = loop(r, T, 0)
    want = list(range(T - 1, 0, -1))
    if got != want:
        if not got:
            raise Fail("generate never called predict_noise")
        detail = ""
        if got[0] == T:
            detail = "; the slide's loop starts at t = T - 1: for t in range(T - 1, 0, -1)"
        elif got[-1] == 0:
            detail = "; the loop must stop at t = 1 (range(T - 1, 0, -1) ends at 1)"
        elif got == want[::-1]:
            detail = "; the reverse process runs backwards, from t = T - 1 down to 1"
        k = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise Fail(f"with T={T} the model was called at t = {got}, expected {want} (first "
                   f"difference at call {k}){detail}")


@A5.check("loop_last_step", 1, "no noise is added at the last step (z = 0 at t = 1)",
          lambda: [generate_call(12, 10)])
def _(r):
    T = 12
    out, calls, draws = loop(r, T, 10)
    if not replayable(calls, T) or len(draws) < len(calls):
        return            # nothing drawn for the last step (or the times are loop_times' fault)
    noisy = replay(x_T(10), T, calls, draws, last_noise=True)
    clean_ = replay(x_T(10), T, calls, draws)
    if np.allclose(out, noisy, rtol=1e-3, atol=1e-4) and not np.allclose(out, clean_, rtol=1e-3,
                                                                         atol=1e-4):
        raise Fail(f"the last step (t={calls[-1]}) added noise: at t = 1 the slide uses z = 0, "
                   "the last step adds no noise")


@A5.check("loop_result", 1, "each step feeds the next: x_{t-1} = ddpm_step(x_t, model(x_t, t), "
                            "...), one z per step (T = 12)",
          lambda: [generate_call(12, 20)])
def _(r):
    T = 12
    out, calls, draws = loop(r, T, 20)
    if not calls:
        raise Fail("generate never called predict_noise")
    if not replayable(calls, T):
        raise Fail(f"the model was called at t = {calls[:20]}: each t must be an integer in "
                   f"1..T={T}")
    n = len(draws)
    if n not in (len(calls) - 1, len(calls)):
        raise Fail(f"generate drew noise from rng {n} times for {len(calls)} steps: expected one "
                   "z per step but the last (z = 0 at t = 1), each with "
                   "rng.standard_normal(x.shape)" + (" (do not use np.random.* here)"
                                                     if n == 0 else ""))
    # compared with the slide's loop over the student's own time steps (loop_times charges
    # those) and its own draws; noise at the last step is loop_last_step's to charge
    close(out, replay(x_T(20), T, calls, draws), "the result of generate", rtol=1e-3, atol=1e-4,
          context=f"with T={T}", accept=[(replay(x_T(20), T, calls, draws, last_noise=True),
                                              "loop_last_step")])

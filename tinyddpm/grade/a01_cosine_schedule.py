"""Assignment 1: the cosine variance schedule (``lessons/assignments/01_cosine_schedule.py``),
checked against :func:`tinyddpm.variance_schedule`."""
import numpy as np

from .framework import Assignment, Fail, array, call, close, fmt, register, t_at, tuple_of

A1 = register(Assignment(1, "cosine_schedule", "The cosine variance schedule",
                         "Variance Schedule", ["variance_schedule"], 30))
NAMES = ("alpha", "alpha_cumprod", "beta")


def schedule(value):
    return tuple_of(value, 3, "variance_schedule", NAMES)


def reference(T, **kwargs):
    from ..schedule import variance_schedule
    return variance_schedule(T, **kwargs)


def parts(T, s=0.008, max_beta=0.999):
    """f(t), alpha_t = f(t)/f(t-1) unclipped, and clipped (t = 0..T, float64)."""
    t = np.arange(T + 1)
    f = np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2
    ratio = np.append(1, f[1:] / f[:-1])
    return f, ratio, np.maximum(ratio, 1 - max_beta)


def unclipped(alpha, T, **kwargs):
    """Whether the student's alpha is f(t)/f(t-1) without the clip (the max_beta check's)."""
    _, ratio, _ = parts(T, **kwargs)
    return isinstance(alpha, np.ndarray) and alpha.shape == ratio.shape and \
        np.allclose(alpha, ratio, rtol=1e-5, atol=1e-6)


@A1.check("returns_three_arrays", 1, "variance_schedule(4000) returns three arrays",
          lambda: [call("variance_schedule", 4000)])
def _(r):
    for name, a in zip(NAMES, schedule(r[0])):
        array(a, name)


@A1.check("shapes_dtypes", 1, "each array has shape (T + 1,) and dtype float32 (T = 4000, 10)",
          lambda: [call("variance_schedule", 4000), call("variance_schedule", 10)])
def _(r):
    for i, T in enumerate((4000, 10)):
        for name, a in zip(NAMES, schedule(r[i])):
            if isinstance(a, np.ndarray) and a.shape == (T,):
                raise Fail(f"{name} has shape ({T},) for T={T}: expected ({T + 1},), one value "
                           "for each t = 0..T (add alpha_0 = 1 in front)")
            array(a, f"{name} (T={T})", (T + 1,), np.float32)


@A1.check("t0", 1, "alpha_0 = 1, alpha_bar_0 = 1, beta_0 = 0",
          lambda: [call("variance_schedule", 4000)])
def _(r):
    for name, a, want in zip(NAMES, schedule(r[0]), (1, 1, 0)):
        a = array(a, name)
        if a.size == 0 or not np.isclose(a.reshape(-1)[0], want, atol=1e-7):
            got = a.reshape(-1)[0] if a.size else "nothing"
            raise Fail(f"{name}[0] should be {want} (t = 0 is the clean image), got {fmt(got)}")


@A1.check("alpha_cumprod", 3, "alpha_bar_t = cumulative product of the clipped alpha_t, at "
                              "every t, T = 4000", lambda: [call("variance_schedule", 4000)])
def _(r):
    alpha, alpha_cumprod, _ = schedule(r[0])
    array(alpha_cumprod, "alpha_cumprod", (4001,))
    f, ratio, _ = parts(4000)
    # no clip at all (alpha unclipped too) is the max_beta check's mistake, charged there once
    accept = [(f / f[0], "max_beta")] if unclipped(alpha, 4000) else []
    # relative tolerance only: alpha_bar_T is ~1.5e-10 after the clip, 0 without it
    close(alpha_cumprod, reference(4000)[1], "alpha_cumprod", rtol=1e-3, atol=1e-13,
          where=t_at, accept=accept, mistakes=[
              (f / f[0], "alpha_bar_t is f(t)/f(0) without the clip: after clipping alpha_t = "
                         "f(t)/f(t-1) to at least 1 - max_beta, recompute alpha_bar_t as the "
                         "cumulative product of the clipped alpha_t"),
              (f, "alpha_bar_t is f(t)/f(0), not f(t)")])


@A1.check("alpha_beta", 1, "alpha_t = f(t)/f(t-1) (clipped), beta_t = 1 - alpha_t, T = 4000",
          lambda: [call("variance_schedule", 4000)])
def _(r):
    alpha, _, beta = schedule(r[0])
    array(alpha, "alpha", (4001,))
    array(beta, "beta", (4001,))
    close(alpha, reference(4000)[0], "alpha", rtol=1e-5, atol=1e-6, where=t_at,
          accept=[(parts(4000)[1], "max_beta")])          # unclipped: max_beta's mistake
    close(beta, 1 - np.asarray(alpha, np.float64), "beta", rtol=1e-4, atol=1e-6, where=t_at,
          context="(beta_t = 1 - alpha_t, from your alpha)")


@A1.check("max_beta", 2, "beta_t is clipped at max_beta (0.999 by default; also max_beta=0.2)",
          lambda: [call("variance_schedule", 4000), call("variance_schedule", 20, max_beta=0.2)])
def _(r):
    beta = array(schedule(r[0])[2], "beta", (4001,))
    if not np.isclose(beta[-1], 0.999, atol=1e-6):
        raise Fail(f"beta_T should be clipped to max_beta = 0.999 (f(T) = 0 would make it 1), "
                   f"got {fmt(beta[-1])}\nhint: clip alpha_t = f(t)/f(t-1) to at least "
                   "1 - max_beta (np.maximum), then beta_t = 1 - alpha_t")
    close(array(schedule(r[1])[2], "beta (T=20, max_beta=0.2)", (21,)),
          reference(20, max_beta=0.2)[2], "beta", rtol=1e-4, atol=1e-6, where=t_at,
          context="with T=20, max_beta=0.2")


@A1.check("other_T_and_s", 1, "T and s are used: T = 10 with s = 0.1, and T = 1000",
          lambda: [call("variance_schedule", 10, s=0.1), call("variance_schedule", 1000)])
def _(r):
    for i, (T, kwargs) in enumerate(((10, {"s": 0.1}), (1000, {}))):
        ref = reference(T, **kwargs)
        label = f"with T={T}" + (f", s={kwargs['s']}" if kwargs else "")
        f, ratio, clipped = parts(T, **kwargs)
        # mistakes the checks above charge are not charged again here
        accepted = {"alpha": [ratio], "alpha_cumprod": [f / f[0], np.cumprod(ratio)],
                    "beta": [1 - ratio]}
        for name, a, want in zip(NAMES, schedule(r[i]), ref):
            array(a, f"{name} ({label})", (T + 1,))
            close(a, want, name, rtol=1e-3, atol=1e-6, where=t_at, context=label,
                  accept=[(a, "the checks above") for a in accepted[name]])

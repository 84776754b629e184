"""Assignment 2: a training batch (``lessons/assignments/02_prepare_batch.py``), checked against
the formula of :func:`tinyddpm.prepare_batch` applied to the time steps and noise the student's
code drew (and statistics of those)."""
import numpy as np

from .framework import Assignment, Fail, Rng, array, call, close, fmt, register, tuple_of

A2 = register(Assignment(2, "prepare_batch", "Preparing a training batch",
                         "Preparing Batch for Training", ["prepare_batch"], 30))


def images(n, seed=0):
    return np.random.default_rng(seed).random((n, 28, 28), dtype=np.float32)


def cosine(T):
    from ..schedule import variance_schedule
    return variance_schedule(T)[1]


def batch_call(n, T, seed, image_seed=0):
    return call("prepare_batch", images(n, image_seed), cosine(T), Rng(seed))


def batch(value):
    inputs, noise = tuple_of(value, 2, "prepare_batch", ("inputs", "noise"))
    if not isinstance(inputs, dict):
        raise Fail(f"the first value returned should be a dict {{'X_noisy': ..., 'time': ...}}, "
                   f"got {type(inputs).__name__}")
    missing = [k for k in ("X_noisy", "time") if k not in inputs]
    if missing:
        raise Fail(f"the dict returned lacks the key(s) {missing}; it has {sorted(inputs)}")
    return inputs["X_noisy"], inputs["time"], noise


def with_channel(a, n):
    """(n, 28, 28) -> (n, 28, 28, 1): a missing channel axis is the shapes check's mistake."""
    return a[..., None] if isinstance(a, np.ndarray) and a.shape == (n, 28, 28) else a


@A2.check("returns", 1, "returns ({'X_noisy': ..., 'time': ...}, noise), all NumPy arrays",
          lambda: [batch_call(8, 100, 0)])
def _(r):
    X_noisy, time_, noise = batch(r[0])
    array(X_noisy, "X_noisy")
    array(time_, "time")
    array(noise, "noise")


@A2.check("shapes", 1, "X (N, 28, 28) gives X_noisy and noise (N, 28, 28, 1), time (N,)",
          lambda: [batch_call(8, 100, 0)])
def _(r):
    X_noisy, time_, noise = batch(r[0])
    for name, a, shape in (("X_noisy", X_noisy, (8, 28, 28, 1)), ("noise", noise, (8, 28, 28, 1)),
                           ("time", time_, (8,))):
        if isinstance(a, np.ndarray) and a.shape == (8, 28, 28) and len(shape) == 4:
            raise Fail(f"{name} has shape (8, 28, 28): add the channel axis, X[..., np.newaxis]")
        array(a, name, shape)


@A2.check("dtypes", 1, "X_noisy and noise are float32, time is an integer array",
          lambda: [batch_call(8, 100, 0)])
def _(r):
    X_noisy, time_, noise = batch(r[0])
    array(X_noisy, "X_noisy", dtype=np.float32)
    array(noise, "noise", dtype=np.float32)
    array(time_, "time", kind="iu")


@A2.check("time_range", 2, "t is drawn per image, uniformly from 1..T (both ends included)",
          lambda: [batch_call(1000, 5, 1)])
def _(r):
    T = 5
    _, time_, _ = batch(r[0])
    t = array(time_, "time", (1000,))
    if t.min() < 1:
        raise Fail(f"time contains {fmt(t.min())}: t must lie in 1..T (t = 0 is the clean "
                   "image, there is no noise to predict)")
    if t.max() > T:
        raise Fail(f"time contains {fmt(t.max())} with T={T}: t must lie in 1..T")
    if np.all(t == t[0]):
        raise Fail(f"every image got the same t={fmt(t[0])}: draw one t per image")
    counts = np.bincount(t.astype(np.int64), minlength=T + 1)[1:]
    if counts[-1] == 0:
        raise Fail(f"t never equals T={T} in 1,000 draws: the upper bound of rng.integers is "
                   "exclusive, use rng.integers(1, T + 1, ...)")
    if counts.min() < 120:  # each value expects 200 of the 1,000 draws
        raise Fail(f"t is not uniform on 1..{T}: counts {counts.tolist()} for 1,000 images")


@A2.check("noise", 1, "the noise is standard normal (mean 0, std 1)",
          lambda: [batch_call(500, 100, 2)])
def _(r):
    _, _, noise = batch(r[0])
    noise = array(with_channel(noise, 500), "noise", (500, 28, 28, 1))
    mean, std = float(noise.mean()), float(noise.std())
    if abs(mean) > 0.01 or abs(std - 1) > 0.01:
        raise Fail(f"noise should be standard normal: mean 0 and std 1, got mean {mean:.4f} and "
                   f"std {std:.4f} (use rng.standard_normal)")


@A2.check("formula", 3, "X_noisy = sqrt(alpha_bar_t) (2X - 1) + sqrt(1 - alpha_bar_t) noise",
          lambda: [batch_call(16, 20, 4, image_seed=3)])
def _(r):
    T = 20
    X = images(16, 3)
    alpha_cumprod = cosine(T)
    X_noisy, time_, noise = batch(r[0])
    X_noisy = array(with_channel(X_noisy, 16), "X_noisy", (16, 28, 28, 1))
    noise = array(with_channel(noise, 16), "noise", (16, 28, 28, 1))
    t = array(time_, "time", (16,), kind="iu")
    if t.min() < 0 or t.max() > T:
        raise Fail(f"time lies outside 0..T ({fmt(t.min())}..{fmt(t.max())})")
    abar = alpha_cumprod[t].astype(np.float64).reshape(-1, 1, 1, 1)
    x01 = X[..., None].astype(np.float64)
    x = 2 * x01 - 1
    expected = np.sqrt(abar) * x + np.sqrt(1 - abar) * noise
    close(X_noisy, expected, "X_noisy", rtol=1e-4, atol=1e-5, context=(
        "(compared with the formula applied to the time and noise you returned)"), mistakes=[
        (np.sqrt(abar) * x01 + np.sqrt(1 - abar) * noise,
         "X was not scaled from [0, 1] to [-1, 1]: X * 2 - 1"),
        (abar * x + (1 - abar) * noise,
         "the coefficients are square roots: sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t)"),
        (np.sqrt(abar[::-1]) * x + np.sqrt(1 - abar[::-1]) * noise, "alpha_bar is gathered in the "
                                                                     "wrong order"),
        (np.sqrt(alpha_cumprod[-1]) * x + np.sqrt(1 - alpha_cumprod[-1]) * noise,
         "use alpha_bar at each image's own t: alpha_cumprod[t], reshaped to (N, 1, 1, 1)")])


@A2.check("rng", 1, "all randomness comes from rng: same seed, same batch; new seed, new batch",
          lambda: [batch_call(8, 100, 5), batch_call(8, 100, 5), batch_call(8, 100, 6)])
def _(r):
    a, b, c = batch(r[0]), batch(r[1]), batch(r[2])
    for name, x, y in zip(("X_noisy", "time", "noise"), a, b):
        if not np.array_equal(np.asarray(x), np.asarray(y)):
            raise Fail(f"two calls with rng = np.random.default_rng(5) gave different {name}: "
                       "draw every random number from rng (not np.random.*)")
    if np.array_equal(np.asarray(a[2]), np.asarray(c[2])):
        raise Fail("seeds 5 and 6 gave the same noise: draw the noise from rng")

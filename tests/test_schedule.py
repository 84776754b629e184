"""Tests for tinyddpm.schedule and the NumPy side of tinyddpm.diffusion."""
import threading
import time

import numpy as np
import pytest

from tinyddpm import diffusion
from tinyddpm.diffusion import (forward_step, get_schedule, prepare_batch, prepare_dataset,
                                q_sample, shuffle_buffer_order)
from tinyddpm.schedule import linear_schedule, variance_schedule


def cosine_reference(T, s=0.008, max_beta=0.999):
    """The slide's equations, recomputed in float64 from alpha_bar rather than from f ratios."""
    t = np.arange(T + 1)
    f = np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2
    alpha_bar = f / f[0]
    beta = np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], max_beta)
    beta = np.concatenate([[0.0], beta])
    return 1 - beta, np.cumprod(1 - beta), beta


# --------------------------------------------------------------------------- schedules

@pytest.mark.parametrize("T", [1, 10, 1000, 4000])
def test_cosine_schedule_matches_the_slide_equations(T):
    alpha, alpha_cumprod, beta = variance_schedule(T)
    ref_alpha, ref_cumprod, ref_beta = cosine_reference(T)
    for a in (alpha, alpha_cumprod, beta):
        assert a.dtype == np.float32 and a.shape == (T + 1,)
    np.testing.assert_allclose(beta, ref_beta, rtol=0, atol=1e-7)
    np.testing.assert_allclose(alpha, ref_alpha, rtol=0, atol=1e-7)
    np.testing.assert_allclose(alpha_cumprod, ref_cumprod, rtol=1e-5, atol=0)
    assert alpha[0] == 1 and beta[0] == 0 and alpha_cumprod[0] == 1
    np.testing.assert_array_equal(alpha + beta, np.ones(T + 1, np.float32))


@pytest.mark.parametrize("T", [10, 1000, 4000])
def test_alpha_bar_decreases_strictly_from_one(T):
    _, alpha_cumprod, _ = variance_schedule(T)
    assert alpha_cumprod[0] == 1
    assert np.all(np.diff(alpha_cumprod) < 0)
    assert alpha_cumprod[-1] < 1e-4  # the signal is gone at t = T


def test_cosine_follows_f_before_the_clip():
    T, s = 4000, 0.008
    _, alpha_cumprod, _ = variance_schedule(T, s=s)
    t = np.arange(T + 1)
    f = np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2
    # alpha_bar_t = f(t) / f(0) wherever no beta was clipped (all t < T here)
    np.testing.assert_allclose(alpha_cumprod[:-1], (f / f[0])[:-1], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("max_beta", [0.999, 0.5, 0.1])
def test_beta_is_clipped_at_max_beta(max_beta):
    T = 10
    _, _, beta = variance_schedule(T, max_beta=max_beta)
    _, _, unclipped = cosine_reference(T, max_beta=np.inf)
    assert np.all(beta <= np.float32(max_beta) + 1e-7)
    clipped = unclipped > max_beta
    assert clipped[-1]  # beta_T would be 1 without the clip
    np.testing.assert_allclose(beta[clipped], max_beta, atol=1e-7)
    np.testing.assert_allclose(beta[~clipped], unclipped[~clipped], atol=1e-7)


def test_s_changes_the_schedule():
    _, a0, _ = variance_schedule(100, s=0.0)
    _, a1, _ = variance_schedule(100, s=0.1)
    assert np.all(a1[1:-1] < a0[1:-1])  # a larger offset adds more noise early on


@pytest.mark.parametrize("kwargs, error", [
    (dict(T=0), ValueError), (dict(T=-5), ValueError), (dict(T=1.5), TypeError),
    (dict(T=True), TypeError), (dict(T="10"), TypeError),
    (dict(T=10, s=-0.1), ValueError), (dict(T=10, s=float("nan")), TypeError),
    (dict(T=10, max_beta=0), ValueError), (dict(T=10, max_beta=1), ValueError),
    (dict(T=10, max_beta=1.5), ValueError),
])
def test_cosine_schedule_validation(kwargs, error):
    with pytest.raises(error, match="T|s|max_beta"):
        variance_schedule(**kwargs)


def test_numpy_int_T_is_accepted():
    np.testing.assert_array_equal(variance_schedule(np.int64(20))[1], variance_schedule(20)[1])


def test_linear_schedule_is_ho_et_al_at_T_1000():
    alpha, alpha_cumprod, beta = linear_schedule(1000)
    assert alpha.dtype == alpha_cumprod.dtype == beta.dtype == np.float32
    assert alpha.shape == (1001,) and alpha[0] == 1 and beta[0] == 0 and alpha_cumprod[0] == 1
    # beta = 1 - float32(alpha): exact to float32's spacing just below 1 (6e-8)
    np.testing.assert_allclose(beta[1:], np.linspace(1e-4, 0.02, 1000), rtol=1e-6, atol=6e-8)
    assert np.all(np.diff(beta[1:]) > 0)
    assert np.all(np.diff(alpha_cumprod) < 0)
    np.testing.assert_allclose(alpha_cumprod, np.cumprod(1 - np.concatenate([[0], np.linspace(
        1e-4, 0.02, 1000)])), rtol=1e-4)


def test_linear_schedule_scales_with_T():
    _, abar_1000, beta_1000 = linear_schedule(1000)
    _, abar_4000, beta_4000 = linear_schedule(4000)
    np.testing.assert_allclose(beta_4000[1:], np.linspace(2.5e-5, 5e-3, 4000), rtol=1e-6, atol=6e-8)
    # the total noise is about the same, whatever T
    np.testing.assert_allclose(abar_4000[-1], abar_1000[-1], rtol=0.1)
    assert np.all(np.diff(abar_4000) < 0)


def test_linear_schedule_validation():
    with pytest.raises(ValueError, match="too small"):
        linear_schedule(20)
    with pytest.raises(ValueError, match="beta_start"):
        linear_schedule(1000, beta_start=0.1, beta_end=0.01)
    with pytest.raises(TypeError, match="T"):
        linear_schedule(1000.0)


def test_get_schedule_is_cached_and_read_only():
    a = get_schedule()
    assert a is get_schedule(4000, "cosine")
    np.testing.assert_array_equal(a[1], variance_schedule(4000)[1])
    with pytest.raises(ValueError):
        a[1][0] = 5
    np.testing.assert_array_equal(get_schedule(100, "linear")[2], linear_schedule(100)[2])
    with pytest.raises(ValueError, match="kind"):
        get_schedule(10, "quadratic")


# --------------------------------------------------------------------------- forward process

def assert_gaussian(samples, mean, var, n_sigma=5):
    """Sample mean and variance within n_sigma standard errors of the given values."""
    n = samples.size
    assert abs(samples.mean() - mean) < n_sigma * np.sqrt(var / n), (samples.mean(), mean)
    assert abs(samples.var() - var) < n_sigma * var * np.sqrt(2 / n), (samples.var(), var)


SMALL_T = 10
ALPHA, ALPHA_CUMPROD, BETA = variance_schedule(SMALL_T)


@pytest.mark.parametrize("t", [1, 5, 9])
def test_forward_step_statistics(t):
    x_prev = np.full((200_000, 1), 0.7, np.float32)
    x_t = forward_step(x_prev, t, BETA, rng=np.random.default_rng(t))
    assert x_t.shape == x_prev.shape and x_t.dtype == np.float32
    assert_gaussian(x_t, np.sqrt(1 - BETA[t]) * 0.7, BETA[t])


def test_forward_step_per_image_t():
    t = np.array([2, 8])
    x_prev = np.zeros((2, 100_000, 1), np.float32)
    x_t = forward_step(x_prev, t, BETA, rng=3)
    assert_gaussian(x_t[0], 0, BETA[2])
    assert_gaussian(x_t[1], 0, BETA[8])


@pytest.mark.parametrize("t", [0, 1, 4, 10])
def test_q_sample_statistics(t):
    x0 = np.full((200_000, 1), -0.4, np.float32)
    x_t = q_sample(x0, t, ALPHA_CUMPROD, rng=np.random.default_rng(10 + t))
    assert x_t.dtype == np.float32
    if t == 0:
        np.testing.assert_array_equal(x_t, x0)
    else:
        assert_gaussian(x_t, np.sqrt(ALPHA_CUMPROD[t]) * -0.4, 1 - ALPHA_CUMPROD[t])


def test_q_sample_broadcasts_t_over_nhwc_images():
    N = 6
    t = np.array([1, 3, 5, 7, 9, 10])
    x0 = np.linspace(-1, 1, N * 4 * 4).reshape(N, 4, 4, 1).astype(np.float32)
    noise = np.random.default_rng(0).standard_normal(x0.shape).astype(np.float32)
    x_t = q_sample(x0, t, ALPHA_CUMPROD, noise=noise)
    for i in range(N):  # each image uses its own alpha_bar_t
        a = np.float64(ALPHA_CUMPROD[t[i]])
        np.testing.assert_allclose(x_t[i], np.sqrt(a) * x0[i] + np.sqrt(1 - a) * noise[i],
                                   rtol=1e-5, atol=1e-6)
    stats = q_sample(np.full((N, 40_000), 0.5, np.float32), t, ALPHA_CUMPROD, rng=1)
    for i in range(N):
        assert_gaussian(stats[i], np.sqrt(ALPHA_CUMPROD[t[i]]) * 0.5, 1 - ALPHA_CUMPROD[t[i]])


@pytest.mark.parametrize("t", [3, 10])
def test_q_sample_agrees_with_repeated_forward_steps(t):
    rng = np.random.default_rng(100 + t)
    x0 = np.full((200_000, 1), 0.9, np.float32)
    x = x0
    for step in range(1, t + 1):
        x = forward_step(x, step, BETA, rng=rng)
    shortcut = q_sample(x0, t, ALPHA_CUMPROD, rng=rng)
    # both match the closed form ...
    assert_gaussian(x, np.sqrt(ALPHA_CUMPROD[t]) * 0.9, 1 - ALPHA_CUMPROD[t])
    assert_gaussian(shortcut, np.sqrt(ALPHA_CUMPROD[t]) * 0.9, 1 - ALPHA_CUMPROD[t])
    # ... and each other (two-sample: the standard errors add)
    var = 1 - ALPHA_CUMPROD[t]
    n = x.size
    assert abs(x.mean() - shortcut.mean()) < 5 * np.sqrt(2 * var / n)
    assert abs(x.var() - shortcut.var()) < 5 * var * np.sqrt(4 / n)


def test_forward_and_q_sample_validation():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="0..10"):
        q_sample(x, 11, ALPHA_CUMPROD)
    with pytest.raises(ValueError, match="shape"):
        q_sample(x, np.array([1, 2]), ALPHA_CUMPROD)
    with pytest.raises(TypeError, match="int"):
        q_sample(x, 1.5, ALPHA_CUMPROD)
    with pytest.raises(ValueError, match="noise"):
        q_sample(x, 1, ALPHA_CUMPROD, noise=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="0..10"):
        forward_step(x, -1, BETA)
    with pytest.raises(TypeError, match="rng"):
        forward_step(x, 1, BETA, rng="seed")


def test_forward_step_is_reproducible_with_a_seed():
    x = np.zeros((4, 3), np.float32)
    np.testing.assert_array_equal(forward_step(x, 2, BETA, rng=7), forward_step(x, 2, BETA, rng=7))
    assert not np.array_equal(forward_step(x, 2, BETA, rng=7), forward_step(x, 2, BETA, rng=8))


# --------------------------------------------------------------------------- prepare_batch

def test_prepare_batch_shapes_dtypes_and_scaling():
    rng = np.random.default_rng(0)
    X = rng.random((512, 28, 28), dtype=np.float32)
    inputs, noise = prepare_batch(X, rng=1)
    X_noisy, t = inputs["X_noisy"], inputs["time"]
    assert set(inputs) == {"X_noisy", "time"}
    assert X_noisy.shape == noise.shape == (512, 28, 28, 1)
    assert X_noisy.dtype == noise.dtype == np.float32
    assert t.shape == (512,) and np.issubdtype(t.dtype, np.integer)
    assert t.min() >= 1 and t.max() <= 4000
    # noise-free reconstruction: (X_noisy - sqrt(1 - abar) noise) / sqrt(abar) = 2X - 1
    abar = variance_schedule(4000)[1].astype(np.float64)[t].reshape(-1, 1, 1, 1)
    clean = (X_noisy - np.sqrt(1 - abar) * noise) / np.sqrt(abar)
    expected = 2 * X[..., None].astype(np.float64) - 1
    assert np.all(np.abs(clean - expected) <= 1e-6 / np.sqrt(abar) + 1e-6)
    reliable = abar[:, 0, 0, 0] > 0.01  # where float32 keeps enough of the signal
    assert reliable.sum() > 100
    np.testing.assert_allclose(clean[reliable], expected[reliable], atol=1e-4)
    assert_gaussian(noise, 0, 1)


def test_prepare_batch_accepts_uint8_and_nhwc():
    X = np.random.default_rng(0).integers(0, 256, size=(16, 28, 28), dtype=np.uint8)
    a, noise_a = prepare_batch(X, rng=5)
    b, noise_b = prepare_batch(X[..., None].astype(np.float32) / 255, rng=5)
    np.testing.assert_array_equal(a["time"], b["time"])
    np.testing.assert_array_equal(noise_a, noise_b)
    np.testing.assert_allclose(a["X_noisy"], b["X_noisy"], atol=1e-6)


def test_prepare_batch_draws_every_t_in_1_to_T():
    alpha_cumprod = variance_schedule(5)[1]
    inputs, _ = prepare_batch(np.zeros((20_000, 1, 1)), alpha_cumprod, rng=2)
    counts = np.bincount(inputs["time"], minlength=7)
    assert counts[0] == 0 and counts[6] == 0
    assert np.all(np.abs(counts[1:6] - 4000) < 5 * np.sqrt(4000))  # uniform
    inputs, _ = prepare_batch(np.zeros((1000, 1, 1)), alpha_cumprod, T=2, rng=2)
    assert set(np.unique(inputs["time"])) == {1, 2}


def test_prepare_batch_default_is_the_cosine_schedule_with_T_4000():
    X = np.random.default_rng(0).random((64, 28, 28))
    a, _ = prepare_batch(X, rng=9)
    b, _ = prepare_batch(X, variance_schedule(4000)[1], rng=9)
    np.testing.assert_array_equal(a["X_noisy"], b["X_noisy"])
    c, _ = prepare_batch(X, variance_schedule(1000)[1], rng=9)
    assert not np.array_equal(a["X_noisy"], c["X_noisy"])


def test_prepare_batch_validation():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        prepare_batch(np.full((2, 28, 28), 255.0))
    with pytest.raises(ValueError, match="shape"):
        prepare_batch(np.zeros((28, 28)))
    with pytest.raises(TypeError, match="dtype"):
        prepare_batch(np.zeros((2, 28, 28), np.int64))
    with pytest.raises(ValueError, match="T=20"):
        prepare_batch(np.zeros((2, 28, 28)), variance_schedule(10)[1], T=20)


# --------------------------------------------------------------------------- prepare_dataset

def tagged(n):
    """uint8 images (n, 1, 2) whose two pixels spell the index i = 256 * hi + lo."""
    i = np.arange(n)
    return np.stack([i // 256, i % 256], axis=1).astype(np.uint8).reshape(n, 1, 2)


NO_NOISE = np.ones(11, np.float32)  # alpha_bar = 1: X_noisy = 2X - 1 exactly


def indices(batch):
    pixels = np.rint((batch[0]["X_noisy"].reshape(-1, 2) + 1) / 2 * 255).astype(np.int64)
    return pixels[:, 0] * 256 + pixels[:, 1]


def epoch_indices(ds):
    return [indices(batch) for batch in ds]


def test_dataset_batches_in_order_without_shuffle():
    ds = prepare_dataset(tagged(100), batch_size=32, alpha_cumprod=NO_NOISE)
    assert len(ds) == 4
    batches = epoch_indices(ds)
    assert [len(b) for b in batches] == [32, 32, 32, 4]  # the last partial batch is kept
    np.testing.assert_array_equal(np.concatenate(batches), np.arange(100))
    assert len(prepare_dataset(tagged(96), batch_size=32)) == 3
    assert len(prepare_dataset(tagged(1), batch_size=32)) == 1


def test_dataset_batch_contents():
    X = np.random.default_rng(0).random((70, 28, 28), dtype=np.float32)
    ds = prepare_dataset(X, batch_size=32, seed=0)
    for (inputs, noise), size in zip(ds, [32, 32, 6]):
        assert inputs["X_noisy"].shape == noise.shape == (size, 28, 28, 1)
        assert inputs["X_noisy"].dtype == noise.dtype == np.float32
        assert inputs["time"].shape == (size,)
        assert 1 <= inputs["time"].min() and inputs["time"].max() <= 4000


def test_shuffled_epoch_is_a_permutation():
    ds = prepare_dataset(tagged(1000), batch_size=32, shuffle=True, seed=1, buffer_size=300,
                         alpha_cumprod=NO_NOISE)
    for _ in range(2):
        order = np.concatenate(epoch_indices(ds))
        np.testing.assert_array_equal(np.sort(order), np.arange(1000))
        assert not np.array_equal(order, np.arange(1000))


def test_seed_determinism_and_epochs():
    def make(seed):
        return prepare_dataset(tagged(500), batch_size=64, shuffle=True, seed=seed)

    a, b = make(7), make(7)
    epoch0_a, epoch0_b = list(a), list(b)
    for (ia, na), (ib, nb) in zip(epoch0_a, epoch0_b):
        np.testing.assert_array_equal(ia["X_noisy"], ib["X_noisy"])
        np.testing.assert_array_equal(ia["time"], ib["time"])
        np.testing.assert_array_equal(na, nb)
    epoch1_a = list(a)
    assert not np.array_equal(epoch0_a[0][0]["time"], epoch1_a[0][0]["time"])
    assert not np.array_equal(epoch0_a[0][1], epoch1_a[0][1])
    other = list(make(8))
    assert not np.array_equal(epoch0_a[0][1], other[0][1])


def test_order_differs_across_epochs():
    ds = prepare_dataset(tagged(500), shuffle=True, seed=3, alpha_cumprod=NO_NOISE)
    first, second = np.concatenate(epoch_indices(ds)), np.concatenate(epoch_indices(ds))
    assert not np.array_equal(first, second)


def test_resuming_at_an_epoch_replays_it():
    def make(**kw):
        return prepare_dataset(tagged(300), batch_size=50, shuffle=True, seed=11,
                               alpha_cumprod=NO_NOISE, **kw)

    uninterrupted = make()
    orders = [np.concatenate(epoch_indices(uninterrupted)) for _ in range(3)]
    resumed = make()
    resumed.set_epoch(2)
    np.testing.assert_array_equal(np.concatenate(epoch_indices(resumed)), orders[2])
    np.testing.assert_array_equal(np.concatenate(epoch_indices(make(epoch=1))), orders[1])
    # the time steps and the noise of an epoch replay too, not only the order
    ds = make()
    list(ds)
    for (x1, n1), (x2, n2) in zip(ds, make(epoch=1), strict=True):
        np.testing.assert_array_equal(x1["time"], x2["time"])
        np.testing.assert_array_equal(n1, n2)


def test_unseeded_datasets_differ_but_record_their_seed():
    a = prepare_dataset(tagged(200), shuffle=True)
    b = prepare_dataset(tagged(200), shuffle=True)
    assert a.seed != b.seed
    replay = prepare_dataset(tagged(200), shuffle=True, seed=a.seed)
    np.testing.assert_array_equal(next(iter(a))[1], next(iter(replay))[1])


def test_shuffle_buffer_is_local():
    ds = prepare_dataset(tagged(30_000), batch_size=32, shuffle=True, seed=0,
                         alpha_cumprod=NO_NOISE)
    first = indices(next(iter(ds)))
    assert first.max() < 10_000 + 32
    assert first.max() > 1000  # but it is shuffled within the buffer


def naive_shuffle_buffer(n, buffer_size, rng):
    """The tf.data shuffle buffer, item by item, drawing the same random numbers."""
    B = min(buffer_size, n)
    buffer, out = list(range(B)), []
    for k, slot in enumerate(rng.integers(0, B, size=n - B)):
        out.append(buffer[slot])
        buffer[slot] = B + k
    return np.array(out + [buffer[j] for j in rng.permutation(B)])


@pytest.mark.parametrize("n, buffer_size", [(1, 1), (5, 10), (10, 10), (10, 3), (200, 1),
                                            (1000, 7), (30_000, 10_000)])
def test_vectorised_shuffle_buffer_matches_the_loop(n, buffer_size):
    fast = shuffle_buffer_order(n, buffer_size, np.random.default_rng(n))
    slow = naive_shuffle_buffer(n, buffer_size, np.random.default_rng(n))
    np.testing.assert_array_equal(fast, slow)


def test_buffer_of_one_keeps_the_order():
    np.testing.assert_array_equal(shuffle_buffer_order(50, 1, np.random.default_rng(0)),
                                  np.arange(50))


def test_shuffle_buffer_is_fast():
    start = time.perf_counter()
    shuffle_buffer_order(55_000, 10_000, np.random.default_rng(0))
    assert time.perf_counter() - start < 1.0


def prefetch_threads():
    return [t for t in threading.enumerate()
            if t.name.startswith("tinyddpm-prefetch") and t.is_alive()]


def wait_for_no_prefetch_thread(timeout=2.0):
    deadline = time.monotonic() + timeout
    while prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return prefetch_threads()


def test_breaking_out_leaves_no_prefetch_thread():
    ds = prepare_dataset(tagged(3200), batch_size=32, shuffle=True, seed=0)
    for i, batch in enumerate(ds):
        assert prefetch_threads()  # the next batch is being prepared in the background
        if i == 2:
            break
    assert wait_for_no_prefetch_thread() == []


def test_abandoned_iterator_leaves_no_prefetch_thread():
    ds = prepare_dataset(tagged(3200), batch_size=32)
    it = iter(ds)
    next(it)
    assert prefetch_threads()
    del it
    assert wait_for_no_prefetch_thread() == []


def test_worker_exception_is_raised_in_the_loop():
    X = np.zeros((100, 28, 28), np.float32)
    X[50] = 3.0  # not in [0, 1]: prepare_batch raises on the second batch
    ds = prepare_dataset(X, batch_size=32)
    seen = 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        for _ in ds:
            seen += 1
    assert seen == 1
    assert wait_for_no_prefetch_thread() == []


def test_prefetch_zero_gives_the_same_batches_without_a_thread():
    kw = dict(batch_size=40, shuffle=True, seed=5, buffer_size=50)
    threaded = list(prepare_dataset(tagged(200), **kw))
    plain_ds = prepare_dataset(tagged(200), prefetch=0, **kw)
    plain = []
    for batch in plain_ds:
        assert not prefetch_threads()
        plain.append(batch)
    for (a, na), (b, nb) in zip(threaded, plain, strict=True):
        np.testing.assert_array_equal(a["X_noisy"], b["X_noisy"])
        np.testing.assert_array_equal(na, nb)


def test_dataset_validation():
    with pytest.raises(ValueError, match="shape"):
        prepare_dataset(np.zeros((10, 28)))
    with pytest.raises(ValueError, match="batch_size"):
        prepare_dataset(tagged(10), batch_size=0)
    with pytest.raises(TypeError, match="seed"):
        prepare_dataset(tagged(10), seed=1.5)
    with pytest.raises(ValueError, match="epoch"):
        prepare_dataset(tagged(10)).set_epoch(-1)


def test_module_constant_T():
    assert diffusion.T == 4000

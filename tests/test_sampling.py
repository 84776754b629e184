"""The samplers of tinyddpm.sampling against an oracle whose exact noise prediction is known.

If every pixel of x_0 is N(mu, s^2), then x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps is Gaussian
too, and the best noise prediction is the posterior mean

    E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar),

so a sampler given this "model" must return samples of mean mu and standard deviation s, up to
its discretisation error (which shrinks with more steps) and the sampling error of the mean and
standard deviation of 2,000 x 64 numbers (~0.001). That is an independent check of each update
equation: a sign or an index wrong anywhere gives another distribution.
"""
import numpy as np
import pytest

import tinyddpm as td
from tinyddpm import sampling
from tinyddpm.diffusion import get_schedule
from tinyddpm.sampling import SAMPLERS, SPACINGS, timesteps

MU, S = 0.2, 0.3


class Oracle:
    """The exact noise prediction for x_0 ~ N(MU, S^2) per pixel, on 8x8x1 "images"."""

    def __init__(self, T=4000):
        self.config = {"T": T}
        self.image_shape = (8, 8, 1)
        self.abar = get_schedule(T)[1].astype(np.float64)
        self.times = []

    def __call__(self, inputs):
        x, t = inputs["X_noisy"], inputs["time"]
        self.times.append(int(t[0]))
        a = self.abar[t].reshape(-1, 1, 1, 1)
        return (np.sqrt(1 - a) * (x - np.sqrt(a) * MU) / (a * S ** 2 + 1 - a)).astype(np.float32)

    def decode_samples(self, X):  # the raw x_0, not clipped to [0, 1] as images are
        return X


class LearnedOracle(Oracle):
    """The oracle with a learned variance (``learns_sigma``): besides the exact noise, the v
    whose Sigma (Nichol & Dhariwal, eq. 15, on the respaced betas from t to the next time step
    s of ``timesteps(T, steps, "linspace")``, iddpm's spacing) is the exact Var(x_s | x_t):

        Var(x_s | x_t) = Var(x_s) - Cov(x_s, x_t)^2 / Var(x_t),   Var(x_r) = abar_r S^2 + 1 - abar_r,
        Cov(x_s, x_t) = sqrt(abar_t / abar_s) Var(x_s)

    (the step's mean, the posterior mean at the exact E[x_0 | x_t], is E[x_s | x_t]: each step's
    output then has exactly the forward process's marginal)."""

    learns_sigma = True

    def __init__(self, steps, T=4000):
        super().__init__(T)
        ts = timesteps(T, steps, "linspace")
        self.next = dict(zip(ts.tolist(), [*ts[1:].tolist(), 0]))

    def __call__(self, inputs):
        eps = super().__call__(inputs)
        t = int(inputs["time"][0])
        s = self.next[t]
        a_t, a_s = self.abar[t], self.abar[s]
        var_s, var_t = a_s * S ** 2 + 1 - a_s, a_t * S ** 2 + 1 - a_t
        exact = var_s - (a_t / a_s) * var_s ** 2 / var_t
        beta = 1 - a_t / a_s
        beta_tilde = (1 - a_s) / (1 - a_t) * beta
        if s == 0:  # the last step adds no noise: any v
            frac = 0.5
        else:
            frac = (np.log(exact) - np.log(beta_tilde)) / (np.log(beta) - np.log(beta_tilde))
        v = np.full_like(eps, 2 * frac - 1)
        return np.concatenate([eps, v], axis=-1)


def oracle_for(name, steps):
    return LearnedOracle(steps) if name == "iddpm" else Oracle()


# steps at which each sampler is within tolerance (first-order ones need more), and the
# tolerance on the standard deviation, relative (measured: 0.2% .. 3.4% off at these steps);
# with the exact variance, iddpm is exact at any number of steps
ENOUGH = {"ddpm": (None, 0.01), "ddpm-respaced": (200, 0.03), "iddpm": (10, 0.01),
          "ddim": (200, 0.03), "dpm-solver-2": (50, 0.02), "dpm++2m": (50, 0.02),
          "euler": (200, 0.03), "heun": (50, 0.02)}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_draws_the_oracles_distribution(name):
    steps, tolerance = ENOUGH[name]
    X = td.sample(oracle_for(name, steps), 2000, name, seed=0, clip=False,
                  **({"steps": steps} if steps else {}))
    assert abs(X.mean() - MU) < 0.005
    assert abs(X.std() / S - 1) < tolerance, X.std()


def test_second_order_solvers_beat_ddim_at_the_same_number_of_model_calls():
    def error(name, steps):
        X = td.sample(Oracle(), 2000, name, steps=steps, seed=0, clip=False)
        return abs(X.std() - S)
    assert error("dpm++2m", 10) < error("ddim", 10)
    assert error("dpm++2m", 25) < error("ddim", 25) / 2
    assert error("dpm-solver-2", 13) < error("ddim", 25)  # 25 model calls each


def test_the_learned_variance_holds_the_distribution_with_few_ancestral_steps():
    """The paper's point (Nichol & Dhariwal, section 4): with 10 strided ancestral steps, the
    respaced beta'_t as variance gives the wrong spread; the (exact) learned one does not."""
    fixed = td.sample(Oracle(), 2000, "ddpm-respaced", steps=10, seed=0, clip=False)
    learned = td.sample(LearnedOracle(10), 2000, "iddpm", steps=10, seed=0, clip=False)
    assert abs(learned.std() / S - 1) < 0.01 < abs(fixed.std() / S - 1)


def test_the_respaced_step_takes_either_fixed_variance():
    """x_s = mean + sigma z: with z = 1 the step moves sqrt(beta'_t) or sqrt(beta~'_t) past the
    mean; and the exact oracle's spread with 10 steps lies between the two variances' results
    (beta' too wide, beta~' too narrow: Ho et al.'s upper and lower bounds)."""
    from tinyddpm.sampling import respaced_ddpm_step

    X, x0 = np.full((1, 2), 0.3), np.full((1, 2), 0.1)
    abar_t, abar_s = 0.5, 0.8
    mean = respaced_ddpm_step(X, x0, abar_t, abar_s, None)
    beta = 1 - abar_t / abar_s
    for variance, sigma2 in (("beta", beta), ("beta_tilde", (1 - abar_s) / (1 - abar_t) * beta)):
        step = respaced_ddpm_step(X, x0, abar_t, abar_s, np.ones((1, 2)), variance)
        np.testing.assert_allclose(step - mean, np.sqrt(sigma2), rtol=1e-6)
    wide = td.sample(Oracle(), 2000, "ddpm-respaced", steps=10, seed=0, clip=False)
    narrow = td.sample(Oracle(), 2000, "ddpm-respaced", steps=10, seed=0, clip=False,
                       variance="beta_tilde")
    assert narrow.std() < S < wide.std()
    with pytest.raises(ValueError, match="variance applies to the ddpm-respaced sampler"):
        td.sample(Oracle(), 2, "ddim", steps=5, variance="beta_tilde")
    with pytest.raises(ValueError, match="variance must be 'beta' or 'beta_tilde'"):
        td.sample(Oracle(), 2, "ddpm-respaced", steps=5, variance="learned")


def test_iddpm_refuses_a_model_without_a_learned_variance():
    with pytest.raises(ValueError, match="learn_sigma=True"):
        td.sample(Oracle(), 2, "iddpm", steps=5)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_model_calls_match_the_samplers_cost(name):
    oracle = oracle_for(name, 10)
    td.sample(oracle, 4, name, seed=0, **({} if name == "ddpm" else {"steps": 10}))
    calls = {"ddpm": 3999, "dpm-solver-2": 19, "heun": 19}.get(name, 10)
    assert len(oracle.times) == calls


def test_the_first_time_step_of_each_spacing():
    T = 4000
    abar = get_schedule(T)[1]
    assert timesteps(T, 10, "leading")[0] == 3601  # the pitfall: part of the image is "given"
    assert timesteps(T, 10, "trailing")[0] == T
    assert timesteps(T, 10, "linspace")[0] == T
    karras = timesteps(T, 10, "karras", abar)
    sigma = np.sqrt((1 - abar[karras[0]]) / abar[karras[0]])
    assert 70 < sigma < 90  # Karras et al.'s sigma_max = 80
    for spacing in SPACINGS:
        ts = timesteps(T, 10, spacing, abar)
        assert np.all(np.diff(ts) < 0) and ts.min() >= 1 and ts.max() <= T
    assert list(timesteps(T, 4, "trailing")) == [4000, 3000, 2000, 1000]
    assert list(timesteps(T, 4, "leading")) == [3001, 2001, 1001, 1]
    assert list(timesteps(T, 4, "linspace")) == [4000, 2667, 1334, 1]


@pytest.mark.parametrize("spacing,first", [("trailing", 4000), ("linspace", 4000),
                                           ("leading", 1)])
def test_one_step_calls_the_model_once_where_the_spacing_says(spacing, first):
    oracle = Oracle()
    td.sample(oracle, 2, "ddim", steps=1, spacing=spacing, seed=0)
    assert oracle.times == [first]


def test_sample_is_generate_and_generate_ddim_as_they_were():
    model = Oracle()
    np.testing.assert_array_equal(
        td.sample(model, 3, "ddim", steps=10, spacing="leading", seed=5, eta=0.5),
        td.generate_ddim(model, 3, steps=10, seed=5, eta=0.5))
    small = Oracle(T=50)
    np.testing.assert_array_equal(td.sample(small, 3, "ddpm", seed=5),
                                  td.generate(small, 3, seed=5, progress=False))


def test_a_bare_function_samples_with_the_schedule_it_is_given():
    """A callable without a config (an onnxruntime session wrapped) takes T and schedule."""
    oracle = Oracle(T=50)
    oracle.image_shape = (28, 28, 1)  # what a bare function is given

    def bare(inputs):
        return oracle(inputs)
    expected = np.clip((td.sample(oracle, 2, "ddim", steps=5, seed=0) + 1) / 2, 0, 1)
    np.testing.assert_array_equal(td.sample(bare, 2, "ddim", steps=5, seed=0, T=50,
                                            schedule="cosine"), expected)
    oracle.times.clear()
    td.generate(bare, 1, T=50, progress=False)  # the slide's loop, all of T = 50's steps
    assert oracle.times == list(range(49, 0, -1))
    linear = td.sample(bare, 2, "ddim", steps=5, seed=0, T=50, schedule="linear")
    assert np.abs(linear - expected).max() > 0.01  # (the oracle itself is cosine's)
    with pytest.raises(ValueError, match="T=40: this model was trained with T=50"):
        td.sample(oracle, 2, T=40)
    with pytest.raises(ValueError, match="schedule='linear': this model was trained with"):
        td.sample(oracle, 2, schedule="linear")


def test_deterministic_samplers_give_an_image_per_starting_noise_whatever_the_batch():
    model = Oracle()
    for name in ("ddim", "dpm++2m", "heun"):
        a = td.sample(model, 4, name, steps=8, seed=1)
        b = td.sample(model, 4, name, steps=8, seed=1)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs,words", [
    ({"sampler": "plms"}, "sampler must be one of"),
    ({"spacing": "uniform"}, "spacing must be one of"),
    ({"sampler": "dpm++2m", "eta": 0.5}, "eta applies to the ddim sampler"),
    ({"steps": 0}, "steps must be in 1..4000"),
    ({"steps": 4001}, "steps must be in 1..4000"),
    ({"steps": 2.5}, "steps must be a whole number"),
    ({"n": 0}, "n must be in 1..1000000"),
    ({"n": 10**12}, "n must be in 1..1000000"),
    ({"sampler": "ddim", "eta": 2}, "eta must lie in [0, 1]"),
    ({"progress": "no"}, "progress must be True or False"),
    ({"clip": 0}, "clip must be a bound > 0"),
    ({"sampler": "ddim", "eta": "0"}, "eta must be a finite number"),
    ({"sampler": "ddpm", "steps": 10}, "steps and spacing apply to the few-step samplers"),
    ({"sampler": "ddpm", "spacing": "trailing"}, "steps and spacing apply"),
])
def test_bad_arguments_are_named(kwargs, words):
    with pytest.raises((TypeError, ValueError)) as info:
        td.sample(Oracle(), **{"n": 2, **kwargs})
    assert words in str(info.value)


def test_the_shipped_model_with_a_few_step_sampler_makes_images(tmp_path):
    model = td.load_pretrained()
    images = td.sample(model, 4, "dpm++2m", steps=5, seed=0)
    assert images.shape == (4, 28, 28, 1) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0.1


@pytest.mark.parametrize("name", ["heun", "dpm-solver-2"])
@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
def test_second_order_samplers_take_a_first_order_step_from_beyond_sigma_80(name, spacing):
    """From t = T (sigma ~ 8e4) the second-order correction overshot to noise (FID ~100 on the
    shipped model): that first step is Euler's, one model call, and the samples are right."""
    oracle = Oracle()
    X = td.sample(oracle, 2000, name, steps=25, spacing=spacing, seed=0, clip=False)
    # the first and the last step: one call each (for each slice of MODEL_BATCH images)
    assert len(oracle.times) == (2 * 25 - 2) * -(-2000 // sampling.MODEL_BATCH)
    assert abs(X.mean() - MU) < 0.005 and abs(X.std() / S - 1) < 0.03


def test_large_batches_reach_the_model_in_slices_with_the_same_result(monkeypatch):
    """100,000 images at once would need tens of GB of activations: the model sees at most
    MODEL_BATCH images a call, and the images are those of one whole-batch call."""
    model = td.build_diffusion_model(T=20, embed_size=8, seed=0)
    sizes = []
    forward = type(model).forward

    def recording(self, inputs, *args, **kwargs):
        sizes.append(len(inputs["X_noisy"]))
        return forward(self, inputs, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", recording)
    n = sampling.MODEL_BATCH + 44
    sliced = td.sample(model, n, "ddpm-respaced", steps=3, seed=1, progress=False)
    assert max(sizes) == sampling.MODEL_BATCH and 44 in sizes
    monkeypatch.setattr(sampling, "MODEL_BATCH", n)
    sizes.clear()
    whole = td.sample(model, n, "ddpm-respaced", steps=3, seed=1, progress=False)
    assert set(sizes) == {n}
    np.testing.assert_allclose(sliced, whole, atol=1e-3)  # float32 products, summed in another order


def test_a_model_config_with_a_bad_T_is_named():
    class Broken(Oracle):
        pass
    model = Broken()
    model.config = {"T": "4000"}
    with pytest.raises(ValueError, match=r"model.config\['T'\] is not valid"):
        td.sample(model, 2)

"""tinyddpm.likelihood against independent computations: the posterior against Bayes' rule (in
closed form and numerically on a grid), the KL against Monte Carlo, the discretised decoder
against a reference computed one number at a time from math.erfc (and far in a tail against the
tail's asymptotic series), and the whole bound against an "oracle" model whose data
distribution, and so whose entropy, is known."""
import math

import numpy as np
import pytest

import tinyddpm as td
from tinyddpm import likelihood as L
from tinyddpm.diffusion import get_schedule


def schedule64(T):
    """The cosine schedule's alpha, with abar and beta recomputed in float64, so that
    abar_t = alpha_t abar_{t-1} holds to round-off (the float32 arrays hold it to ~1e-7)."""
    alpha = td.variance_schedule(T)[0].astype(np.float64)
    return alpha, np.cumprod(alpha), 1 - alpha


# ------------------------------------------------------------------------------ the posterior

def bayes_posterior(x0, x_t, t, alpha, abar):
    """q(x_{t-1} | x_t, x_0) from q(x_t | x_{t-1}) q(x_{t-1} | x_0), the product of two
    Gaussians in x_{t-1}, normalised: precisions add, means weight by precision."""
    prec_step = alpha[t] / (1 - alpha[t])              # N(x_t; sqrt(alpha) y, beta) in y
    prec_prior = 1 / (1 - abar[t - 1])                 # N(y; sqrt(abar_{t-1}) x0, 1 - abar)
    variance = 1 / (prec_step + prec_prior)
    mean = variance * (prec_step * x_t / math.sqrt(alpha[t])
                       + prec_prior * math.sqrt(abar[t - 1]) * x0)
    return mean, variance


def test_posterior_is_bayes_rule_in_closed_form():
    alpha, abar, beta = schedule64(10)
    x0 = np.array([[0.3], [-0.9], [1.0]])
    x_t = np.array([[-0.5], [0.2], [1.7]])
    for t in range(2, 11):
        mean, var, log_var = L.q_posterior(x0, x_t, t, alpha, abar, beta)
        for i in range(3):
            want_mean, want_var = bayes_posterior(x0[i, 0], x_t[i, 0], t, alpha, abar)
            assert mean[i, 0] == pytest.approx(want_mean, rel=1e-10, abs=1e-12)
            assert var == pytest.approx(want_var, rel=1e-10)
            assert log_var == pytest.approx(math.log(want_var), rel=1e-10)
    # t = 1: x_0 is known; the log-variance is clipped to beta_tilde_2's, as in the paper's code
    mean, var, log_var = L.q_posterior(x0, x_t, 1, alpha, abar, beta)
    np.testing.assert_allclose(mean, x0, atol=1e-12)
    assert var == 0 and log_var == pytest.approx(math.log(bayes_posterior(0, 0, 2, alpha,
                                                                            abar)[1]))


def test_posterior_is_bayes_rule_on_a_grid():
    """The unnormalised density q(x_t | y) q(y | x_0) on a fine grid of y, normalised
    numerically: its mean and variance are the posterior's."""
    alpha, abar, beta = schedule64(10)
    x0, x_t = 0.4, -0.3
    for t in (2, 5, 10):
        mean, var, _ = L.q_posterior(np.array([x0]), np.array([x_t]), t, alpha, abar, beta)
        sd = math.sqrt(var)
        y = np.linspace(mean[0] - 12 * sd, mean[0] + 12 * sd, 200_001)
        log_p = (-(x_t - np.sqrt(alpha[t]) * y) ** 2 / (2 * beta[t])
                 - (y - np.sqrt(abar[t - 1]) * x0) ** 2 / (2 * (1 - abar[t - 1])))
        w = np.exp(log_p - log_p.max())
        w /= w.sum()
        grid_mean = (w * y).sum()
        assert grid_mean == pytest.approx(mean[0], abs=1e-9 * sd + 1e-12)
        assert (w * (y - grid_mean) ** 2).sum() == pytest.approx(var, rel=1e-6)


def test_posterior_arrays_and_per_image_steps():
    alpha, abar, beta = get_schedule(10)
    coef1, coef2 = L.posterior_mean_coefficients(alpha, abar, beta)
    var, log_var = L.posterior_variance(alpha, abar, beta)
    assert coef1.shape == var.shape == (11,) and np.isnan(coef1[0]) and np.isnan(var[0])
    assert coef1[1] == pytest.approx(1) and coef2[1] == 0 and var[1] == 0
    assert log_var[1] == log_var[2] == pytest.approx(math.log(var[2]))  # the clipped log
    assert np.all(var[1:] <= beta[1:] * (1 + 1e-6))  # beta_tilde <= beta
    x0 = np.random.default_rng(0).uniform(-1, 1, (3, 2, 2, 1))
    x_t = np.random.default_rng(1).standard_normal((3, 2, 2, 1))
    t = np.array([1, 4, 10])
    mean, v, lv = L.q_posterior(x0, x_t, t, alpha, abar, beta)
    assert mean.shape == x0.shape and v.shape == (3, 1, 1, 1)
    for i in range(3):
        one = L.q_posterior(x0[i:i + 1], x_t[i:i + 1], int(t[i]), alpha, abar, beta)
        np.testing.assert_allclose(mean[i], one[0][0])
        assert lv[i, 0, 0, 0] == pytest.approx(float(one[2]))
    with pytest.raises(ValueError, match="1..10"):
        L.q_posterior(x0, x_t, 0, alpha, abar, beta)
    with pytest.raises(ValueError, match="one length"):
        L.posterior_variance(alpha, abar[:5], beta)


# ------------------------------------------------------------------------------ the Gaussians

def test_normal_kl_against_monte_carlo():
    rng = np.random.default_rng(0)
    for m1, s1, m2, s2 in [(0.3, 0.5, -0.2, 1.3), (1.0, 2.0, 0.0, 0.7), (0.0, 1e-2, 0.01, 2e-2)]:
        y = rng.normal(m1, s1, 400_000)

        def log_pdf(y, m, s):
            return -0.5 * ((y - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
        samples = log_pdf(y, m1, s1) - log_pdf(y, m2, s2)
        kl = float(L.normal_kl(m1, 2 * math.log(s1), m2, 2 * math.log(s2)))
        assert abs(kl - samples.mean()) < 4 * samples.std() / math.sqrt(len(y)) + 1e-12
    same = L.normal_kl(np.zeros((2, 3)), np.log(0.1), np.zeros(3), np.log(0.1))
    assert same.shape == (2, 3) and np.all(same == 0)


def reference_log_prob(x, mean, sd):
    """log P(bin of x) under N(mean, sd^2), bin edges x -+ 1/255 (-inf at x = -1, +inf at
    x = 1), from math.erfc, one number at a time, each side of 0 from its own tail."""
    lo = -math.inf if x < -0.999 else (x - 1 / 255 - mean) / sd
    hi = math.inf if x > 0.999 else (x + 1 / 255 - mean) / sd

    def upper(z):  # P(Z > z)
        return 0.5 * math.erfc(z / math.sqrt(2))
    if lo >= 0:
        p = upper(lo) - upper(hi)
    elif hi <= 0:
        p = upper(-hi) - upper(-lo)
    else:
        p = 1 - upper(-lo) - upper(hi)
    return math.log(p) if p > 0 else -math.inf


def test_discretized_log_likelihood_against_a_math_erfc_reference():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, 2000) / 127.5 - 1
    x[:20], x[20:40] = -1, 1
    means = rng.uniform(-1.3, 1.3, 2000)
    log_scales = rng.uniform(math.log(1e-3), math.log(2), 2000)
    got = L.discretized_gaussian_log_likelihood(x, means, log_scales)
    want = np.array([reference_log_prob(a, m, math.exp(s)) for a, m, s in
                     zip(x, means, log_scales)])
    assert np.all(got <= 0)
    finite = want > -700  # math.erfc underflows (to subnormals, then 0); ours keeps the log
    assert finite.sum() > 1000 and np.all(np.isfinite(got))
    np.testing.assert_allclose(got[finite], want[finite], rtol=2e-5, atol=1e-6)
    assert np.all(got[~finite] < -600)
    # far out, against the asymptotic series of the tail, log Q(z) = -z^2/2 - log(z sqrt(2 pi))
    # + log(1 - 1/z^2 + 3/z^4 - 15/z^6 + ...): a bin 40 to 40.5 sd above the mean
    z = np.array([40.0, 40.5])
    series = -z ** 2 / 2 - np.log(z * math.sqrt(2 * math.pi)) + np.log1p(
        -1 / z ** 2 + 3 / z ** 4 - 15 / z ** 6)
    want_far = series[0] + math.log1p(-math.exp(series[1] - series[0]))
    sd = 4 / 255  # the bin of x = 0, [-1/255, 1/255], is 0.5 sd wide: mean = -(40 sd + 1/255)
    got_far = L.discretized_gaussian_log_likelihood(0.0, -(40 * sd + 1 / 255), math.log(sd))
    assert float(got_far) == pytest.approx(want_far, rel=1e-6)


@pytest.mark.parametrize("mean,sd", [(0.0, 0.5), (0.73, 3e-3), (-1.4, 0.2), (2.5, 0.05),
                                     (0.1, 10.0), (0.999, 1e-4)])
def test_the_256_bins_hold_all_the_probability(mean, sd):
    x = np.arange(256) / 127.5 - 1
    p = np.exp(L.discretized_gaussian_log_likelihood(x, mean, math.log(sd)))
    assert p.sum() == pytest.approx(1, abs=1e-6)


def test_discretized_log_likelihood_refuses_pixels_off_the_range():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        L.discretized_gaussian_log_likelihood(np.array([0.0, 3.0]), 0.0, 0.0)


# ------------------------------------------------------------------------------ the oracle

MU, S = 0.0, 0.25  # x_0 ~ N(MU, S^2) per pixel: 4 sd inside [-1, 1]


class Oracle:
    """The exact noise prediction for x_0 ~ N(MU, S^2) per pixel (tests/test_sampling.py's):
    E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) MU) / (a S^2 + 1 - a)."""

    def __init__(self, T):
        self.config = {"T": T}
        self.image_shape = (8, 8, 1)
        self.abar = get_schedule(T)[1].astype(np.float64)

    def __call__(self, inputs):
        x, t = inputs["X_noisy"], inputs["time"]
        a = self.abar[t].reshape(-1, 1, 1, 1)
        return (np.sqrt(1 - a) * (x - np.sqrt(a) * MU) / (a * S ** 2 + 1 - a)).astype(np.float32)


def test_each_kl_term_of_the_oracle_is_its_closed_form():
    """For Gaussian data and the exact eps, mu_q - mu_theta = coef1 (x_0 - E[x_0 | x_t]), so

        E[KL] = 1/2 (log s_p^2 / s_q^2 + s_q^2 / s_p^2 - 1 + coef1^2 Var[x_0 | x_t] / s_p^2),
        Var[x_0 | x_t] = S^2 (1 - a) / (a S^2 + 1 - a):

    a wrong coefficient, variance or x_0 estimate anywhere moves some term."""
    T = 1000
    oracle = Oracle(T)
    _, abar, beta = (a.astype(np.float64) for a in get_schedule(T))
    rng = np.random.default_rng(0)
    x0 = rng.normal(MU, S, (400, 8, 8, 1))
    for t in (2, 10, 100, 500, 900, 1000):
        x_t = td.q_sample(x0, t, abar, rng=rng)
        a, a_prev = abar[t], abar[t - 1]
        coef1 = math.sqrt(a_prev) * beta[t] / (1 - a)
        var_q = (1 - a_prev) / (1 - a) * beta[t]
        var_x0 = S ** 2 * (1 - a) / (a * S ** 2 + 1 - a)
        for variance, var_p in (("beta", beta[t]), ("beta_tilde", var_q)):
            want = 0.5 * (math.log(var_p / var_q) + var_q / var_p - 1
                          + coef1 ** 2 * var_x0 / var_p)
            got = L.vlb_terms(oracle, x0, x_t, t, variance, clip=False).mean()
            # (the sampling error of 25,600 pixels; the float32 eps, at t = 2)
            assert got == pytest.approx(want, rel=0.03, abs=2e-4), (t, variance)


def quantised_oracle_data(n, seed=0):
    """n 8x8 images of pixels N(MU, S^2) rounded to the 256 levels, and their entropy in bits
    per pixel (from math.erf, the bins' probabilities)."""
    levels = np.arange(256) / 127.5 - 1
    edges = np.concatenate([[-np.inf], levels[:-1] + 1 / 255, [np.inf]])
    cdf = np.array([0.5 * math.erfc(-(e - MU) / (S * math.sqrt(2))) for e in edges])
    p = np.diff(cdf)
    entropy = -np.sum(p[p > 0] * np.log2(p[p > 0]))
    X = np.random.default_rng(seed).choice(256, size=(n, 8, 8, 1), p=p / p.sum())
    return X.astype(np.uint8), entropy


def test_the_oracles_bound_falls_with_T_to_the_datas_entropy():
    """The bound is >= the data's entropy (7.04 bits/pixel here) in expectation, and for the
    exact eps with the beta variance it closes on it as T grows: 7.33, 7.17, 7.041 (measured)
    at T = 10, 100, 4000, the last within its standard error (0.014) of the entropy."""
    X, entropy = quantised_oracle_data(200)
    bounds = [L.bits_per_dim(Oracle(T), X, "beta", clip=False, progress=False)
              for T in (10, 100, 4000)]
    bpd = [b["bpd"] for b in bounds]
    assert bpd[0] > bpd[1] > bpd[2]
    assert bpd[0] > entropy + 0.15
    standard_error = bounds[-1]["std"] / math.sqrt(len(X))
    assert abs(bpd[2] - entropy) < max(3 * standard_error, 0.02)
    # the breakdown adds up, and the cosine schedule leaves next to nothing to the prior
    for b in bounds:
        assert b["prior"] + b["kl"] + b["decoder"] == pytest.approx(b["bpd"])
        assert b["prior"] < 1e-4 and b["terms"].shape == (b["T"],)


def test_the_respaced_schedule_keeps_the_marginals_and_all_steps_give_the_original():
    alpha, abar, beta = (a.astype(np.float64) for a in get_schedule(50))
    full = L.respaced_schedule(abar, np.arange(1, 51))
    for got, want in zip(full, (alpha, abar, beta)):   # (the schedule was float32)
        np.testing.assert_allclose(got[1:], want[1:], rtol=1e-5)
    times = np.array([1, 7, 20, 50])
    a2, abar2, beta2 = L.respaced_schedule(abar, times)
    np.testing.assert_allclose(abar2[1:], abar[times], rtol=1e-12)      # q(x_S_i | x_0) kept
    np.testing.assert_allclose(np.cumprod(a2[1:]), abar[times], rtol=1e-9)
    for bad in (np.array([5, 3]), np.array([0, 3]), np.array([3, 51]), np.array([1.5])):
        with pytest.raises(ValueError, match="increasing whole numbers"):
            L.respaced_schedule(abar, bad)


def test_the_strided_bound_is_the_full_one_at_T_steps_and_loosens_with_fewer():
    """With steps = T the chain is the model's own (the same number, draw for draw); with
    fewer steps it is another, shorter chain, whose bound is looser: 7.48, 7.15, 7.09 bits/dim
    at 10, 100 and 1,000 of the oracle's 4,000 steps (measured; standard errors 0.01-0.016),
    against the data's entropy, 7.04."""
    X, entropy = quantised_oracle_data(200)
    oracle = Oracle(50)
    full = L.bits_per_dim(oracle, X[:20], "beta", clip=False, progress=False)
    same = L.bits_per_dim(oracle, X[:20], "beta", clip=False, progress=False, steps=50)
    assert same["bpd"] == full["bpd"] and same["steps"] == full["steps"] == 50
    oracle = Oracle(4000)
    bounds = [L.bits_per_dim(oracle, X, "beta", clip=False, progress=False, steps=k)
              for k in (10, 100, 1000)]
    bpd = [b["bpd"] for b in bounds]
    assert bpd[0] > bpd[1] > bpd[2] > entropy - 0.03
    assert bpd[0] > entropy + 0.3
    assert [b["steps"] for b in bounds] == [10, 100, 1000]
    for b in bounds:
        assert b["prior"] + b["kl"] + b["decoder"] == pytest.approx(b["bpd"])
    with pytest.raises(ValueError, match="steps"):
        L.bits_per_dim(oracle, X, steps=4001, progress=False)


def test_the_strided_bound_of_a_learned_variance_model_uses_the_respaced_betas():
    model = td.build_improved_model(T=30, widths=(4, 8, 8), groups=2, heads=2, seed=0,
                                    learn_sigma=True)
    _, (X_test, _) = td.load_fashion_mnist()
    r = L.bits_per_dim(model, X_test[:2], progress=False, steps=6)
    assert np.isfinite(r["per_image"]).all() and r["variance"] == "learned" and r["steps"] == 6
    assert r["model_T"] == 30
    with pytest.raises(ValueError, match="learned its variance"):
        L.bits_per_dim(model, X_test[:2], "beta_tilde", progress=False, steps=6)
    # by hand: the last (noisiest) KL term with the respaced schedule and the model at t = 30
    times = td.sampling.timesteps(30, 6, "linspace")[::-1]
    schedule = L.respaced_schedule(td.model_schedule(model)[1], times)
    x0 = X_test[:2, :, :, None] / 127.5 - 1
    x_t = td.q_sample(x0, 6, schedule[1], rng=0)
    eps, v = td.sampling._predict_noise(model, x_t.astype(np.float32), 30, with_v=True)
    q_mean, _, q_log_var = L.q_posterior(x0, x_t, 6, *schedule)
    p = L.p_mean_variance(eps, x_t, 6, schedule=schedule, log_variance=L.learned_log_variance(
        v, np.log(schedule[2][6]), L.posterior_variance(*schedule)[1][6]))
    want = L.normal_kl(q_mean, q_log_var, p["mean"], p["log_variance"]).mean(axis=(1, 2, 3))
    got = L.vlb_terms(L._OnTimes(model, times), x0, x_t, 6, schedule=schedule)
    np.testing.assert_allclose(got, want, rtol=1e-6)


# ------------------------------------------------------------------------------ a real model

@pytest.fixture(scope="module")
def tiny():
    td.set_seed(0)
    model = td.build_diffusion_model(T=20)
    _, (X_test, _) = td.load_fashion_mnist()
    return model, X_test[:3]


def test_bits_per_dim_of_a_tiny_model_is_finite_and_reproducible(tiny):
    model, X = tiny
    first = L.bits_per_dim(model, X, progress=False)
    again = L.bits_per_dim(model, X, progress=False)
    other = L.bits_per_dim(model, X, seed=1, progress=False)
    split = L.bits_per_dim(model, X.astype(np.float32) / 255, "beta_tilde", batch_size=2,
                           progress=False)
    for r in (first, other, split):
        assert np.isfinite(r["per_image"]).all() and r["bpd"] > 0 and r["n"] == 3
        assert r["prior"] + r["kl"] + r["decoder"] == pytest.approx(r["bpd"])
    assert first["bpd"] == again["bpd"] and first["bpd"] != other["bpd"]
    np.testing.assert_array_equal(first["per_image"], again["per_image"])


def test_a_learned_log_variance_can_stand_in_for_the_fixed_one(tiny):
    model, X = tiny
    x0 = X[:, :, :, None] / 127.5 - 1
    x_t = td.q_sample(x0, 7, td.model_schedule(model)[1], rng=0)
    fixed = L.p_mean_variance(model, x_t, 7, "beta_tilde")
    given = L.p_mean_variance(fixed["eps"], x_t, 7, schedule=td.model_schedule(model),
                              log_variance=fixed["log_variance"])
    np.testing.assert_allclose(given["mean"], fixed["mean"])
    np.testing.assert_allclose(L.vlb_terms(model, x0, x_t, 7, "beta_tilde"),
                               L.vlb_terms(fixed["eps"], x0, x_t, 7, schedule=td.model_schedule(
                                   model), log_variance=fixed["log_variance"]))


@pytest.mark.parametrize("kwargs,error,words", [
    ({"variance": "learned"}, ValueError, "variance must be one of"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"seed": -1}, ValueError, "seed"),
    ({"clip": "yes"}, TypeError, "clip"),
    ({"X": np.full((2, 28, 28), 0.5)}, ValueError, "8-bit"),
    ({"X": np.zeros((2, 14, 14), np.uint8)}, ValueError, "shape"),
    ({"X": np.zeros((0, 28, 28), np.uint8)}, ValueError, "no images"),
    ({"model": "book"}, TypeError, "load a model first"),
])
def test_bits_per_dim_refuses_bad_arguments_before_any_work(tiny, kwargs, error, words):
    model, X = tiny
    calls = []

    def counting(inputs):
        calls.append(1)
        return model(inputs)
    counting.config = model.config
    args = {"model": counting, "X": X, **kwargs}
    with pytest.raises(error, match=words):
        L.bits_per_dim(args.pop("model"), args.pop("X"), progress=False, **args)
    assert not calls


# ------------------------------------------------------------------------------ the command

@pytest.fixture(scope="module")
def tiny_checkpoint(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("nll") / "tiny.npz"
    td.save_checkpoint(path, tiny[0])
    return str(path)


def test_evaluate_nll_prints_the_bound_and_its_breakdown(tiny, tiny_checkpoint, capsys):
    import json

    from tinyddpm.__main__ import main

    assert main(["evaluate", "--nll", "--checkpoint", tiny_checkpoint, "--n", "3"]) == 0
    out = capsys.readouterr().out
    for words in ("bound, bits/dim", "prior L_T", "KL terms", "decoder L_0", "first 3 test"):
        assert words in out
    assert main(["evaluate", "--nll", "--checkpoint", tiny_checkpoint, "--n", "3", "--json",
                 "--variance", "beta_tilde", "--batch-size", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    same = L.bits_per_dim(tiny[0], tiny[1], "beta_tilde", batch_size=2, progress=False)
    assert report["bpd"] == pytest.approx(same["bpd"]) and len(report["terms"]) == 20
    assert report["n"] == 3 and report["variance"] == "beta_tilde"
    assert main(["evaluate", "--nll", "--checkpoint", tiny_checkpoint, "--n", "3", "--json",
                 "--steps", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    strided = L.bits_per_dim(tiny[0], tiny[1], progress=False, steps=5)
    assert report["bpd"] == pytest.approx(strided["bpd"]) and report["steps"] == 5
    assert main(["evaluate", "--nll", "--checkpoint", tiny_checkpoint, "--steps", "21"]) == 2
    assert "--steps 21: the model has T = 20" in capsys.readouterr().err


@pytest.mark.parametrize("argv,words", [
    (["--checkpoint", "{ckpt}"], "--checkpoint applies to --nll"),
    (["--nll"], "--nll needs --checkpoint"),
    (["s.npy", "--nll", "--checkpoint", "{ckpt}"], "not the images 's.npy'"),
    (["--nll", "--checkpoint", "{ckpt}", "--n", "100000"], "test images"),
    (["--nll", "--checkpoint", "{ckpt}", "--no-ema"], "no moving average"),
    (["--nll", "--checkpoint", "missing.npz"], "missing.npz"),
    ([], "evaluate needs the images"),
])
def test_evaluate_nll_refuses_what_does_not_go_together(tiny_checkpoint, argv, words, capsys):
    from tinyddpm.__main__ import main

    argv = [a.format(ckpt=tiny_checkpoint) for a in argv]
    assert main(["evaluate", *argv]) == 2
    lines = capsys.readouterr().err.splitlines()
    # (without the data package, reading the test images first says the subset is used)
    assert all(line.startswith("tinyddpm: Fashion-MNIST not found") for line in lines[:-1])
    assert lines[-1].startswith("error:") and words in lines[-1]


@pytest.mark.parametrize("argv,option", [(["--n", "0"], "--n"), (["--variance", "learned"],
                                         "--variance"), (["--seed", "-1"], "--seed")])
def test_evaluate_nll_options_are_checked_where_they_enter(argv, option, capsys):
    from tinyddpm.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--nll", "--pretrained", "book", *argv])
    assert exit_.value.code == 2
    assert option in capsys.readouterr().err.strip().splitlines()[-1]


# ------------------------------------------------------------------------------ for training

def test_the_differentiable_terms_match_numpy_and_pass_gradcheck():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 4, 4, 1)) / 127.5 - 1
    x[0, 0, :2, 0], x[0, 1, :2, 0] = -1, 1                      # the edge bins
    means = x + rng.normal(0, 0.02, x.shape)
    log_scales = rng.uniform(math.log(3e-3), math.log(0.3), x.shape)
    got = L.discretized_gaussian_log_likelihood_tensor(x, td.Tensor(means), td.Tensor(log_scales))
    np.testing.assert_allclose(got.data, L.discretized_gaussian_log_likelihood(x, means,
                                                                                log_scales))
    td.gradcheck(lambda m, s: L.discretized_gaussian_log_likelihood_tensor(x, m, s), means,
                 log_scales)
    # a bin far in the tail (20 sd from the mean) keeps an accurate gradient; a scale per image
    far = np.full((2, 1), 20 * 0.01)
    td.gradcheck(lambda m, s: L.discretized_gaussian_log_likelihood_tensor(np.zeros((2, 3)), m,
                                                                           s),
                 far, np.full((2, 1), math.log(0.01)), rtol=1e-6)
    m1, v1, m2, v2 = (rng.normal(size=(2, 3)) for _ in range(4))
    kl = L.normal_kl_tensor(td.Tensor(m1), td.Tensor(v1), td.Tensor(m2), td.Tensor(v2))
    np.testing.assert_allclose(kl.data, L.normal_kl(m1, v1, m2, v2), rtol=1e-6)
    td.gradcheck(L.normal_kl_tensor, m1, v1, m2, v2)
